"""When the front-end asks for a partial transcript of the speech so far.

The first comes ``first_partial_ms`` after the utterance's first voiced
frame; until one has had words, the next is asked as soon as the transcriber
is idle (within its share of the engine); after that, every
``partial_interval_ms`` of speech from when the last was asked. The
transcriber (:mod:`.speculative`) decides whether the engine can take it.
"""

from __future__ import annotations

from collections.abc import Callable

from ..items import Samples
from .speculative import SpeculativeTranscriber

__all__ = ["PartialTiming"]


class PartialTiming:
    """One session's schedule of partial transcripts, in frames."""

    def __init__(self, *, interval_frames: int, first_frames: int, no_words_frames: int) -> None:
        self._interval = interval_frames
        self._first = first_frames
        self._no_words = no_words_frames
        #: the frame the next partial is due at
        self._next = 0
        #: the frame the latest partial was asked at, and whether none had words yet
        self._asked = 0
        self._without_words = True

    def speech_started(self, first_voiced_frame: int) -> None:
        """An utterance opened: its first partial is counted from its first
        voiced frame, not from when the endpointer called it speech."""
        self._next = first_voiced_frame + self._first
        self._without_words = True

    def due(self, last_index: int) -> bool:
        return last_index >= self._next

    def request(
        self,
        transcriber: SpeculativeTranscriber,
        utterance_id: str,
        stop: int,
        *,
        heard_samples: int,
        audio: Callable[[], Samples],
        stop_s: float,
        language: str | None,
    ) -> None:
        """The audio up to frame ``stop`` to the transcriber, if it is idle."""
        last_index = stop - 1
        if not transcriber.ready_for_partial(utterance_id, heard_samples):
            return  # busy or over its share: not worth gathering the audio each frame
        # Whether the partials so far had words is known now: the transcriber is idle.
        words = transcriber.has_words(utterance_id)
        if words and self._without_words:
            # The first with words: the interval runs from when it was asked.
            self._without_words = False
            self._next = self._asked + self._interval
            if last_index < self._next:
                return
        if transcriber.partial(utterance_id, audio(), stop_s, language):
            self._asked = last_index
            self._next = last_index + (self._interval if words else self._no_words)
