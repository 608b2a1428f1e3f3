"""The HTTP server: hypercorn's trio worker running a Starlette app, within limits.

Routes come from whoever serves something over HTTP (``http_port.py`` gathers
those of the HTTP port: ``/metrics``, ``/health``, the console, OpenAI and
Realtime); this module only runs them, with limits on what a client may send:
headers, how long a read may take, how long an idle keep-alive connection is kept.
Hypercorn answers HEAD like GET without the body, and its errors go to the
standard library's logging, which the service routes into its JSON logs.

Every request's ``Host`` is checked first (421 if it does not name this
service: DNS rebinding); paths under ``/v1/`` and ``/api/`` (speech and
transcripts) then pass the rest of the :class:`~rtap_trio.access.AccessPolicy`
(token, Origin); ``/health``, ``/metrics`` and the console's files do not.

Connections are accepted here, not by hypercorn's ``serve``: through a
:class:`~rtap_trio.connections.BoundedListener`, so that at most
``http.max_connections`` are open (more get a 503 at once) and running out
of descriptors (EMFILE) is waited out; each accepted connection is then served
by hypercorn's own connection handler, as ``serve`` would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from functools import partial
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from .access import AccessPolicy, Refusal
from .connections import BoundedListener, ConnectionCap, http_refusal
from .errors import PortInUseError
from .transport.websocket_close import POLICY
from .websocket_limits import limit_websockets

__all__ = ["MAX_HEADER_BYTES", "PROTECTED_PREFIXES", "READ_TIMEOUT_S", "serve_http"]

#: Paths that carry speech or transcripts: the access policy applies.
PROTECTED_PREFIXES = ("/v1/", "/api/")

#: Request line plus headers; more gets a 431 from hypercorn.
MAX_HEADER_BYTES = 16_384
#: A client that sends nothing for this long is dropped (slowloris). Hypercorn's
#: timer also runs while the app computes a long response: it then tells the app
#: ``http.disconnect`` and stops reading, though the response still goes out
#: (openai_http tells that from a real disconnect by when it comes).
READ_TIMEOUT_S = 30.0
_KEEP_ALIVE_S = 5.0
#: Requests in flight when the server stops get this long to finish.
_GRACEFUL_S = 1.0


_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class _Guarded:
    """ASGI middleware: the Host check before every route, the rest of the
    access policy before any protected one."""

    def __init__(self, app: _App, policy: AccessPolicy) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = self._policy.check_host(scope["headers"])
            if refusal is None and scope["path"].startswith(PROTECTED_PREFIXES):
                query = scope["query_string"].decode("latin-1")
                refusal = self._policy.check(scope["headers"], query)
            if refusal is not None:
                await _refuse(scope, send, refusal)
                return
        await self._app(scope, receive, send)


async def _refuse(scope: _Scope, send: _Send, refusal: Refusal) -> None:
    body = json.dumps(
        {"error": {"message": refusal.reason, "type": "invalid_request_error"}}
    ).encode()
    headers = [(b"content-type", b"application/json")]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if scope["type"] == "websocket":
        if refusal.status != 421:
            # Closing before accepting is refused by the server with 403.
            await send({"type": "websocket.close", "code": POLICY})
            return
        # A wrong Host gets its own status (ASGI's WebSocket denial response).
        await send({"type": "websocket.http.response.start", "status": 421, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_http(
    what: str,
    host: str,
    port: int,
    routes: Sequence[BaseRoute],
    *,
    policy: AccessPolicy | None = None,
    connections: ConnectionCap | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` until cancelled, or until ``shutdown`` is set: then no new
    connection is taken and open ones (a WebSocket saying goodbye) get
    ``_GRACEFUL_S`` to finish. Reports the bound port.

    ``connections`` caps the open connections (default: 128)."""
    config = Config()
    config.bind = [_bind(host, port)]
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.read_timeout = int(READ_TIMEOUT_S)
    config.keep_alive_timeout = _KEEP_ALIVE_S
    config.graceful_timeout = _GRACEFUL_S
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    limit_websockets(config)  # no permessage-deflate, 4 MiB messages: websocket_limits.py
    app: _App = Starlette(routes=list(routes))
    if policy is not None:
        app = _Guarded(app, policy)
    cap = connections or ConnectionCap(what, 128, "http.max_connections")
    refusal = http_refusal(
        "503 Service Unavailable", f"too many connections ({cap.setting}): try again"
    )
    try:
        sockets = config.create_sockets().insecure_sockets
        for sock in sockets:
            sock.listen(config.backlog)
    except OSError as exc:
        raise PortInUseError(what, host, port, exc.strerror or str(exc)) from None
    # What hypercorn's serve does per connection, without its accept loop.
    # No lifespan: the routes have no startup or shutdown handlers.
    context = WorkerContext(None)
    asgi = ASGIWrapper(app)  # type: ignore[arg-type]

    async def connection(stream: trio.SocketStream) -> None:
        await TCPServer(asgi, config, context, ConnectionState({}), stream)  # type: ignore[arg-type]

    async with trio.open_nursery() as connections_nursery:
        listeners = [
            BoundedListener(
                trio.SocketListener(trio.socket.from_stdlib_socket(sock)),
                cap,
                connections_nursery,
                refusal,
            )
            for sock in sockets
        ]
        async with trio.open_nursery() as accepting:
            await accepting.start(
                partial(
                    trio.serve_listeners, connection, listeners, handler_nursery=connections_nursery
                )
            )
            task_status.started(int(sockets[0].getsockname()[1]))
            if shutdown is None:
                await trio.sleep_forever()
            await shutdown.wait()
            accepting.cancel_scope.cancel()  # closes the listeners
        # Idle keep-alive connections close now, the others after their response.
        await context.terminated.set()
        connections_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
