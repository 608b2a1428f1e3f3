"""The HTTP server on ``telemetry.port``: hypercorn's trio worker running a Starlette app.

Routes come from whoever serves something over HTTP (telemetry's ``/metrics``
and ``/health``, the OpenAI-compatible ``/v1/audio/transcriptions``); this
module only runs them, with limits on what a client may send: headers, how
long a read may take, how long an idle keep-alive connection is kept.
Hypercorn answers HEAD like GET without the body, and its errors go to the
standard library's logging, which the service routes into its JSON logs.

Paths under ``/v1/`` and ``/api/`` (speech and transcripts) pass the
:class:`~rtap_trio.access.AccessPolicy` first; ``/health``, ``/metrics`` and
the console's files do not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from .access import AccessPolicy
from .errors import PortInUseError, find_error

__all__ = ["MAX_HEADER_BYTES", "PROTECTED_PREFIXES", "serve_http"]

#: Paths that carry speech or transcripts: the access policy applies.
PROTECTED_PREFIXES = ("/v1/", "/api/")

#: Request line plus headers; more gets a 431 from hypercorn.
MAX_HEADER_BYTES = 16_384
#: A client that sends nothing for this long is dropped (slowloris).
_READ_TIMEOUT_S = 30.0
_KEEP_ALIVE_S = 5.0
#: Requests in flight when the server stops get this long to finish.
_GRACEFUL_S = 1.0


_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class _Guarded:
    """ASGI middleware: the access policy before any protected route."""

    def __init__(self, app: _App, policy: AccessPolicy) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith(PROTECTED_PREFIXES):
            refusal = self._policy.check(scope["headers"], scope["query_string"].decode("latin-1"))
            if refusal is not None:
                if scope["type"] == "websocket":
                    # Closing before accepting is refused by the server with 403.
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = json.dumps(
                    {"error": {"message": refusal.reason, "type": "invalid_request_error"}}
                ).encode()
                headers = [(b"content-type", b"application/json")]
                if refusal.status == 401:
                    headers.append((b"www-authenticate", b"Bearer"))
                await send(
                    {"type": "http.response.start", "status": refusal.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self._app(scope, receive, send)


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_http(
    what: str,
    host: str,
    port: int,
    routes: Sequence[BaseRoute],
    *,
    policy: AccessPolicy | None = None,
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
    app: _App = Starlette(routes=list(routes))
    if policy is not None:
        app = _Guarded(app, policy)

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
