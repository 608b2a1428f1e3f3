"""Scoring a transcript against its reference, and detected keywords against those spoken.

Texts are compared after Whisper's standard normalisers (``EnglishTextNormalizer``
for English, ``BasicTextNormalizer`` otherwise), word by word, with the errors
split into substitutions, deletions and insertions so a corpus figure is total
errors / total reference words. This is the project's one edit distance:
:func:`rtap_trio.devtools.textmetrics.word_error_rate` counts with it too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import RTAPError

__all__ = [
    "ErrorCounts",
    "align",
    "match_keywords",
    "normalise",
    "round_or_none",
    "word_errors",
]


def round_or_none(value: float | None, digits: int = 4) -> float | None:
    """``value`` rounded for a report; None (no rate) stays None."""
    return None if value is None else round(value, digits)


@functools.cache
def _normaliser(english: bool) -> Callable[[str], str]:
    try:
        from whisper_normalizer.basic import BasicTextNormalizer  # type: ignore[import-untyped]
        from whisper_normalizer.english import EnglishTextNormalizer  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RTAPError(
            "the eval extra is not installed: pip install -e '.[eval]' (whisper-normalizer)"
        ) from exc
    normaliser: Callable[[str], str] = EnglishTextNormalizer() if english else BasicTextNormalizer()
    return normaliser


def normalise(text: str, language: str | None) -> list[str]:
    """Whisper's standard normalisation: English rules for ``en``, basic rules otherwise.

    Both lower-case and drop punctuation; the English one also spells numbers
    as digits, expands contractions and unifies British/American spelling, so
    "ten" and "10" or "Mr." and "mister" are not counted as errors.
    """
    return _normaliser(language == "en")(text).split()


@dataclass(frozen=True, slots=True)
class ErrorCounts:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_words: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        """None for an empty reference: any word said there is an error, but no rate."""
        return self.errors / self.reference_words if self.reference_words else None

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_words + other.reference_words,
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors, "wer": round_or_none(self.wer)}


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> ErrorCounts:
    """Levenshtein alignment of two word lists, split into S, D and I."""
    # Each cell holds (errors, substitutions, deletions, insertions); ties go to
    # the fewest errors first, then to the row-major order of the operations.
    rows = len(reference)
    previous = [(j, 0, 0, j) for j in range(len(hypothesis) + 1)]
    for i in range(1, rows + 1):
        current = [(i, 0, i, 0)]
        for j in range(1, len(hypothesis) + 1):
            diag = previous[j - 1]
            same = reference[i - 1] == hypothesis[j - 1]
            substitute = (diag[0] + (not same), diag[1] + (not same), diag[2], diag[3])
            up = previous[j]
            delete = (up[0] + 1, up[1], up[2] + 1, up[3])
            left = current[j - 1]
            insert = (left[0] + 1, left[1], left[2], left[3] + 1)
            current.append(min(substitute, delete, insert))
        previous = current
    _, s, d, n_ins = previous[-1]
    return ErrorCounts(s, d, n_ins, rows)


def word_errors(reference: str, hypothesis: str, language: str | None) -> ErrorCounts:
    return align(normalise(reference, language), normalise(hypothesis, language))


def match_keywords(expected: Sequence[str], detected: Sequence[str]) -> int:
    """How many detections match the spoken keywords, in order (longest common subsequence)."""
    previous = [0] * (len(detected) + 1)
    for word in expected:
        current = [0]
        for j, found in enumerate(detected, 1):
            current.append(
                previous[j - 1] + 1 if word == found else max(previous[j], current[j - 1])
            )
        previous = current
    return previous[-1]
