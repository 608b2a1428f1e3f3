"""A Realtime connection's effective session configuration, and how it reaches the session.

What the connection holds between ``session.update`` events (the model name,
language, prompt and turn detection), the session options it becomes when the
session starts (:class:`RealtimeOptions`: the client's server VAD timings
applied to the session's own settings), and the ``session`` object the
server echoes in both formats: the GA ``RealtimeTranscriptionSessionCreateResponse``
and the beta ``TranscriptionSession``. What a client may send to change it is
:mod:`.session_update`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...session_options import SessionOptions
from ...settings import Settings

__all__ = ["PCM16_RATE", "RealtimeOptions", "SessionConfig", "TurnDetection"]

#: pcm16 as the Realtime API defines it: 16-bit little-endian mono at 24 kHz.
PCM16_RATE = 24_000


@dataclass(frozen=True, slots=True)
class RealtimeOptions(SessionOptions):
    """Session options plus the client's server VAD timings, applied to its own settings."""

    hangover_ms: int | None = None
    pre_roll_ms: int | None = None
    #: Silero's speech probability threshold (webrtcvad has none to set)
    threshold: float | None = None

    def apply(self, settings: Settings) -> Settings:
        # Explicit base call: zero-argument super() breaks in a slots dataclass.
        settings = SessionOptions.apply(self, settings)
        vad: dict[str, float] = {}
        if self.hangover_ms is not None:
            vad["hangover_ms"] = self.hangover_ms
        if self.pre_roll_ms is not None:
            vad["pre_roll_ms"] = self.pre_roll_ms
        if self.threshold is not None:
            # Silero's own bounds: 0 would call silence speech, 1 nothing.
            vad["silero_threshold"] = min(max(self.threshold, 0.05), 0.95)
        if not vad:
            return settings
        return settings.model_copy(update={"vad": settings.vad.model_copy(update=vad)})


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """Server VAD, with the client's timings."""

    silence_duration_ms: int
    prefix_padding_ms: int
    #: Silero's threshold when vad.engine is silero; accepted and echoed for
    #: webrtcvad, which has none
    threshold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
        }


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """A connection's effective session configuration; ``turn_detection`` None: manual commits."""

    model: str
    language: str | None
    prompt: str | None
    turn_detection: TurnDetection | None

    def vad_key(self) -> tuple[object, ...]:
        """What the session's pipeline takes when it starts (and cannot change later)."""
        td = self.turn_detection
        if td is None:
            return (None,)
        return (td.silence_duration_ms, td.prefix_padding_ms, td.threshold, self.language)

    def options(self) -> RealtimeOptions:
        td = self.turn_detection
        return RealtimeOptions(
            wake_word=False,
            language=self.language,
            prompt=self.prompt,
            hangover_ms=td.silence_duration_ms if td else None,
            pre_roll_ms=td.prefix_padding_ms if td else None,
            threshold=td.threshold if td else None,
            client_turns=td is None,
        )

    def transcription(self) -> dict[str, Any]:
        return {"model": self.model, "language": self.language, "prompt": self.prompt}

    def ga_session(self, session_id: str) -> dict[str, Any]:
        """The GA ``RealtimeTranscriptionSessionCreateResponse`` shape."""
        td = self.turn_detection
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": PCM16_RATE},
                    "transcription": self.transcription(),
                    "noise_reduction": None,
                    "turn_detection": td.as_dict() if td else None,
                }
            },
            "include": None,
        }

    def beta_session(self, session_id: str) -> dict[str, Any]:
        """The beta ``TranscriptionSession`` shape."""
        td = self.turn_detection
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "input_audio_format": "pcm16",
            "input_audio_transcription": self.transcription(),
            "turn_detection": td.as_dict() if td else None,
            "input_audio_noise_reduction": None,
            "include": None,
            "modalities": ["text"],
            "client_secret": None,
        }
