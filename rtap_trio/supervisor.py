"""Supervised tasks: restart a crashed stage or emitter under a policy.

A task that returns has finished its work (its input ended) and is not
restarted. A task that raises is logged, counted and restarted after an
exponential backoff, unless it crashed more than ``max_restarts`` times within
``window_s``: then :class:`RestartsExhaustedError` ends the service. Errors that
no restart can mend (bad settings, a missing model, a taken port) propagate at
once.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from loguru import logger

from .errors import ConfigError, ModelError, PortInUseError, RestartsExhaustedError, find_error
from .settings import SupervisorSettings

__all__ = [
    "CrashHook",
    "RestartPolicy",
    "Saboteur",
    "StartHook",
    "Supervisor",
    "TaskState",
    "TaskStatistics",
]


class _FirstStart:
    """A task status that forwards only the first ``started()``."""

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self._inner = inner
        self.reported = False

    def started(self, value: Any = None) -> None:
        if not self.reported:
            self.reported = True
            self._inner.started(value)


#: Errors a restart cannot mend.
FATAL_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ModelError, PortInUseError)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: SupervisorSettings) -> RestartPolicy:
        return cls(
            max_restarts=settings.max_restarts,
            window_s=settings.window_s,
            backoff_initial_s=settings.backoff_initial_s,
            backoff_max_s=settings.backoff_max_s,
        )

    def backoff(self, consecutive: int) -> float:
        """Delay before restart number ``consecutive`` (1-based) of a crash streak."""
        delay = self.backoff_initial_s * 2.0 ** max(consecutive - 1, 0)
        return float(min(delay, self.backoff_max_s))


class TaskState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass(slots=True)
class TaskStatistics:
    name: str
    state: TaskState = TaskState.STARTING
    starts: int = 0
    crashes: int = 0
    last_error: str | None = None
    recent_crashes: collections.deque[float] = field(default_factory=collections.deque)


CrashHook = Callable[[str, BaseException], None]
#: A fault that runs beside one run of a task: what it raises crashes that run.
Saboteur = Callable[[], Awaitable[None]]
#: Awaited before each start of a task, with its name: raising makes that start
#: a crash, sleeping stalls it, and a :data:`Saboteur` it returns runs beside
#: the task (to crash it later). How tests inject faults without touching the
#: code they test.
StartHook = Callable[[str], Awaitable[Saboteur | None]]


class Supervisor:
    """Runs callables under a :class:`RestartPolicy` and keeps their statistics.

    It owns no nursery: ``await nursery.start(supervisor.supervise, name, fn)``
    puts the supervised task where the caller can see it.
    """

    def __init__(
        self,
        policy: RestartPolicy,
        on_crash: CrashHook | None = None,
        *,
        before_start: StartHook | None = None,
    ) -> None:
        self.policy = policy
        self._on_crash = on_crash
        self._before_start = before_start
        self._tasks: dict[str, TaskStatistics] = {}

    async def supervise(
        self,
        name: str,
        fn: Callable[[], Awaitable[object]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``fn`` until it returns, restarting it when it crashes.

        Reports started at once: ``fn`` has nothing to report.
        """
        task_status.started()
        await self._loop(name, fn)

    async def supervise_started(
        self,
        name: str,
        fn: Callable[..., Awaitable[object]],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Like :meth:`supervise` for ``fn(task_status=...)`` (a server reporting its port).

        The first successful start is reported to the caller; restarts report
        to nobody. A crash before the first start is raised to the caller.
        """
        status = _FirstStart(task_status)

        async def run() -> object:
            if not status.reported:
                return await fn(task_status=status)
            return await fn(task_status=trio.TASK_STATUS_IGNORED)

        await self._loop(name, run, restart=lambda: status.reported)

    async def _loop(
        self,
        name: str,
        fn: Callable[[], Awaitable[object]],
        restart: Callable[[], bool] = lambda: True,
    ) -> None:
        stats = self._tasks.setdefault(name, TaskStatistics(name))
        while True:
            stats.state = TaskState.RUNNING
            stats.starts += 1
            try:
                saboteur = await self._before_start(name) if self._before_start else None
                if saboteur is None:
                    await fn()
                else:
                    await _beside(fn, saboteur)
            except Exception as exc:
                # No restart mends these, raised bare or from inside a nursery.
                if any(find_error(exc, kind) for kind in FATAL_ERRORS) or not restart():
                    stats.state = TaskState.FAILED
                    raise
                now = trio.current_time()
                stats.crashes += 1
                stats.last_error = f"{type(exc).__name__}: {exc}"
                stats.recent_crashes.append(now)
                while stats.recent_crashes and now - stats.recent_crashes[0] > self.policy.window_s:
                    stats.recent_crashes.popleft()
                logger.bind(component="supervisor", stage=name).opt(exception=exc).error(
                    "task {} crashed ({}): {}", name, type(exc).__name__, exc
                )
                if self._on_crash is not None:
                    self._on_crash(name, exc)
                if len(stats.recent_crashes) > self.policy.max_restarts:
                    stats.state = TaskState.FAILED
                    raise RestartsExhaustedError(
                        name, len(stats.recent_crashes), self.policy.window_s, exc
                    ) from exc
                stats.state = TaskState.BACKING_OFF
                # Backoff grows with the crashes inside the window, so a task that
                # crashed once long ago restarts fast again.
                await trio.sleep(self.policy.backoff(len(stats.recent_crashes)))
                continue
            stats.state = TaskState.FINISHED
            return

    def statistics(self) -> dict[str, TaskStatistics]:
        return dict(self._tasks)


async def _beside(fn: Callable[[], Awaitable[object]], saboteur: Saboteur) -> None:
    """``fn()`` with ``saboteur()`` beside it; the first to fail fails the run."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(saboteur)
            await fn()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # the run failed as that one exception
            raise group.exceptions[0] from None
        raise
