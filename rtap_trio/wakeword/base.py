"""What the front-end knows of a wake word engine.

A :class:`WakeWordEngine` is one loaded detector for one audio stream (it keeps
that stream's state: Porcupine's handle does), built per session by
:func:`rtap_trio.wakeword.load_wakeword`. It hears fixed blocks of
``frame_length`` samples, whatever the pipeline's frame; the front-end's
:class:`~rtap_trio.stages.wakeword.WakeWordDetector` cuts frames into blocks.
It runs on the trio thread, inline in the front-end: a block costs
microseconds, less than a hand-off to a worker thread would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..items import Samples

__all__ = ["WakeWordEngine"]


class WakeWordEngine(Protocol):
    """One stream's wake word detector, block by block in order."""

    #: the keywords it listens for; :meth:`process_block` answers an index into them
    @property
    def keywords(self) -> Sequence[str]: ...

    #: samples per block
    @property
    def frame_length(self) -> int: ...

    def process_block(self, block: Samples) -> int:
        """One block of exactly ``frame_length`` samples: the index of the
        keyword that ended in it, or -1."""
        ...

    def close(self) -> None:
        """Free what it holds; it is not used after."""
        ...
