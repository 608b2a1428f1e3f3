"""The console's level meter: how loud a session's audio is, window by window.

The front-end hands it every frame with its VAD decision; every
``_LEVEL_WINDOW_MS`` it publishes a ``level`` message (RMS and peak in dBFS,
the share of voiced frames) while someone watches, and measures nothing while
nobody does. Apart from the front-end because it is about showing the audio,
not about cutting it into utterances (the front-end borrows only
:func:`rms` and :func:`dbfs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio.pcm import pcm_to_float
from ..items import Samples
from ..transport.outbox import SessionOutbox

__all__ = ["LevelMeter", "dbfs", "rms"]

#: A level message per session this often, for the console's meter (10 a second
#: looks continuous; each is ~200 bytes per watcher).
_LEVEL_WINDOW_MS = 100
#: Silence is -inf dBFS; a meter needs a floor (16-bit audio's noise is ~-96).
_LEVEL_FLOOR_DBFS = -100.0


def rms(samples: Samples) -> float:
    """Root mean square, full scale 1.0; 0.0 for no samples."""
    scaled = pcm_to_float(samples)
    return float(np.sqrt(np.mean(scaled * scaled))) if scaled.size else 0.0


def dbfs(amplitude: float) -> float:
    """An amplitude (full scale 1.0) in dBFS, to 0.1 dB, floored at -100."""
    if amplitude <= 0.0:
        return _LEVEL_FLOOR_DBFS
    return round(min(0.0, max(_LEVEL_FLOOR_DBFS, 20.0 * float(np.log10(amplitude)))), 1)


@dataclass(slots=True)
class _LevelWindow:
    on: bool = False
    frames: int = 0
    samples: int = 0
    square_sum: float = 0.0
    peak: float = 0.0
    voiced: int = 0

    def add(self, samples: Samples, voiced: bool) -> None:
        scaled = pcm_to_float(samples)
        self.samples += len(scaled)
        self.square_sum += float(np.dot(scaled, scaled))
        self.peak = max(self.peak, float(np.max(np.abs(scaled))) if len(scaled) else 0.0)
        self.voiced += voiced


class LevelMeter:
    """One session's meter, fed frame by frame by its front-end."""

    def __init__(self, outbox: SessionOutbox, frame_ms: int) -> None:
        self._outbox = outbox
        self._frame_ms = frame_ms
        self._window_frames = max(1, _LEVEL_WINDOW_MS // frame_ms)
        self._window = _LevelWindow()

    def add(self, samples: Samples, voiced: bool) -> None:
        """One frame and whether the VAD called it speech."""
        window = self._window
        if window.on:
            window.add(samples, voiced)
        window.frames += 1
        if window.frames < self._window_frames:
            return
        if window.on and window.samples:
            self._outbox.level(
                rms_dbfs=dbfs((window.square_sum / window.samples) ** 0.5),
                peak_dbfs=dbfs(window.peak),
                voiced=window.voiced / window.frames,
                window_ms=window.frames * self._frame_ms,
            )
        # Measured only while someone watches: asked once a window, not per frame.
        self._window = _LevelWindow(on=self._outbox.wants_levels)
