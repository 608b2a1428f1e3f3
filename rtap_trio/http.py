"""The HTTP server on ``telemetry.port``: hypercorn's trio worker running a Starlette app.

Routes come from whoever serves something over HTTP (telemetry's ``/metrics``
and ``/health``, the OpenAI-compatible ``/v1/audio/transcriptions``); this
module only runs them, with limits on what a client may send: headers, how
long a read may take, how long an idle keep-alive connection is kept.
Hypercorn answers HEAD like GET without the body, and its errors go to the
standard library's logging, which the service routes into its JSON logs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from .errors import PortInUseError, find_error

__all__ = ["MAX_HEADER_BYTES", "serve_http"]

#: Request line plus headers; more gets a 431 from hypercorn.
MAX_HEADER_BYTES = 16_384
#: A client that sends nothing for this long is dropped (slowloris).
_READ_TIMEOUT_S = 30.0
_KEEP_ALIVE_S = 5.0
#: Requests in flight when the server stops get this long to finish.
_GRACEFUL_S = 1.0


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_http(
    what: str,
    host: str,
    port: int,
    routes: Sequence[BaseRoute],
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` until cancelled, or until ``shutdown`` is set: then no new
    connection is taken and open ones (a WebSocket saying goodbye) get
    ``_GRACEFUL_S`` to finish. Reports the bound port."""
    config = Config()
    config.bind = [_bind(host, port)]
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.read_timeout = int(_READ_TIMEOUT_S)
    config.keep_alive_timeout = _KEEP_ALIVE_S
    config.graceful_timeout = _GRACEFUL_S
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    app = Starlette(routes=list(routes))

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(
            app,  # type: ignore[arg-type]
            config,
            shutdown_trigger=shutdown.wait if shutdown is not None else None,
            task_status=task_status,
            mode="asgi",
        )

    async with trio.open_nursery() as nursery:
        try:
            binds: list[str] = await nursery.start(run)
        except BaseException as exc:  # hypercorn binds inside its nurseries: maybe in a group
            bind_error = find_error(exc, OSError)
            if bind_error is None:
                raise
            reason = bind_error.strerror or str(bind_error)
            raise PortInUseError(what, host, port, reason) from None
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
