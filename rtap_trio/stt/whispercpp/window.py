"""How much of whisper.cpp's 30 s encoder window an utterance gets (``audio_ctx``)."""

from __future__ import annotations

from typing import Literal

__all__ = ["FULL_AUDIO_CTX", "SAMPLES_PER_AUDIO_FRAME", "audio_ctx_for"]

#: whisper.cpp's encoder sees 20 ms frames (hop 160, stride-2 convolution)
#: and at most 30 s of them.
SAMPLES_PER_AUDIO_FRAME = 320
FULL_AUDIO_CTX = 1500


def audio_ctx_for(samples: int, setting: Literal["auto"] | int, *, floor: int, margin: int) -> int:
    """The ``audio_ctx`` to give whisper.cpp for ``samples`` of 16 kHz audio.

    0 means whisper.cpp's own full 30 s window. "auto" sizes the window to the
    utterance plus ``margin`` frames, never under ``floor``: Whisper was only
    trained on 30 s windows, and a window that ends right at the speech makes
    it drop or invent words.
    """
    if setting != "auto":
        return setting
    frames = -(-samples // SAMPLES_PER_AUDIO_FRAME)
    ctx = max(floor, frames + margin)
    return 0 if ctx >= FULL_AUDIO_CTX else ctx
