"""Word error rate with a plain text normaliser, for the tests' quick checks.

The words are counted by the evaluation's alignment (one edit distance in the
project); only the normaliser differs: this one needs no ``eval`` extra, and
is language-neutral, so the tests can score any transcript with it.
"""

from __future__ import annotations

import re
import unicodedata

from ..evaluation.scoring import align

__all__ = ["normalize_text", "word_error_rate"]

_NUMBERS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "10": "ten",
}


def normalize_text(text: str) -> list[str]:
    """Lower case, no punctuation or accents' combining marks kept apart, digits spelled."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s']", " ", text)
    words = [w.strip("'") for w in text.split()]
    return [_NUMBERS.get(w, w) for w in words if w]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after normalising."""
    counts = align(normalize_text(reference), normalize_text(hypothesis))
    if counts.wer is None:
        # Nothing to say: silence is right, any word is all wrong.
        return 1.0 if counts.errors else 0.0
    return counts.wer
