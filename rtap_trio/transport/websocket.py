"""WebSocket server: the service's messages to watchers, and routes for other handlers.

Each watching client gets its own bounded outbox subscription (oldest message
dropped when it falls behind, counted), so a slow browser never holds up the
pipeline or the other clients. Each text message is one JSON object as on
ZeroMQ; its ``kind`` and ``type`` fields tell what it is. Paths registered with
:meth:`WebSocketServer.route` (``/v1/audio``) go to their own handler instead.

A failure of one connection is that connection's failure, never the
listener's: whatever a handler raises (a client that resets its socket right
after the handshake, one that leaves while it is sent its first message) is
counted and logged, and the slot it held is given back.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import trio
from loguru import logger
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from ..errors import PortInUseError, only_errors
from ..settings import OutputSettings
from ..telemetry import Metrics
from .outbox import Outbox
from .schemas import Stream

__all__ = ["ConnectionHandler", "WebSocketServer"]

#: A close handshake the client does not answer within this is abandoned.
CLOSE_TIMEOUT_S = 1.0

#: Serves one accepted connection until it ends; ``client`` numbers it in logs.
ConnectionHandler = Callable[[WebSocketConnection, int], Awaitable[None]]


#: What a client going away raises, possibly wrapped in exception groups.
_DISCONNECTS = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class WebSocketServer:
    def __init__(
        self,
        settings: OutputSettings,
        outbox: Outbox,
        metrics: Metrics,
        *,
        send_budget_s: float = 0.5,
    ) -> None:
        self._settings = settings
        self._send_budget_s = send_budget_s
        self._outbox = outbox
        self._metrics = metrics
        self._ids = itertools.count(1)
        self._routes: dict[str, ConnectionHandler] = {}
        self.clients = 0
        self.port = settings.websocket_port
        self._closing = trio.Event()
        self._no_clients = trio.Event()
        self._no_clients.set()

    def route(self, path: str, handler: ConnectionHandler) -> None:
        """Connections to ``path`` are served by ``handler`` instead of the watcher."""
        self._routes[path] = handler

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or :meth:`close`; reports the bound port."""
        host = self._settings.bind_address
        async with trio.open_nursery() as nursery:
            try:
                server = await nursery.start(
                    lambda task_status: serve_websocket(
                        self._handle,
                        host,
                        self.port,
                        None,
                        max_message_size=self._settings.websocket_max_message_bytes,
                        disconnect_timeout=CLOSE_TIMEOUT_S,
                        task_status=task_status,
                    )
                )
            except OSError as exc:
                raise PortInUseError(
                    "websocket", host, self.port, exc.strerror or str(exc)
                ) from None
            # After a restart the same port is bound again, even if it was 0.
            self.port = server.port
            task_status.started(self.port)
            await self._closing.wait()
            nursery.cancel_scope.cancel()

    async def drained(self) -> None:
        """Wait until every client has been sent what was queued and has gone."""
        await self._no_clients.wait()

    def close(self) -> None:
        """Stop accepting; connected clients get what is queued, then a close frame."""
        self._closing.set()

    async def _handle(self, request: WebSocketRequest) -> None:
        # The slot is taken before the first await, so that concurrent
        # handshakes cannot all pass the check before any of them counts.
        if self.clients >= self._settings.websocket_max_clients:
            self._metrics.errors.labels("websocket", "too_many_clients").inc()
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                try:
                    await request.reject(503, body=b"too many clients")
                except Exception as exc:
                    if not only_errors(exc, *_DISCONNECTS):
                        raise
            return
        self.clients += 1
        self._no_clients = trio.Event()
        self._metrics.websocket_clients.set(self.clients)
        client = next(self._ids)
        log = logger.bind(component="websocket", client=client)
        path = request.path.split("?", 1)[0]
        try:
            ws = await request.accept()
            log.debug("client connected to {}", path)
            handler = self._routes.get(path, self._watch)
            await handler(ws, client)
        except Exception as exc:
            if only_errors(exc, *_DISCONNECTS):
                log.debug("client gone: {}", type(exc).__name__)
            else:
                self._metrics.errors.labels("websocket", type(exc).__name__).inc()
                log.opt(exception=exc).warning("connection failed: {}", exc)
        finally:
            self.clients -= 1
            if self.clients == 0:
                self._no_clients.set()
            self._metrics.websocket_clients.set(self.clients)
            log.debug("client disconnected")

    async def _watch(self, ws: WebSocketConnection, client: int) -> None:
        """Every event and transcript of the service, until the client or the service goes."""
        log = logger.bind(component="websocket", client=client)
        subscription = self._outbox.subscribe(
            f"websocket-{client}",
            (Stream.EVENTS, Stream.TRANSCRIPTS),
            self._settings.websocket_client_queue,
        )
        with subscription:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drain_incoming, ws, nursery.cancel_scope)
                async for item in subscription.receive:
                    with trio.move_on_after(self._send_budget_s) as budget:
                        await ws.send_message(item.payload.decode())
                    if budget.cancelled_caught:
                        # A client that cannot take one message within the
                        # emit budget is stuck: free its resources.
                        self._metrics.budget_exceeded.labels("emit").inc()
                        self._metrics.errors.labels("websocket", "send_timeout").inc()
                        log.warning("client stuck for {:g}s: disconnected", self._send_budget_s)
                        # Its closing handshake cannot complete either.
                        with trio.move_on_after(CLOSE_TIMEOUT_S):
                            await ws.aclose(code=1013, reason="too slow")
                        break
                else:  # the outbox closed: the service is stopping
                    with trio.move_on_after(CLOSE_TIMEOUT_S):
                        await ws.aclose(code=1001, reason="service stopping")
                nursery.cancel_scope.cancel()

    @staticmethod
    async def _drain_incoming(ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        # Watchers have nothing to say; reading is how a disconnect is noticed.
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            scope.cancel()
