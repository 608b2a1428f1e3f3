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

__all__ = ["LocalAgreement", "Partial", "collapse_repeats", "without_annotations"]

#: The longest run of words looked for repeating itself.
_LONGEST_REPEAT = 8
#: What Whisper writes for sounds, not words: "*Sh*", "(music)", "[BLANK_AUDIO]".
_ANNOTATION = re.compile(r"\*[^*]*\*|\([^)]*\)|\[[^\]]*\]")


def without_annotations(text: str) -> str:
    """``text`` without Whisper's notes on sounds (``*mumbling*``, ``(music)``).

    On an utterance's first second tiny.en writes them as often as words
    ("*Sh* *Sh* *Sh*" for the start of "Jarvis"): a partial of nothing but
    those has no words, and the next is asked at once.
    """
    return " ".join(_ANNOTATION.sub(" ", text).split())


def _key(word: str) -> str:
    """A word as compared: case and punctuation do not make a disagreement."""
    return re.sub(r"[^\w']", "", word).lower()


def collapse_repeats(text: str) -> str:
    """``text`` with each run of words that repeats itself at once said once.

    Partials are decoded on a window just longer than the speech, where
    Whisper now and then loops: "computer open the garage door open the garage
    door open the garage door" (tiny.en, 3 s of the fixture). Two partials that
    loop alike would make the loop stable, and stable words are never
    retracted. A phrase said twice in a row (or a word three times) is taken
    for a loop: a partial that drops a true repetition loses nothing, the
    final has every word.
    """
    words = text.split()
    keys = [_key(word) for word in words]
    kept: list[int] = []  # indices of the words kept
    i = 0
    while i < len(words):
        kept.append(i)
        i += 1
        for n in range(min(_LONGEST_REPEAT, len(kept)), 0, -1):
            phrase = [keys[k] for k in kept[-n:]]
            repeats = 0
            while keys[i + repeats * n : i + (repeats + 1) * n] == phrase:
                repeats += 1
            if repeats < (2 if n == 1 else 1):  # a word three times in all, a phrase twice
                continue
            i += repeats * n
            # the loop cut short by the token cap: "... door open the"
            rest = keys[i:]
            if len(rest) < n and rest == phrase[: len(rest)]:
                i = len(words)
            break
    return " ".join(words[k] for k in kept)


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
