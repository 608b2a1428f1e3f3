"""The HTTP port (``http.port``, 8080): what it serves and the limits it serves them under.

One port serves the console, the OpenAI-compatible API, OpenAI Realtime, and
the service's own ``/metrics`` (Prometheus) and ``/health`` (JSON). The routes
of the first three are handed in by whoever owns them; this module adds its
own two, the connection cap (``http.max_connections``) that ``/health`` also
reports, and the resource sampler that runs while the port is served, and
runs it all on :func:`~rtap_trio.http_server.serve_http`.

The server's name (``telemetry``: the supervised task, its port in
``ports``, a port-in-use error) is the one it had before it served more than
telemetry: logs, metrics and ``/health`` keep it.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .access import AccessPolicy
from .connections import ConnectionCap
from .health import HealthReport
from .http_server import serve_http
from .metrics import Metrics, sample_resources_every
from .settings import HttpSettings

__all__ = ["http_connections", "monitoring_routes", "serve_http_port"]


def monitoring_routes(metrics: Metrics, health: HealthReport) -> list[BaseRoute]:
    """``GET /metrics`` (Prometheus) and ``GET /health`` (JSON, 503 unless ok); HEAD too."""

    async def metrics_page(request: Request) -> Response:
        metrics.sample_resources(cpu=False)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def health_page(request: Request) -> Response:
        report = health()
        return JSONResponse(report, status_code=200 if report.get("status") == "ok" else 503)

    return [Route("/metrics", metrics_page), Route("/health", health_page)]


async def serve_http_port(
    settings: HttpSettings,
    metrics: Metrics,
    health: HealthReport,
    routes: Sequence[BaseRoute] = (),
    *,
    resource_interval_s: float = 5.0,
    policy: AccessPolicy | None = None,
    connections: ConnectionCap | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics``, ``/health`` and ``routes`` over HTTP; reports the bound port.

    Also samples the process's memory and CPU every ``resource_interval_s``
    (``telemetry.resource_interval_s``). At most ``settings.max_connections``
    connections are open (``connections`` counts them). Returns once
    ``shutdown`` is set and open connections have finished.
    """
    if connections is None:
        connections = http_connections(settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_resources_every, metrics, resource_interval_s)
        await serve_http(
            "telemetry",
            settings.bind_address,
            settings.port,
            [*monitoring_routes(metrics, health), *routes],
            policy=policy,
            connections=connections,
            shutdown=shutdown,
            task_status=task_status,
        )
        nursery.cancel_scope.cancel()  # the server has finished: so has the sampling


def http_connections(settings: HttpSettings) -> ConnectionCap:
    """The HTTP port's connection cap, for :func:`serve_http_port` and ``/health``."""
    return ConnectionCap("http", settings.max_connections, "http.max_connections")
