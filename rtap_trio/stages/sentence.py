"""What the words so far say about the sentence: ended, going on, or cannot tell.

Sentence-aware endpointing reads an utterance's early transcript with
:func:`sentence_state`: one that clearly goes on ("... and", "... the", a
trailing comma) is given a longer pause before the utterance ends; one that
ends a sentence may be given a shorter one.
"""

from __future__ import annotations

import enum
import re

__all__ = ["SentenceState", "sentence_state"]


class SentenceState(enum.Enum):
    ENDED = "ended"
    GOES_ON = "goes_on"
    UNSURE = "unsure"


# Terminal punctuation (also the CJK full stops and marks Whisper writes), and
# closing quotes or brackets after it.
_ENDS = re.compile(r"[.!?\u3002\uff01\uff1f\u2026]['\")\]\u00bb]*$")
_GOES_ON_MARK = re.compile(r"[,;:\-\u2013\u2014]$")
# Words a sentence hardly ends on, in the languages RTAP's users speak most:
# conjunctions even before a full stop (Whisper's period is a guess there) ...
_CONJUNCTIONS = frozenset(
    {"and", "or", "but", "because", "und", "oder", "aber", "weil", "dass"}
    | {"y", "o", "pero", "porque", "que"}
)
# ... and, without one, articles and prepositions too.
_UNFINISHED = (
    _CONJUNCTIONS
    | {"so", "if", "then", "that", "which", "who", "when", "while", "the", "a", "an", "to"}
    | {"of", "for", "with", "in", "at", "by", "from", "into", "as", "than", "is", "are"}
    | {"der", "die", "das", "den", "dem", "eine", "zu", "mit", "von", "für", "auf"}
    | {"el", "la", "los", "las", "un", "una", "de", "con", "para", "en", "por"}
)


def sentence_state(text: str) -> SentenceState:
    """Whether ``text`` ends a sentence, clearly goes on, or cannot tell.

    Whisper punctuates what it hears: a full stop, question or exclamation
    mark after the last word is its judgement that the sentence is complete,
    trusted unless that word is a conjunction.
    """
    text = text.strip()
    if not text:
        return SentenceState.UNSURE
    last_word = re.sub(r"[^\w']", "", text.rsplit(maxsplit=1)[-1]).lower()
    if _ENDS.search(text):
        return SentenceState.GOES_ON if last_word in _CONJUNCTIONS else SentenceState.ENDED
    if _GOES_ON_MARK.search(text) or last_word in _UNFINISHED:
        return SentenceState.GOES_ON
    return SentenceState.UNSURE
