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
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "SCHEMA_VERSION",
    "EventMessage",
    "EventType",
    "LatencyBreakdown",
    "Message",
    "Stream",
    "TranscriptMessage",
    "parse_message",
]

SCHEMA_VERSION: Final = 1


class Stream(enum.StrEnum):
    """The two streams, each with its own ZeroMQ port and sequence counter."""

    EVENTS = "events"
    TRANSCRIPTS = "transcripts"


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

    @property
    def topic(self) -> str:
        return f"transcript.{self.session_id}"


Message = Annotated[EventMessage | TranscriptMessage, Field(discriminator="kind")]
_MESSAGE_ADAPTER: TypeAdapter[EventMessage | TranscriptMessage] = TypeAdapter(Message)


def parse_message(payload: bytes | str) -> EventMessage | TranscriptMessage:
    """Validate one JSON frame as received by a subscriber."""
    return _MESSAGE_ADAPTER.validate_json(payload)
