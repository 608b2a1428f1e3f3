"""What the front-end knows of a voice activity detector.

A :class:`VadEngine` is loaded once and shared by every session (it may hold
a model); each session asks it for a :class:`VoiceActivity`, which keeps that
stream's state (noise estimate, recurrent state, buffered samples). Both run
on the trio thread, inline in the front-end: a decision costs microseconds
(webrtcvad) to ~0.14 ms per 32 ms of audio (Silero on one core), less than a
hand-off to a worker thread would.
"""

from __future__ import annotations

from typing import Protocol

from ..items import Samples
from ..settings import VadSettings

__all__ = ["VadEngine", "VoiceActivity"]


class VoiceActivity(Protocol):
    """One stream's speech decisions, frame by frame in order."""

    def is_speech(self, samples: Samples) -> bool:
        """Whether this frame (10, 20 or 30 ms) is speech."""
        ...


class VadEngine(Protocol):
    """A loaded detector, shared by sessions."""

    #: ``webrtc`` or ``silero``: what ``vad.engine`` names
    @property
    def name(self) -> str: ...

    def stream(self, settings: VadSettings) -> VoiceActivity:
        """A fresh detector state for one audio stream, with that session's
        ``aggressiveness`` (webrtcvad) or ``silero_threshold``."""
        ...
