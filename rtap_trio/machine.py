"""The machine a figure was measured on, as the bench and eval reports describe it.

Timings mean little without the CPU, the cores this process may use, how busy
the machine was and the versions that ran, so every report carries the same
description; one function writes it, so the reports can be compared.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["CPU_FLAGS", "describe_machine", "package_version"]

#: The instruction sets whisper.cpp's speed depends on.
CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16")


def _cpuinfo() -> dict[str, str]:
    """The first value of every key in /proc/cpuinfo (the first core's); {} off Linux."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def package_version(name: str) -> str | None:
    """The installed distribution's version; None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict[str, Any]:
    """Host, CPU (model, cores, flags), load average now, platform and Python."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "host": platform.node(),
        # The marketing name where Linux says it, else what Python knows.
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        # A container or taskset may allow fewer cores than the machine has.
        "cores_usable": usable,
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        # Other work on the machine slows every figure: say how busy it was.
        "load_average_at_start": [round(x, 2) for x in load],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
