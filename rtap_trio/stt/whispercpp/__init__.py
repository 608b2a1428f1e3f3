"""whisper.cpp (through pywhispercpp and libwhisper) as an STT backend."""

from __future__ import annotations

from .backend import ABORT_WAIT_S, WhisperCppBackend
from .engine import EngineResult, WhisperEngine, is_english_only
from .text import clean_transcript
from .window import FULL_AUDIO_CTX, audio_ctx_for

__all__ = [
    "ABORT_WAIT_S",
    "FULL_AUDIO_CTX",
    "EngineResult",
    "WhisperCppBackend",
    "WhisperEngine",
    "audio_ctx_for",
    "clean_transcript",
    "is_english_only",
]
