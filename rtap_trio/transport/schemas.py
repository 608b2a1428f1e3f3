"""Wire schemas: every message RTAP publishes, on ZeroMQ and WebSocket alike.

A message is a topic plus one JSON object. Each object carries the schema
version, a sequence number that increases by one per stream (``events`` and
``transcripts`` count separately), a second one that increases by one per
stream within its session (``session_seq``), the session and utterance it
belongs to and when it was emitted, so a subscriber can detect gaps (in the
whole stream or in the one session it follows) and order replays.

The ZeroMQ topic is the event type (or ``transcript``), a dot and the session
id: a subscription to ``transcript`` still gets every transcript, and one to
``transcript.<session id>`` only that session's.

A third stream, ``levels``, carries each session's input level ten times a
second to WebSocket watchers that ask for it (the console's meters); it is not
published on ZeroMQ, and nothing computes it while nobody watches.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
)

__all__ = [
    "SCHEMA_VERSION",
    "AnyMessage",
    "EventMessage",
    "EventType",
    "LatencyBreakdown",
    "CatchupReply",
    "CatchupRequest",
    "LevelMessage",
    "SubscribeRequest",
    "WatcherNotice",
    "Message",
    "Stream",
    "TranscriptMessage",
    "TranscriptWord",
    "parse_message",
]

SCHEMA_VERSION: Final = 1


class Stream(enum.StrEnum):
    """The streams, each with its own sequence counter (and ZeroMQ port, but levels)."""

    EVENTS = "events"
    TRANSCRIPTS = "transcripts"
    #: input levels for meters: WebSocket watchers only
    LEVELS = "levels"


class EventType(enum.StrEnum):
    SERVICE_STARTED = "service_started"
    SERVICE_STOPPING = "service_stopping"
    SERVICE_FAILING = "service_failing"
    STATE_CHANGED = "state_changed"
    WAKE_WORD = "wake_word"
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"
    LISTEN_TIMEOUT = "listen_timeout"
    UTTERANCE_DISCARDED = "utterance_discarded"
    UTTERANCE_DROPPED = "utterance_dropped"
    STT_TIMEOUT = "stt_timeout"
    STAGE_ERROR = "stage_error"
    TASK_RESTARTED = "task_restarted"
    SESSION_STARTED = "session_started"
    SESSION_ENDED = "session_ended"
    SESSION_FAILED = "session_failed"
    STATE_RESET = "state_reset"
    TRANSCRIPT_PARTIAL = "transcript_partial"
    FRAMES_DROPPED = "frames_dropped"
    #: every ``output.heartbeat_interval_s``: the service is alive (the standby follows it)
    HEARTBEAT = "heartbeat"
    #: the standby stopped hearing the primary and is now the one that publishes
    STANDBY_TAKEOVER = "standby_takeover"
    #: the standby hears the primary again and stops publishing
    STANDBY_HANDBACK = "standby_handback"
    #: the remote STT engine failed too often: the local fallback answers (circuit open)
    STT_FALLBACK = "stt_fallback"
    #: the remote STT engine answers again (circuit closed)
    STT_REMOTE_RESTORED = "stt_remote_restored"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    seq: int = Field(ge=0, description="position in its stream, all sessions")
    session_seq: int = Field(ge=0, description="position in its stream, this session only")
    session_id: str
    utterance_id: str | None = None
    emitted_at: float = Field(description="Unix time, seconds")


class EventMessage(_Message):
    kind: Literal["event"] = "event"
    type: EventType
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def topic(self) -> str:
        return f"{self.type.value}.{self.session_id}"


class LatencyBreakdown(BaseModel):
    """Milliseconds spent in each step, from the end of speech to the emit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: float = Field(0.0, description="trailing silence waited for (hangover)")
    queue: float = Field(0.0, description="waiting for a free STT worker")
    preprocess: float = 0.0
    stt: float = 0.0
    language: float = 0.0
    emit: float = Field(0.0, description="hand-off to the emitters")
    total: float = Field(0.0, description="end of speech detected to emit, hangover excluded")
    speech_end_to_emit: float = Field(
        0.0,
        description="end of the last voiced frame to emit, hangover included: what a speaker waits",
    )
    early: bool = Field(
        False, description="transcribed early, in the trailing silence (stt ran during endpoint)"
    )
    early_wait: float = Field(0.0, description="after the endpoint, waiting for that early result")


