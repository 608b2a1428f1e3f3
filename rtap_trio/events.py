"""Every event the service publishes, named in one place.

Stages and the service hand the outbox a typed event; the outbox puts its
:meth:`~_EventFields.wire_data` in an
:class:`~rtap_trio.transport.schemas.EventMessage` (the ``data`` the JSON on
the wire has always had), and hands the event itself to in-process
subscribers, so that no endpoint reads an event's fields by string key::

 app.py, service_events.py ──── service_started, service_stopping, service_failing,
                                 stage_error (a service task), heartbeat
 standby.py ─────────────────── standby_takeover, standby_handback
 stt_monitoring.py ──────────── stt_fallback, stt_remote_restored (stt.fallback's circuit)
 sessions.py ────────────────── session_started, session_ended, session_failed,
                                 stage_error (a session's stage)
 session_context.py ─────────── state_changed, state_reset (the state machine)
 pipeline.py ────────────────── frames_dropped, utterance_dropped (a queue was full)
 stages/frontend.py ─────────── wake_word, speech_start, speech_end, listen_timeout,
                                 utterance_discarded (too_short, began_before_capture)
 stages/speculative.py ──────── transcript_partial
 stages/stt.py ──────────────── stt_timeout, utterance_discarded (no_text, no_speech,
                                 repetition)
 stages/language.py ─────────── utterance_discarded (low_confidence)
        │ Event
        ▼
 outbox ── EventMessage (JSON) ──▶ ZeroMQ, WebSocket watchers, /v1/audio: as is
        └─ Published.event ─────▶ Wyoming, OpenAI Realtime, evaluation: match on the classes

Whoever reads events off the wire (the standby following its primary's
heartbeat, the ``/v1/audio`` client's users, the benches) turns the message
back into its event with :func:`parse_event`. The envelope (session,
utterance, sequence numbers, time) stays on the message; an event is only
what happened. ``task_restarted`` is in the schema but never published
(:class:`TaskRestarted`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeAlias, get_args

from pydantic import TypeAdapter

from .transport.schemas import EventMessage, EventType

__all__ = [
    "Event",
    "FramesDropped",
    "Heartbeat",
    "ListenTimeout",
    "ServiceFailing",
    "ServiceStarted",
    "ServiceStopping",
    "SessionEnded",
    "SessionFailed",
    "SessionStarted",
    "SpeechEnd",
    "SpeechStart",
    "StageError",
    "StandbyHandback",
    "StandbyTakeover",
    "StateChanged",
    "StateReset",
    "SttFallback",
    "SttRemoteRestored",
    "SttTimeout",
    "TaskRestarted",
    "TranscriptPartial",
    "UtteranceDiscarded",
    "UtteranceDropped",
    "WakeWord",
    "event_class",
    "parse_event",
]

_WIRE_KEY = "wire_key"
_OMITTED_WHEN_NONE = "omitted_when_none"


def _optional() -> Any:
    """A field that is on the wire only when it is set."""
    return field(default=None, metadata={_OMITTED_WHEN_NONE: True})


class _EventFields:
    """What every event has: its type, and its fields as the wire's ``data``."""

    __slots__ = ()
    type: ClassVar[EventType]

    def wire_data(self) -> dict[str, Any]:
        """The ``data`` of its message: its fields in order, under their wire keys."""
        data: dict[str, Any] = {}
        for name, key, omitted_when_none in _LAYOUTS[self.type]:
            value = getattr(self, name)
            if value is None and omitted_when_none:
                continue
            data[key] = list(value) if isinstance(value, tuple) else value
        return data


# ---------------------------------------------------------------------- the service


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceStarted(_EventFields):
    """The service serves: where, with what (from app.py, once)."""

    type: ClassVar[EventType] = EventType.SERVICE_STARTED
    source: str
    model: str
    stt_device: str
    stt_device_fallback: bool
    ports: dict[str, int | None]
    profile: str
    local_session_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceStopping(_EventFields):
    type: ClassVar[EventType] = EventType.SERVICE_STOPPING


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceFailing(_EventFields):
    """A service task crashed past its restart policy: the service stops, to be restarted."""

    type: ClassVar[EventType] = EventType.SERVICE_FAILING
    task: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(_EventFields):
    type: ClassVar[EventType] = EventType.HEARTBEAT
    uptime_s: float
    sessions: int
    #: the seq the next message of each stream will have
    next_seq: dict[str, int]
    #: "primary" or "standby"
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StandbyTakeover(_EventFields):
    type: ClassVar[EventType] = EventType.STANDBY_TAKEOVER
    reason: str
    primary_id: str | None
    silent_ms: float
    last_heartbeat_at: float | None
    withheld: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StandbyHandback(_EventFields):
    type: ClassVar[EventType] = EventType.STANDBY_HANDBACK
    primary_id: str
    primary_started_at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SttFallback(_EventFields):
    """The remote STT engine failed ``failures`` times in a row: its circuit is
    open, and the local fallback answers every utterance until a probe, in
    ``retry_in_s``, finds it back (rtap_trio/stt/fallback.py)."""

    type: ClassVar[EventType] = EventType.STT_FALLBACK
    engine: str
    fallback: str
    reason: str
    failures: int
    retry_in_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SttRemoteRestored(_EventFields):
    """The remote STT engine answered again after ``down_s``; the fallback had
    answered ``fallbacks`` utterances meanwhile."""

    type: ClassVar[EventType] = EventType.STT_REMOTE_RESTORED
    engine: str
    down_s: float
    fallbacks: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRestarted(_EventFields):
    """Reserved: in the schema's list of types since the first release, never
    published (a restart is a ``stage_error``)."""

    type: ClassVar[EventType] = EventType.TASK_RESTARTED


