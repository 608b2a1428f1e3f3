"""Speech to text: one pool of engines, shared by every session.

:class:`SttBackend` is what the pipeline knows; :class:`SttPool` implements it
over engines of the kind ``stt.engine`` names (:class:`SttEngine`: whisper.cpp
on the CPU or a CUDA build, or another machine's OpenAI-compatible endpoint,
``remote``, with a local fallback behind it: :mod:`.fallback`), and
:func:`load_backend` builds the pool the settings ask for.
"""

from __future__ import annotations

from ..settings import SttSettings
from .base import FinalsForeseen, SttBackend, SttStatistics
from .decoding import Decoding
from .engine import (
    ABORT_WAIT_S,
    EngineCapabilities,
    EngineRequest,
    EngineResult,
    SttEngine,
    Task,
)
from .pool import SttPool
from .scheduling import PriorityLimiter, PriorityLimiterStatistics
from .selection import open_engines

__all__ = [
    "ABORT_WAIT_S",
    "Decoding",
    "EngineCapabilities",
    "EngineRequest",
    "EngineResult",
    "FinalsForeseen",
    "PriorityLimiter",
    "PriorityLimiterStatistics",
    "SttBackend",
    "SttEngine",
    "SttPool",
    "SttStatistics",
    "Task",
    "load_backend",
    "open_engines",
]


async def load_backend(settings: SttSettings) -> SttBackend:
    """The pool for ``settings``: its engines loaded and warmed up."""
    return SttPool(await open_engines(settings))
