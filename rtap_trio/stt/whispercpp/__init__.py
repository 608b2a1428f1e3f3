"""whisper.cpp (through pywhispercpp and libwhisper) as an STT engine.

Chosen with ``stt.engine: whispercpp``; its settings are ``stt.whispercpp``.
"""

from __future__ import annotations

from .context import WhisperContext, is_english_only
from .engine import WhisperCppEngine, open_whispercpp_engines
from .text import clean_transcript
from .window import (
    FULL_AUDIO_CTX,
    audio_ctx_for,
    final_token_cap,
    first_try_failed,
    partial_token_cap,
)

__all__ = [
    "FULL_AUDIO_CTX",
    "WhisperContext",
    "WhisperCppEngine",
    "audio_ctx_for",
    "clean_transcript",
    "final_token_cap",
    "first_try_failed",
    "partial_token_cap",
    "is_english_only",
    "open_whispercpp_engines",
]
