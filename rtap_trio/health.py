"""Health: what ``GET /health`` reports, and the figures only it reads.

Apart from metrics because it is a different reader's view: an operator or a
load balancer asks "is it up, what is it doing" and gets one JSON document,
where Prometheus scrapes counters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

__all__ = ["HealthReport", "count_trio_tasks"]

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