class TranscriptWord(BaseModel):
    """One word of a transcript and when it was said."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    word: str
    start: float = Field(ge=0.0, description="seconds from the start of the session's audio")
    end: float = Field(ge=0.0, description="seconds from the start of the session's audio")


class TranscriptMessage(_Message):
    kind: Literal["transcript"] = "transcript"
    text: str
    language: str
    language_confidence: float = Field(ge=0.0, le=1.0)
    sentiment: Literal["negative", "neutral", "positive"]
    sentiment_confidence: float = Field(ge=0.0, le=1.0)
    wake_word: str | None
    audio_start_s: float = Field(ge=0.0, description="offset of the utterance in the stream")
    audio_end_s: float = Field(ge=0.0)
    model: str
    latency_ms: LatencyBreakdown
    stt_language: str | None = Field(
        None, description="the language the STT model heard (detected or asked for)"
    )
    stt_language_probability: float | None = Field(
        None, ge=0.0, le=1.0, description="the STT model's probability, when it detected it"
    )
    no_speech_probability: float | None = Field(
        None, ge=0.0, le=1.0, description="the STT model's probability that nothing was said"
    )
    words: list[TranscriptWord] | None = Field(
        None,
        description="each word's times, when the session asked for them (start message"
        ' "words": true, or stt.words); present only then',
    )
    stt_engine: str | None = Field(
        None,
        description="the engine that answered (remote, whispercpp) when the service has a "
        "fallback (stt.fallback) or a remote engine; present only then",
    )

    @property
    def topic(self) -> str:
        return f"transcript.{self.session_id}"

    # No return annotation on purpose (see CatchupReply): the schema keeps the fields.
    @model_serializer(mode="wrap")
    def _words_only_when_asked(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        # Written only when asked for, so every other transcript is byte for byte
        # what it was before the field existed (clients built on the old schema,
        # additionalProperties: false, still parse them).
        data: dict[str, Any] = handler(self)
        if self.words is None:
            data.pop("words", None)
        if self.stt_engine is None:  # likewise: only a service with a remote engine has it
            data.pop("stt_engine", None)
        return data


class LevelMessage(_Message):
    """A session's input over the last ``window_ms``, for a meter."""

    kind: Literal["level"] = "level"
    rms_dbfs: float = Field(le=0.0, description="RMS level, dB relative to full scale")
    peak_dbfs: float = Field(le=0.0)
    voiced: float = Field(
        ge=0.0, le=1.0, description="share of the window's frames VAD called speech"
    )
    window_ms: int = Field(gt=0)

    @property
    def topic(self) -> str:
        return f"level.{self.session_id}"


class WatcherNotice(BaseModel):
    """What the WebSocket server tells a watching client about its own connection.

    ``hello`` first (the service and where each stream stands), ``subscribed``
    after a subscribe request, ``messages_dropped`` before the next message
    once the client's queue has lost some (it reads too slowly).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["notice"] = "notice"
    type: Literal["hello", "subscribed", "messages_dropped"]
    service_id: str | None = None
    topics: list[Stream] | None = None
    sessions: list[str] | None = Field(None, description="null: every session")
    next_seq: dict[str, int] | None = Field(
        None, description="hello: the seq the next message of each stream will have"
    )
    count: int | None = Field(
        None, ge=0, description="messages_dropped: lost since the last notice"
    )
    dropped_total: int | None = Field(None, ge=0)


class SubscribeRequest(BaseModel):
    """A watching client's one kind of message: what it wants from now on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["subscribe"]
    topics: list[Stream] = Field(min_length=1, max_length=3)
    sessions: list[str] | None = Field(None, max_length=256, description="null: every session")


class CatchupRequest(BaseModel):
    """Ask for the transcripts after ``after_seq`` (ZeroMQ catch-up, ``/api/transcripts``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after_seq: int = Field(-1, ge=-1, description="the last seq the client has; -1: none")
    limit: int = Field(100, ge=1, le=1000)


class CatchupReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service_id: str = Field(description="a different id than before: the service restarted")
    transcripts: list[TranscriptMessage] = Field(description="oldest first, at most limit")
    oldest_seq: int = Field(description="the oldest seq still kept (-1: none yet)")
    next_seq: int = Field(description="the seq the next transcript will have")
    lost: int = Field(ge=0, description="transcripts after after_seq no longer kept: gone for good")
    error: str | None = None
    truncated: bool = Field(
        False,
        description="cut to the oldest that fit the reply size (ZeroMQ): ask again after the"
        " last seq; present only when true",
    )

    # No return annotation on purpose: with one, pydantic publishes the
    # annotation (a bare object) as the serialization schema; without, the fields.
    @model_serializer(mode="wrap")
    def _truncated_only_when_true(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        # Written only when true, so every other reply is byte for byte what it
        # was before the field existed: clients built on the old schema
        # (additionalProperties: false) still parse them.
        data: dict[str, Any] = handler(self)
        if not self.truncated:
            data.pop("truncated", None)
        return data


AnyMessage = EventMessage | TranscriptMessage | LevelMessage | WatcherNotice
Message = Annotated[AnyMessage, Field(discriminator="kind")]
_MESSAGE_ADAPTER: TypeAdapter[AnyMessage] = TypeAdapter(Message)


def parse_message(payload: bytes | str) -> AnyMessage:
    """Validate one JSON frame as received by a subscriber."""
    return _MESSAGE_ADAPTER.validate_json(payload)
