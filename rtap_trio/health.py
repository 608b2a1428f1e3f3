"""Health: what ``GET /health`` reports, and the figures only it reads.

Apart from metrics because it is a different reader's view: an operator or a
load balancer asks "is it up, what is it doing" and gets one JSON document,
where Prometheus scrapes counters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import trio

from .connections import ConnectionCap, descriptor_budget, descriptor_limit, open_descriptors
from .sessions import SessionStatistics
from .stt import SttBackend, SttPool
from .stt.fallback import FallbackEngine
from .supervisor import TaskState, TaskStatistics

__all__ = [
    "HealthReport",
    "connections_report",
    "count_trio_tasks",
    "descriptors_report",
    "failed_tasks",
    "runtime_report",
    "service_status",
    "sessions_report",
    "stt_report",
    "tasks_report",
]

#: Builds the ``/health`` document; its ``status`` is ``ok`` when all is well.
HealthReport = Callable[[], dict[str, Any]]


def count_trio_tasks() -> int:
    """Every task of the running trio run: a leak (a session's task left behind) shows here."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    root = trio.lowlevel.current_root_task()
    return count(root) if root is not None else 0


def service_status(running: bool, draining: bool, stopping: bool, degraded: bool) -> str:
    """``/health``'s status: "ok" answers 200, any other 503 (a balancer's check)."""
    if not running:
        return "starting"
    if draining:
        return "draining"
    if stopping:
        return "stopping"
    return "degraded" if degraded else "ok"


def runtime_report() -> dict[str, int]:
    """What the process runs: trio tasks and threads (a leak shows as growth)."""
    return {"trio_tasks": count_trio_tasks(), "threads": threading.active_count()}


def descriptors_report(caps: dict[str, int]) -> dict[str, int | None]:
    """Descriptors open, the limit, and what the connection caps need at most."""
    return {
        "open": open_descriptors(),
        "limit": descriptor_limit(),
        "budget": descriptor_budget(caps).needed,
    }


def connections_report(
    caps: Iterable[ConnectionCap], wyoming: tuple[int, int] | None = None
) -> dict[str, dict[str, int | bool]]:
    """Open connections per server against its cap: ``saturated`` when new
    ones are being refused. ``wyoming``: its (open, max), counted apart."""
    report: dict[str, dict[str, int | bool]] = {}
    for cap in caps:
        stats: dict[str, int | bool] = dict(cap.statistics())
        stats["saturated"] = cap.open >= cap.cap
        report[cap.what] = stats
    if wyoming is not None:
        open_, limit = wyoming
        report["wyoming"] = {"open": open_, "max": limit, "saturated": open_ >= limit}
    return report


def tasks_report(statistics: Mapping[str, TaskStatistics]) -> dict[str, dict[str, Any]]:
    """Each supervised task's state, starts and crashes."""
    return {
        name: {"state": stats.state.value, "starts": stats.starts, "crashes": stats.crashes}
        for name, stats in statistics.items()
    }


def failed_tasks(statistics: Mapping[str, TaskStatistics]) -> list[str]:
    """The tasks that crashed past their restart policy: the service is degraded."""
    return [name for name, stats in statistics.items() if stats.state is TaskState.FAILED]


def sessions_report(sessions: Sequence[SessionStatistics], max_sessions: int) -> dict[str, Any]:
    """Sessions running now, by kind and one by one, against ``sessions.max``."""
    by_kind: dict[str, int] = {}
    for session in sessions:
        by_kind[session.kind] = by_kind.get(session.kind, 0) + 1
    return {
        "active": len(sessions),
        "max": max_sessions,
        "by_kind": by_kind,
        "list": [
            {"session_id": s.session_id, "kind": s.kind, "state": s.state.value} for s in sessions
        ],
    }


def stt_report(stt: SttBackend | None) -> dict[str, Any] | None:
    """The STT engines: which model on which device, how many busy, how many waiting."""
    if stt is None:
        return None
    statistics = stt.statistics()
    report: dict[str, Any] = {
        "model": stt.name,
        "device": stt.device,
        "device_fallback": stt.device_fallback,
        "engines": statistics.engines,
        "busy": statistics.busy,
        "waiting": statistics.waiting,
    }
    circuit = _circuit_report(stt)
    if circuit is not None:
        report["circuit"] = circuit
    return report


def _circuit_report(stt: SttBackend) -> dict[str, Any] | None:
    """With a fallback (``stt.fallback``): whether the primary engine is being
    asked (``closed``), shut out (``open``) or probed (``half_open``). The
    pool's engines share one circuit: one remote, one state."""
    if not isinstance(stt, SttPool):
        return None
    for engine in stt.engines:
        if isinstance(engine, FallbackEngine):
            circuit = engine.circuit
            return {
                "state": circuit.state.value,
                "failures": circuit.failures,
                "retry_in_s": circuit.retry_in_s,
                "diverted": circuit.diverted,
            }
    return None
