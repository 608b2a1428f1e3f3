"""Cutting audio into the pipeline's fixed frames, and pacing them like a microphone."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

import numpy as np
import trio

from ..items import Samples

__all__ = ["pace", "split_frames"]

T = TypeVar("T")


def split_frames(samples: Samples, frame_samples: int) -> Samples:
    """``samples`` as rows of ``frame_samples``, the last one padded with silence."""
    padded = np.zeros(math.ceil(samples.size / frame_samples) * frame_samples, dtype=np.int16)
    padded[: samples.size] = samples
    return padded.reshape(-1, frame_samples)


async def pace(items: Iterable[T], interval_s: float) -> AsyncIterator[T]:
    """Yield ``items`` one per ``interval_s``, as a microphone or a streaming client would.

    Each item is due at a fixed time from the first (not a fixed sleep after
    the last), so scheduling delays do not add up to drift. Trio's clock
    drives it, so tests can run it on a MockClock.
    """
    started = trio.current_time()
    for number, item in enumerate(items):
        delay = started + number * interval_s - trio.current_time()
        if delay > 0:
            await trio.sleep(delay)
        yield item
