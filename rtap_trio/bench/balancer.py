"""Instances behind the real HAProxy with the shipped ``ops/haproxy/haproxy.cfg``.

What the concurrency bench (``bench --balance N``) and the balancer drills
(``tests/test_balancer.py``) stand up: the configuration is used as shipped,
its ports given by the environment variables it reads (``RTAP_BALANCER_*``
for its own, ``RTAP_HTTP_N``, ``RTAP_WS_N``, ``RTAP_WYOMING_N`` for instance
N's), so that a test or a bench on free ports checks the very file an
operator installs. HAProxy itself balances, checks ``/health`` and exports
its metrics; nothing here does any of that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .common import REPO, ServicePorts, free_port, service_child

__all__ = [
    "HAPROXY_CONFIG",
    "BalancerPorts",
    "behind_haproxy",
    "haproxy_binary",
    "haproxy_environment",
    "servers_up",
]

#: the configuration an operator installs (``ops/systemd/rtap-haproxy.service``)
HAPROXY_CONFIG = REPO / "ops" / "haproxy" / "haproxy.cfg"


def haproxy_binary() -> str | None:
    """Debian's haproxy (in /usr/sbin, which a user's PATH may lack), or None."""
    found = shutil.which("haproxy")
    if found is None and Path("/usr/sbin/haproxy").exists():
        found = "/usr/sbin/haproxy"
    return found


@dataclass(frozen=True, slots=True)
class BalancerPorts:
    """The balancer's own ports, where clients connect (free ones by default)."""

    http: int = field(default_factory=free_port)
    websocket: int = field(default_factory=free_port)
    wyoming: int = field(default_factory=free_port)
    stats: int = field(default_factory=free_port)


def haproxy_environment(
    front: BalancerPorts, instances: Sequence[ServicePorts], socket_path: Path
) -> dict[str, str]:
    """What the shipped configuration reads: instance N is ``instances[N - 1]``
    (at most 3, the servers it names). Wyoming ports are left unused."""
    if not 1 <= len(instances) <= 3:
        raise ValueError("ops/haproxy/haproxy.cfg names servers for 1 to 3 instances")
    env = {
        "RTAP_BALANCER_ADDRESS": "127.0.0.1",
        "RTAP_BALANCER_HTTP": str(front.http),
        "RTAP_BALANCER_WS": str(front.websocket),
        "RTAP_BALANCER_WYOMING": str(front.wyoming),
        "RTAP_BALANCER_STATS": str(front.stats),
        "RTAP_HAPROXY_SOCKET": str(socket_path),
    }
    for number, ports in enumerate(instances, start=1):
        env[f"RTAP_HTTP_{number}"] = str(ports.telemetry)
        env[f"RTAP_WS_{number}"] = str(ports.websocket)
        env[f"RTAP_WYOMING_{number}"] = str(free_port())
    return env


def _up_servers(stats_port: int, backend: str) -> int:
    url = f"http://127.0.0.1:{stats_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return -1
    prefix = f'haproxy_server_status{{proxy="{backend}"'
    return sum(
        1
        for line in text.splitlines()
        if line.startswith(prefix) and 'state="UP"' in line and line.endswith(" 1")
    )


async def servers_up(
    stats_port: int, count: int, *, backend: str = "rtap_websocket", limit_s: float = 30
) -> None:
    """Until HAProxy's own exporter counts ``count`` servers of ``backend`` UP."""
    with trio.fail_after(limit_s):
        while True:  # polled: HAProxy says nothing unless asked
            if await trio.to_thread.run_sync(_up_servers, stats_port, backend) == count:
                return
            await trio.sleep(0.2)


@asynccontextmanager
async def behind_haproxy(
    command: Sequence[str], count: int, *, limit_s: float = 120
) -> AsyncIterator[tuple[list[trio.Process], BalancerPorts]]:
    """``count`` service children of ``command`` (each on free ports, healthy)
    and haproxy in front of them, yielded once it has every one in rotation."""
    binary = haproxy_binary()
    if binary is None:
        raise RuntimeError("no haproxy: scripts/setup.sh installs it")
    async with AsyncExitStack() as stack:
        children = [
            await stack.enter_async_context(service_child(command, limit_s=limit_s))
            for _ in range(count)
        ]
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rtap-haproxy-")))
        front = BalancerPorts()
        env = {
            **os.environ,
            **haproxy_environment(front, [ports for _, ports in children], folder / "admin.sock"),
        }
        haproxy = await trio.lowlevel.open_process(
            [binary, "-W", "-db", "-f", str(HAPROXY_CONFIG)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await servers_up(front.stats, count)
            yield [child for child, _ in children], front
        finally:
            haproxy.terminate()
            with trio.move_on_after(10) as waited:
                await haproxy.wait()
            if waited.cancelled_caught:
                haproxy.kill()
                await haproxy.wait()
