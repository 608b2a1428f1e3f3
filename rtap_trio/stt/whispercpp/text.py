"""Whisper's text as RTAP publishes it."""

from __future__ import annotations

import re

__all__ = ["clean_transcript"]

# Whisper writes sounds it hears in brackets or parentheses ("[BLANK_AUDIO]",
# "(upbeat music)", "[ Silence ]"); none of that was said.
_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)")


def clean_transcript(text: str) -> str:
    """Whisper's text without sound annotations and with single spaces."""
    return re.sub(r"\s+", " ", _NON_SPEECH.sub(" ", text)).strip()
