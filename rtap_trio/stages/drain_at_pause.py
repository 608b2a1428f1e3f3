"""A draining service's stream ends at its next pause, never inside an utterance.

A service that drains (SIGTERM behind a balancer) asks each stream to end at
its next pause (:meth:`~rtap_trio.stages.frontend.FrontEnd.end_at_pause`):
between utterances, after :data:`_DRAIN_PAUSE_MS` without voice, so that its
client reconnects to another instance with nothing said cut in two.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["DrainAtPause"]

#: A drain ends a stream only after this much unvoiced audio outside an
#: utterance: speech whose start the VAD has not yet called (it needs a few
#: voiced frames) is not cut off before it opens an utterance.
_DRAIN_PAUSE_MS = 300


class DrainAtPause:
    """Whether the stream is at a pause, and the end to call once it is."""

    def __init__(self, frame_ms: int) -> None:
        self._pause_frames = _DRAIN_PAUSE_MS // frame_ms
        #: unvoiced frames in a row
        self._unvoiced_run = 0
        self._end: Callable[[], None] | None = None
        #: the end was called: every frame after it is ignored
        self.ended = False

    def frame(self, voiced: bool) -> None:
        self._unvoiced_run = 0 if voiced else self._unvoiced_run + 1

    def quiet(self, frames_seen: bool) -> bool:
        """The last frames were unvoiced (or none came yet)."""
        return self._unvoiced_run >= self._pause_frames or not frames_seen

    @property
    def asked(self) -> bool:
        return self._end is not None

    def ask(self, end: Callable[[], None]) -> None:
        """Call ``end`` once, at the next pause (see :meth:`at_pause`)."""
        if not self.ended:
            self._end = end

    def at_pause(self, between_utterances: bool) -> None:
        """Call the end if one was asked for and this is a pause between utterances."""
        end = self._end
        if end is None or not between_utterances:
            return
        self._end = None
        self.ended = True
        end()
