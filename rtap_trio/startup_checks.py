"""What a service checks of its listening settings as it starts, before it binds:
each server's connection cap against the process's descriptor limit, and the
servers reachable from other machines without authentication.

Apart from the composition root because these are plans and warnings, not
wiring: what every enabled server may hold open at most, summed against
``ulimit -n`` (docs/operations.md, "Descriptors"), and who could listen in.
The mechanism (caps, refusals, the budget) is ``connections.py``.
"""

from __future__ import annotations

from loguru import logger

from .connections import (
    MAX_REFUSING,
    WEBSOCKET_HANDSHAKE_ROOM,
    DescriptorBudget,
    descriptor_budget,
    raise_descriptor_limit,
)
from .settings import Settings, is_loopback

__all__ = ["check_descriptors", "connection_caps", "warn_if_unauthenticated"]


def connection_caps(settings: Settings) -> dict[str, int]:
    """Each enabled server's connection cap, refusals in flight included."""
    caps: dict[str, int] = {}
    if settings.http.enabled:
        caps["http"] = settings.http.max_connections + MAX_REFUSING
    if settings.output.websocket_enabled:
        caps["websocket"] = (
            settings.output.websocket_max_clients + WEBSOCKET_HANDSHAKE_ROOM + MAX_REFUSING
        )
    if settings.wyoming.enabled:
        caps["wyoming"] = settings.wyoming.max_connections
    if settings.output.zmq_enabled:
        zmq_ports = 2 + (settings.output.zmq_catchup_port is not None)
        caps["zmq"] = zmq_ports * (settings.output.zmq_max_connections + MAX_REFUSING)
    return caps


def check_descriptors(settings: Settings) -> DescriptorBudget:
    """Lift the soft descriptor limit to the hard one; warn if the caps do
    not fit under it (then a flood ends in EMFILE, which the servers wait
    out, instead of in a refusal). The limit is the process's."""
    log = logger.bind(component="service")
    before, after = raise_descriptor_limit()
    if after != before:
        log.info("descriptor limit raised from {} to {}", before, after)
    budget = descriptor_budget(connection_caps(settings))
    if not budget.fits:
        log.warning(
            "connection caps need {} descriptors ({}) but the limit is {}: lower "
            "the caps or raise the limit (LimitNOFILE, ulimit -n)",
            budget.needed,
            budget.describe(),
            budget.limit,
        )
    return budget


def warn_if_unauthenticated(settings: Settings) -> None:
    """One warning line when ZeroMQ or Wyoming is reachable from other machines."""
    # The WebSocket and HTTP servers check the token (settings refuse an
    # exposed address without one); ZeroMQ and Wyoming have no place for one.
    output = settings.output
    unauthenticated = [
        what
        for what, enabled in (
            ("ZeroMQ", output.zmq_enabled),
            ("Wyoming", settings.wyoming.enabled),
        )
        if enabled
    ]
    if unauthenticated and not is_loopback(output.bind_address):
        logger.bind(component="service").warning(
            "{} on {} without authentication (the protocol has none): anyone who can "
            "reach this address can read transcripts{}; firewall it to the hosts that need it",
            " and ".join(unauthenticated),
            output.bind_address,
            " and stream audio in" if settings.wyoming.enabled else "",
        )
