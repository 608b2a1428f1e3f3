"""The front-end's wake word step: frames in, detections out.

A wake word engine (:mod:`rtap_trio.wakeword`) hears fixed blocks (Porcupine:
512 samples) while the pipeline moves 10-30 ms frames, so
:class:`WakeWordDetector` carries the remainder between frames and says in
which frame a keyword ended. Apart from the engines so that any of them fits
the front-end unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..items import Samples
from ..wakeword import WakeWordEngine

__all__ = ["WakeWordDetection", "WakeWordDetector"]


@dataclass(frozen=True, slots=True)
class WakeWordDetection:
    keyword: str
    #: absolute index of the frame in which the keyword ended
    frame_index: int


class WakeWordDetector:
    """One engine, fed frame by frame. Not thread-safe; owned by the front-end task."""

    def __init__(self, engine: WakeWordEngine) -> None:
        self._engine = engine
        self.keywords = list(engine.keywords)
        self.frame_length = engine.frame_length
        # Samples waiting for a full block; preallocated so the per-frame path
        # does not allocate.
        self._pending = np.zeros(self.frame_length, dtype=np.int16)
        self._held = 0

    def process(self, samples: Samples, frame_index: int) -> WakeWordDetection | None:
        """Feed one frame; returns a detection when a keyword ends in it."""
        n = self.frame_length
        detection = None
        offset = 0
        while offset < samples.size:
            take = min(n - self._held, samples.size - offset)
            self._pending[self._held : self._held + take] = samples[offset : offset + take]
            self._held += take
            offset += take
            if self._held == n:
                self._held = 0
                result = self._engine.process_block(self._pending[:n])
                if result >= 0 and detection is None:
                    detection = WakeWordDetection(self.keywords[result], frame_index)
        return detection

    def reset(self) -> None:
        self._held = 0

    def close(self) -> None:
        self._engine.close()
