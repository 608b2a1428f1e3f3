"""The service's own events: ``service_started`` once it serves, and a
``heartbeat`` every ``output.heartbeat_interval_s`` until it stops.

Apart from the composition root because others depend on them: a subscriber
(the standby, an agent, the console) learns the bound ports and the model
from the first, and knows the service is gone when it stops hearing the
second, even when nobody speaks (docs/reliability.md).
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from loguru import logger

from .audio import AudioSource
from .events import Heartbeat, ServiceStarted
from .sessions import Session
from .stt import SttBackend
from .transport.outbox import Outbox, SessionOutbox

__all__ = ["announce_start", "send_heartbeats"]


def announce_start(
    events: SessionOutbox,
    source: AudioSource | None,
    stt: SttBackend,
    ports: dict[str, int | None],
    profile: str,
    local_session: Session | None,
) -> None:
    """``service_started`` (the bound ports, the model, the local session), and its log line."""
    name = source.name if source is not None else "none"
    events.event(
        ServiceStarted(
            source=name,
            model=stt.name,
            stt_device=stt.device,
            stt_device_fallback=stt.device_fallback,
            ports=ports,
            profile=profile,
            local_session_id=local_session.id if local_session else None,
        )
    )
    logger.bind(component="service").info(
        "RTAP running: profile {} source {} model {} ports {}", profile, name, stt.name, ports
    )


async def send_heartbeats(
    events: SessionOutbox,
    outbox: Outbox,
    interval_s: float,
    stopped: trio.Event,
    *,
    sessions: Callable[[], int],
    role: str,
) -> None:
    """A ``heartbeat`` on ``events`` every ``interval_s`` until ``stopped`` is set:
    uptime, ``sessions()`` running, the next sequence number of ``outbox``, ``role``."""
    started = trio.current_time()
    while not stopped.is_set():
        events.event(
            Heartbeat(
                uptime_s=round(trio.current_time() - started, 1),
                sessions=sessions(),
                next_seq=outbox.statistics().published,
                role=role,
            )
        )
        with trio.move_on_after(interval_s):
            await stopped.wait()
