"""Several instances on one host: instance N listens on every port + 10 x N.

What the systemd template ``rtap@N`` (``--instance N``) and a balancer in front
of the instances rely on (``ops/haproxy/haproxy.cfg``): instance 1's HTTP port
is 8090, its WebSocket 5812, its Wyoming 10310, its ZeroMQ 6562/6563/6564,
while the defaults (8080, 5802, 10300) are left to the balancer. Ten apart so
that the ZeroMQ ports (6552, 6553, 6554) of one instance never meet the next's.
A port of 0 (the system picks one) stays 0.
"""

from __future__ import annotations

from .schema import Settings

__all__ = ["INSTANCE_PORT_STEP", "MAX_INSTANCE", "for_instance"]

#: how far apart two instances' ports are
INSTANCE_PORT_STEP = 10
#: the highest instance number: 99 x 10 keeps every default port under 11300
MAX_INSTANCE = 99


def _moved(port: int | None, offset: int) -> int | None:
    if not port:
        return port
    if port + offset > 65_535:
        raise ValueError(f"port {port} + {offset} is past 65535")
    return port + offset


def for_instance(settings: Settings, instance: int) -> Settings:
    """``settings`` for instance ``instance`` (1-99; 0: unchanged) of several on one host."""
    if not 0 <= instance <= MAX_INSTANCE:
        raise ValueError(f"instance {instance}: expected 0 to {MAX_INSTANCE}")
    offset = INSTANCE_PORT_STEP * instance
    if offset == 0:
        return settings
    output = settings.output
    return settings.model_copy(
        update={
            "output": output.model_copy(
                update={
                    "zmq_pub_port_events": _moved(output.zmq_pub_port_events, offset),
                    "zmq_pub_port_transcripts": _moved(output.zmq_pub_port_transcripts, offset),
                    "zmq_catchup_port": _moved(output.zmq_catchup_port, offset),
                    "websocket_port": _moved(output.websocket_port, offset),
                }
            ),
            "wyoming": settings.wyoming.model_copy(
                update={"port": _moved(settings.wyoming.port, offset)}
            ),
            "http": settings.http.model_copy(update={"port": _moved(settings.http.port, offset)}),
        }
    )
