"""The capture stage: frames from an audio source into the pipeline.

A client's :class:`~rtap_trio.items.TurnEnd` marks go on between them, in order.
"""

from __future__ import annotations

import itertools

from ..audio.base import AudioSource
from ..buffers import PolicySendChannel
from ..clock import now
from ..items import AudioFrame, TurnEnd

__all__ = ["CaptureStage"]


class CaptureStage:
    """Numbers frames and sends them on; the frame counter survives restarts.

    The channel's policy decides what a full channel means: a live source drops
    the oldest frame (capture never blocks), a replayed file waits.
    """

    def __init__(
        self, source: AudioSource, frames: PolicySendChannel[AudioFrame | TurnEnd]
    ) -> None:
        self.source = source
        self._frames = frames
        self._index = itertools.count()

    async def run(self) -> None:
        async for item in self.source.stream():
            if isinstance(item, TurnEnd):
                await self._frames.send(item)
            else:
                await self._frames.send(AudioFrame(next(self._index), item, now()))
        await self._frames.aclose()

    def stop(self) -> None:
        """End the stream: downstream stages drain what is queued and finish."""
        self._frames.close()
