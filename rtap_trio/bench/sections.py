"""The names of the benchmark's sections, in the order they run.

Apart from the runner so that the command line can offer them without
loading an engine.
"""

from __future__ import annotations

__all__ = ["SECTIONS"]

SECTIONS = (
    "frontend",
    "stt_ab",
    "throughput",
    "latency",
    "turns",
    "vad",
    "memory",
    "fanout",
    "concurrency",
    "remote",
)
