"""Speech to text behind one small interface, shared by every session.

:class:`SttBackend` is what the pipeline knows; :func:`load_backend` builds the
one the settings ask for. whisper.cpp on the CPU or a CUDA build is the one
implementation today; a remote backend would be another.
"""

from __future__ import annotations

from ..settings import SttSettings
from .base import FinalsForeseen, SttBackend, SttStatistics
from .scheduling import PriorityLimiter, PriorityLimiterStatistics

__all__ = [
    "FinalsForeseen",
    "PriorityLimiter",
    "PriorityLimiterStatistics",
    "SttBackend",
    "SttStatistics",
    "load_backend",
]


async def load_backend(settings: SttSettings) -> SttBackend:
    """The backend for ``settings``, loaded and warmed up."""
    from .whispercpp import WhisperCppBackend  # loads whisper.cpp: only when asked

    return await WhisperCppBackend.load(settings)
