"""The service's critical tasks: its servers and emitters, under the supervisor.

Apart from the composition root because it is a policy of its own: a task
whose port is still held (the previous process of a restart is closing) is
retried with backoff for ``supervisor.bind_retry_s``; a task that crashes past
its restart policy is handed to ``on_exhausted``, which stops the service
gracefully so that systemd or podman restart it (the design's "critical
errors -> graceful restart").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from loguru import logger

from .errors import PortInUseError, RestartsExhaustedError, find_error
from .supervisor import Supervisor

__all__ = ["CriticalTasks"]

_T = TypeVar("_T")


class CriticalTasks:
    """Runs service tasks under ``supervisor``; see the module's docstring."""

    def __init__(
        self,
        supervisor: Supervisor,
        bind_retry_s: float,
        on_exhausted: Callable[[str, RestartsExhaustedError], None],
    ) -> None:
        self._supervisor = supervisor
        self._bind_retry_s = bind_retry_s
        self._on_exhausted = on_exhausted

    async def run(
        self,
        name: str,
        fn: Callable[..., Awaitable[object]],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> bool:
        """Run ``fn`` as the supervised task ``name``; False if it crashed past its policy."""
        try:
            await self.retry_bind(
                name, lambda: self._supervisor.supervise_started(name, fn, task_status=task_status)
            )
        except RestartsExhaustedError as exc:
            self._on_exhausted(name, exc)
            return False
        return True

    async def retry_bind(self, name: str, start: Callable[[], Awaitable[_T]]) -> _T:
        """``start()``, again with backoff while its port is taken, up to ``bind_retry_s``."""
        policy = self._supervisor.policy
        deadline = trio.current_time() + self._bind_retry_s
        attempt = 0
        while True:
            try:
                return await start()
            except Exception as exc:  # a server binds inside its nursery: maybe in a group
                taken = find_error(exc, PortInUseError)
                attempt += 1
                delay = policy.backoff(attempt)
                if taken is None or trio.current_time() + delay > deadline:
                    raise
                logger.bind(component="service").warning("{}: retrying in {:.1f}s", taken, delay)
                await trio.sleep(delay)
