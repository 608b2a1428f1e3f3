"""Words and their times from whisper.cpp's tokens.

Two ways whisper.cpp 1.8.5 times tokens, both measured here on generated
speech with a silence of 0.25 s between words ("Ask Zyntharion to call
Quelbrook", tiny.en):

- ``token_timestamps`` (``t0``/``t1`` from the timestamp tokens'
  probabilities) needs a decode with timestamps, which changed the words
  ("the entire region" for "Zyntharion"), and with a vocabulary prompt put
  every word but the first at the end of the audio (4.80 s);
- DTW on the cross-attention of the model's alignment heads
  (``dtw_token_timestamps``, one ``t_dtw`` per token) leaves the decode as it
  is (the same text, prompt or not) and puts each token's time 0.03-0.3 s after
  the token ends, where the next begins. It needs a context without flash
  attention (whisper.cpp turns DTW off with it): :mod:`.context` keeps one
  apart for the requests that want words.

So a token runs from the time of the token before it to its own; the first
token of the utterance, which has no token before it, from where speech
begins. A word is what Whisper's byte-level BPE writes between spaces: a token
that starts with a space starts a word, any other continues the one before
("Qu" "ail" " Look" is two words). A DTW time lands 0.05-0.11 s after the
next word has begun where there is a pause between them (measured as above),
so a boundary with a pause (60 ms or more of frames 30 dB under the
utterance's loudest) that ends within 0.4 s before it, or 0.1 s after, is
moved into that pause: the word before ends where it begins, the next starts
where it ends. Each word's edges are then moved onto the voiced frames they
enclose.
Punctuation is stripped from a word's edges, as OpenAI's
``TranscriptionWord`` gives words; a word that is only punctuation, or a sound
annotation ("[BLANK_AUDIO]", left out of the text too), is dropped.

Checked against the generator's own alignment in tests/test_whisper_features.py;
docs/performance.md has the figures and the cost.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ...items import Float32, Word

__all__ = ["TimedToken", "join_words", "voiced_frames"]

_SAMPLE_RATE = 16_000
_FRAME = 320  # 20 ms
#: A frame is voiced within this many dB of the utterance's loudest frame.
_VOICED_DB = 30.0
#: A pause between words: this many silent frames in a row (60 ms).
_PAUSE_FRAMES = 3
#: Where a pause may end around a boundary's DTW time (see the module docstring).
_PAUSE_BEFORE_S = 0.4
_PAUSE_AFTER_S = 0.1


@dataclass(frozen=True, slots=True)
class TimedToken:
    """One text token of a decode: its bytes and its DTW time (seconds; negative: untimed)."""

    piece: bytes
    time: float


def _strip_punctuation(text: str) -> str:
    """``text`` without punctuation (Unicode P*: quotes, dashes, "¿", "。") at its edges."""
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(text[end - 1]).startswith("P"):
        end -= 1
    return text[start:end]


def voiced_frames(audio: Float32) -> npt.NDArray[np.bool_]:
    """Which 20 ms frames of ``audio`` are within 30 dB of its loudest frame."""
    n = audio.size // _FRAME
    if n == 0:
        return np.zeros(0, dtype=bool)
    frames = audio[: n * _FRAME].astype(np.float64).reshape(n, _FRAME)
    energy = (frames**2).mean(axis=1)
    voiced: npt.NDArray[np.bool_] = energy >= energy.max() * 10 ** (-_VOICED_DB / 10)
    return voiced


def _snap(start: float, end: float, voiced: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """``start``-``end`` shrunk to the voiced frames it encloses (as it is if none)."""
    first = max(0, int(start * _SAMPLE_RATE) // _FRAME)
    last = min(voiced.size, -(-int(end * _SAMPLE_RATE) // _FRAME))
    inside = np.flatnonzero(voiced[first:last])
    if inside.size == 0:
        return start, end
    return (first + int(inside[0])) * _FRAME / _SAMPLE_RATE, min(
        end, (first + int(inside[-1]) + 1) * _FRAME / _SAMPLE_RATE
    )


def _pauses(voiced: npt.NDArray[np.bool_]) -> list[tuple[float, float]]:
    """The runs of at least _PAUSE_FRAMES silent frames, (start, end) in seconds."""
    runs = []
    start: int | None = None
    for index, is_voiced in enumerate([*voiced.tolist(), True]):
        if not is_voiced and start is None:
            start = index
        elif is_voiced and start is not None:
            if index - start >= _PAUSE_FRAMES:
                runs.append((start * _FRAME / _SAMPLE_RATE, index * _FRAME / _SAMPLE_RATE))
            start = None
    return runs


def _into_pause(
    boundary: float, pauses: list[tuple[float, float]], after: float
) -> tuple[float, float] | None:
    """The pause a boundary moves into: the one ending nearest to it within
    the window, and after ``after`` (the previous boundary's), so that no two
    boundaries share a pause and none moves back past another."""
    near = [
        (start, end)
        for start, end in pauses
        if boundary - _PAUSE_BEFORE_S <= end <= boundary + _PAUSE_AFTER_S and start >= after
    ]
    return min(near, key=lambda pause: abs(pause[1] - boundary)) if near else None


def _word(pieces: list[bytes]) -> str:
    text = b"".join(pieces).decode("utf-8", errors="replace").strip()
    if text.startswith(("[", "(")) and text.endswith(("]", ")")):
        return ""  # a sound annotation, not said
    return _strip_punctuation(text)


def join_words(tokens: Sequence[TimedToken], audio: Float32) -> tuple[Word, ...]:
    """The words ``tokens`` spell, timed in ``audio`` (what was transcribed).

    Empty when the tokens carry no times (a context without DTW).
    """
    if not tokens or any(token.time < 0 for token in tokens):
        return ()
    voiced = voiced_frames(audio)
    onset = np.flatnonzero(voiced)
    speech_start = float(onset[0]) * _FRAME / _SAMPLE_RATE if onset.size else 0.0
    groups: list[tuple[list[bytes], float, float]] = []
    previous_time = min(speech_start, tokens[0].time)
    for token in tokens:
        if not groups or token.piece.startswith(b" "):
            groups.append(([], previous_time, token.time))
        pieces, start, _ = groups[-1]
        pieces.append(token.piece)
        groups[-1] = (pieces, start, max(token.time, start))
        previous_time = token.time
    pauses = _pauses(voiced)
    used = 0.0
    for index in range(1, len(groups)):
        pause = _into_pause(groups[index][1], pauses, used)
        if pause is None:
            continue
        before, after = pause
        used = after
        pieces, start, _ = groups[index - 1]
        groups[index - 1] = (pieces, start, max(start, before))
        pieces, _, end = groups[index]
        groups[index] = (pieces, after, max(after, end))
    words = []
    for pieces, start, end in groups:
        text = _word(pieces)
        if text:
            start, end = _snap(start, end, voiced)
            words.append(Word(text, round(start, 3), round(end, 3)))
    return tuple(words)
