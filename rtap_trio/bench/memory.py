"""Peak resident memory of the service: a child process on the demo, its VmHWM from /proc.

The child is the real command (``python -m rtap_trio run --source demo``) with
the profile's model, on free ports; once it has printed ``transcripts``
transcripts (so every stage has done real work) its high-water mark is read
and it is stopped with SIGTERM, as systemd would.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

from .common import ServicePorts, service_command

__all__ = ["measure_service_rss", "proc_status_kb"]


def proc_status_kb(pid: int) -> dict[str, int]:
    """The memory lines (VmHWM, VmRSS, ...) of /proc/PID/status, in kB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("Vm") and rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return values


def _lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def measure_service_rss(
    profile: str | None,
    settings_dir: Path | None,
    overrides: list[str],
    *,
    transcripts: int,
    limit_s: float,
) -> dict[str, Any]:
    env = {**os.environ, **ServicePorts.free().env(), "RTAP_LOG_LEVEL": "WARNING"}
    command = service_command(
        "demo", profile=profile, settings_dir=settings_dir, overrides=overrides, extra=["--print"]
    )
    started = time.perf_counter()
    child = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert child.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(child.stdout, lines), daemon=True).start()
    seen = 0
    status: dict[str, int] = {}
    deadline = started + limit_s
    try:
        while seen < transcripts and time.perf_counter() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("{"):
                seen += 1
        if child.poll() is None:
            status = proc_status_kb(child.pid)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    hwm = status.get("VmHWM", 0)
    return {
        "command": " ".join(command[1:]),
        "transcripts": seen,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(hwm / 1024, 1),
        "rss_mb": round(status.get("VmRSS", 0) / 1024, 1),
        "exit_code": child.returncode,
        "status": "ok" if hwm and seen >= transcripts else "error",
    }
