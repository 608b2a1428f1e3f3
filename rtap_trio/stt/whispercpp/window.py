"""How much whisper.cpp may spend on an utterance: the part of its 30 s encoder
window it gets (``audio_ctx``), the tokens a final may decode, and when a final's
first try in a smaller window is decoded again."""

from __future__ import annotations

from typing import Literal

from ..hallucination import compression_ratio

__all__ = [
    "FULL_AUDIO_CTX",
    "SAMPLES_PER_AUDIO_FRAME",
    "audio_ctx_for",
    "final_token_cap",
    "first_try_failed",
    "partial_token_cap",
]

#: whisper.cpp's encoder sees 20 ms frames (hop 160, stride-2 convolution)
#: and at most 30 s of them.
SAMPLES_PER_AUDIO_FRAME = 320
FULL_AUDIO_CTX = 1500
#: whisper.cpp decodes at most half its decoder's context (448 / 2 for every
#: Whisper model) per segment.
_MAX_TOKENS = 224

#: A final's token cap: a floor for short commands plus a generous speech rate
#: (English runs at 3-4 tokens a second). Without it a decode that loops runs
#: to _MAX_TOKENS, and through whisper_full at every step of the temperature
#: fallback: tiny.en on a 3.1-3.3 s command in a 512-frame window took 4.1-8.5 s
#: (two threads) and then gave the right words at a higher temperature; capped,
#: 1.4-3.2 s and the same words. No legitimate final comes near it: the same
#: words with and without it on 40 held-out generated commands, the fixtures
#: and the corpus (pc2, issue 18).
_FINAL_TOKENS = 16
_FINAL_TOKENS_PER_S = 12
#: A partial transcript's token cap: this many, plus this many a second of
#: audio, twice the rate of English speech (3-4 tokens a second). A final's first
#: try in the smaller window (``audio_ctx_first_floor``) gets it too: a decode
#: that fills it is taken as looping and done again in the full-size window, so
#: a loop costs its encoder pass and a few dozen tokens.
_PARTIAL_TOKENS = 8
_PARTIAL_TOKENS_PER_S = 6
_SAMPLE_RATE = 16_000


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


def final_token_cap(samples: int, limit: int = _MAX_TOKENS) -> int:
    """The most tokens a final of ``samples`` of 16 kHz audio may decode, never
    past ``limit``."""
    return min(limit, _FINAL_TOKENS + _FINAL_TOKENS_PER_S * samples // _SAMPLE_RATE)


def partial_token_cap(samples: int, limit: int = _MAX_TOKENS) -> int:
    """The most tokens a partial, or a final's first try, of ``samples`` may decode."""
    return min(limit, _PARTIAL_TOKENS + round(_PARTIAL_TOKENS_PER_S * samples / _SAMPLE_RATE))


def first_try_failed(text: str, tokens: int, cap: int, max_compression_ratio: float) -> bool:
    """A first try's decode looped: it filled its token cap, or its text repeats
    itself past ``max_compression_ratio`` (0: that rule off)."""
    if tokens >= cap:
        return True
    return bool(max_compression_ratio) and compression_ratio(text) > max_compression_ratio
