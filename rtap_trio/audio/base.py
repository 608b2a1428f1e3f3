"""The audio source interface: anything that yields fixed-size 16 kHz mono frames."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

from ..items import Samples, TurnEnd

__all__ = ["AudioSource"]


class AudioSource(abc.ABC):
    """Yields frames of ``frame_samples`` int16 samples at 16 kHz mono.

    ``open`` does the checks that can fail (device exists, file decodes) so the
    service fails at start with a clear error, before any task runs. ``frames``
    may be called again after a crash to resume capture.
    """

    #: human-readable description for logs and /health
    name: str
    #: a live source cannot wait: its channel drops the oldest frame when full
    live: bool
    #: its audio was going on before capture began (a microphone in a room, a
    #: drill's file joined late): speech on the first frames was not heard from
    #: its start. A file or a network client starts with its own beginning.
    joins_mid_stream: bool = False

    @property
    def interactive(self) -> bool:
        """Someone waits for each answer: when transcription falls behind, the
        oldest waiting utterance is dropped (and said so) rather than capture
        stalled. Live sources are; a network client may be without being live."""
        return self.live

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    def frames(self) -> AsyncIterator[Samples]: ...

    def stream(self) -> AsyncIterator[Samples | TurnEnd]:
        """What capture reads: the frames, and, from a client that ends its own
        turns (:class:`~rtap_trio.audio.network.PushSource`), where it did."""
        return self.frames()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the device or file."""
