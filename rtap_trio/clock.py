"""The clock every latency figure is read from.

A module of its own because every stage stamps items with it: capture, the
front-end, STT, language and the speculative worker all import :func:`now`,
and none of them should have to import metrics or logging to get it.
"""

from __future__ import annotations

import time

__all__ = ["now"]


def now() -> float:
    """The clock every latency figure uses: monotonic, comparable across threads."""
    return time.perf_counter()
