"""Speech already under way when a live source's capture began.

A microphone or a room was live before capture began: speech voiced on the
first frames was not heard from its beginning, and its fragment is dropped
(``utterance_discarded``, reason ``began_before_capture``) rather than
transcribed into something it did not say.
"""

from __future__ import annotations

from ..items import Samples
from .level import dbfs, rms

__all__ = ["CaptureStart"]

#: Speech voiced within this many frames of a live source's first one was
#: already under way when capture began (the VAD needs a few frames to call it),
#: if those frames are loud: a cold webrtcvad calls ~80 ms of silence speech.
_CUT_AT_START_FRAMES = 3
_CUT_AT_START_DBFS = -45.0


class CaptureStart:
    """Whether the utterance that opened was cut by the start of capture."""

    def __init__(self, live_from_start: bool) -> None:
        self._live = live_from_start
        #: the first frame's index; None before it comes
        self.first_index: int | None = None
        self._loud = False
        self._cut = False

    def frame(self, index: int, samples: Samples) -> None:
        if self.first_index is None:
            self.first_index = index
        if self._live and index - self.first_index <= _CUT_AT_START_FRAMES:
            self._loud |= dbfs(rms(samples)) > _CUT_AT_START_DBFS

    def speech_started(self, first_voiced_frame: int, *, after_wake_word: bool) -> None:
        """Voiced from the very first frames of a live source: it began before us."""
        first = self.first_index if self.first_index is not None else 0
        self._cut = (
            self._loud
            and not after_wake_word
            and first_voiced_frame <= first + _CUT_AT_START_FRAMES
        )

    def take_cut(self) -> bool:
        """The utterance ending now began before capture (asked once per utterance)."""
        cut, self._cut = self._cut, False
        return cut