# ---------------------------------------------------------------------- a session


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(_EventFields):
    type: ClassVar[EventType] = EventType.SESSION_STARTED
    #: what the session is: "local", "websocket", ...
    kind: str
    source: str
    model: str
    wake_word: bool
    keywords: tuple[str, ...]
    language: str | None
    #: options the session asked for that its engine cannot honour ("prompt",
    #: "words"): said once, here, rather than silently ignored
    ignored: tuple[str, ...] | None = _optional()


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(_EventFields):
    type: ClassVar[EventType] = EventType.SESSION_ENDED
    #: a :class:`rtap_trio.sessions.EndReason` value
    reason: str
    frames_dropped: int
    utterances_dropped: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFailed(_EventFields):
    type: ClassVar[EventType] = EventType.SESSION_FAILED
    task: str
    error_type: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StageError(_EventFields):
    """A task crashed (and is restarted): a session's stage, or a service task (no ``task``)."""

    type: ClassVar[EventType] = EventType.STAGE_ERROR
    stage: str
    task: str | None = _optional()
    error_type: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged(_EventFields):
    type: ClassVar[EventType] = EventType.STATE_CHANGED
    #: :class:`rtap_trio.session_state.PipelineState` values
    from_state: str = field(metadata={_WIRE_KEY: "from"})  # a keyword
    to: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StateReset(_EventFields):
    """A transition the state machine does not allow: back to IDLE."""

    type: ClassVar[EventType] = EventType.STATE_RESET
    from_state: str = field(metadata={_WIRE_KEY: "from"})  # a keyword
    attempted: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FramesDropped(_EventFields):
    type: ClassVar[EventType] = EventType.FRAMES_DROPPED
    #: the session's total so far
    dropped_total: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UtteranceDropped(_EventFields):
    type: ClassVar[EventType] = EventType.UTTERANCE_DROPPED
    reason: str


# ---------------------------------------------------------------------- speech


@dataclass(frozen=True, slots=True, kw_only=True)
class WakeWord(_EventFields):
    type: ClassVar[EventType] = EventType.WAKE_WORD
    keyword: str
    #: the end of the wake word in the session's stream
    offset_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechStart(_EventFields):
    type: ClassVar[EventType] = EventType.SPEECH_START
    offset_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechEnd(_EventFields):
    type: ClassVar[EventType] = EventType.SPEECH_END
    #: the end of the last voiced frame
    offset_s: float
    #: a :class:`rtap_trio.items.EndReason` value
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenTimeout(_EventFields):
    type: ClassVar[EventType] = EventType.LISTEN_TIMEOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class UtteranceDiscarded(_EventFields):
    """Not published, and why; what the STT or language stage made of it, when it had words."""

    type: ClassVar[EventType] = EventType.UTTERANCE_DISCARDED
    reason: str
    text: str | None = _optional()
    #: the STT stage's (no_speech, repetition)
    no_speech_probability: float | None = _optional()
    compression_ratio: float | None = _optional()
    #: the language stage's (low_confidence)
    language: str | None = _optional()
    language_confidence: float | None = _optional()


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptPartial(_EventFields):
    type: ClassVar[EventType] = EventType.TRANSCRIPT_PARTIAL
    text: str
    stable: str
    unstable: str
    stable_words: int
    newly_stable: str
    audio_end_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SttTimeout(_EventFields):
    type: ClassVar[EventType] = EventType.STT_TIMEOUT
    budget_ms: int
    elapsed_ms: float
    queue_ms: float
    audio_s: float


Event: TypeAlias = (
    ServiceStarted
    | ServiceStopping
    | ServiceFailing
    | Heartbeat
    | StandbyTakeover
    | StandbyHandback
    | SttFallback
    | SttRemoteRestored
    | TaskRestarted
    | SessionStarted
    | SessionEnded
    | SessionFailed
    | StageError
    | StateChanged
    | StateReset
    | FramesDropped
    | UtteranceDropped
    | WakeWord
    | SpeechStart
    | SpeechEnd
    | ListenTimeout
    | UtteranceDiscarded
    | TranscriptPartial
    | SttTimeout
)

_CLASSES: dict[EventType, type[Event]] = {cls.type: cls for cls in get_args(Event)}
#: each type's fields: name, wire key, and whether it is left out when None
_LAYOUTS: dict[EventType, tuple[tuple[str, str, bool], ...]] = {
    type: tuple(
        (f.name, f.metadata.get(_WIRE_KEY, f.name), bool(f.metadata.get(_OMITTED_WHEN_NONE)))
        for f in fields(cls)
    )
    for type, cls in _CLASSES.items()
}
_ADAPTERS: dict[EventType, TypeAdapter[Event]] = {}


def event_class(type: EventType) -> type[Event]:
    """The class of the events of ``type``."""
    return _CLASSES[type]


def parse_event(message: EventMessage) -> Event:
    """The typed event a message from the wire carries.

    Keys it does not know are ignored; a missing field, or one of the wrong
    type, raises a ValueError (pydantic's ValidationError).
    """
    adapter = _ADAPTERS.get(message.type)
    if adapter is None:  # made on first use: most processes parse few types, or none
        adapter = _ADAPTERS[message.type] = TypeAdapter(_CLASSES[message.type])
    return adapter.validate_python(_by_name(message.type, message.data))


def _by_name(type: EventType, data: Mapping[str, Any]) -> dict[str, Any]:
    return {name: data[key] for name, key, _ in _LAYOUTS[type] if key in data}
