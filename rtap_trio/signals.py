"""SIGINT and SIGTERM: the first begins a graceful stop, a second one stops at once.

Apart from the composition root because it is the operator's side of the
shutdown: systemd and podman send SIGTERM and wait ``supervisor.shutdown_grace_s``;
a person at a terminal who presses Ctrl-C twice will not wait for the drain.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import trio
from loguru import logger

__all__ = ["watch_signals"]


async def watch_signals(
    stopping: Callable[[], bool], stop: Callable[[], None], stop_now: Callable[[], None]
) -> None:
    """Call ``stop()`` on a signal, ``stop_now()`` on one that comes while ``stopping()``."""
    log = logger.bind(component="service")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not stopping():
                log.info("{} received: stopping", name)
                stop()
            else:
                # A second signal: the user will not wait for the drain.
                log.warning("{} received again: stopping now", name)
                stop_now()
