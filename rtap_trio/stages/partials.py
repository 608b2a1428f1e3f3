"""Partial transcripts with a stable prefix: LocalAgreement-2.

While a person speaks, the audio so far is transcribed again and again; each
time the words may change, most of all the last ones. A word is *stable*
once two consecutive partial transcripts agree on it and on everything before
it (the LocalAgreement-2 policy of whisper_streaming): stable words are never
retracted, later partials only add to them; the rest may still change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["LocalAgreement", "Partial"]


def _key(word: str) -> str:
    """A word as compared: case and punctuation do not make a disagreement."""
    return re.sub(r"[^\w']", "", word).lower()


@dataclass(frozen=True, slots=True)
class Partial:
    #: the stable words: what every later partial and the final start with
    stable: str
    #: the words after them, which may still change
    unstable: str
    #: how many words are stable
    stable_words: int
    #: words that became stable with this partial
    newly_stable: str

    @property
    def text(self) -> str:
        return f"{self.stable} {self.unstable}".strip()


class LocalAgreement:
    """The stable prefix over the partial transcripts of one utterance."""

    def __init__(self) -> None:
        self._stable: list[str] = []
        self._previous: list[str] = []

    def update(self, text: str) -> Partial:
        words = text.split()
        # Agreement is looked for after what is already stable: that never moves.
        base = len(self._stable)
        agreed = 0
        for old, new in zip(self._previous[base:], words[base:], strict=False):
            if _key(old) != _key(new):
                break
            agreed += 1
        newly = words[base : base + agreed]
        self._stable += newly
        self._previous = words
        return Partial(
            stable=" ".join(self._stable),
            unstable=" ".join(words[len(self._stable) :]),
            stable_words=len(self._stable),
            newly_stable=" ".join(newly),
        )
