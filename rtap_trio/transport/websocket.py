"""WebSocket server: the service's messages to watchers, and routes for other handlers.

Every connection passes the access policy first (Host, token, Origin). A watching
client chooses streams and sessions (``?topics=events,transcripts,levels&
sessions=<id>,<id>``, or a ``subscribe`` message at any time) and gets its own
bounded outbox subscription: when it falls behind its oldest messages are
dropped, counted, and it is told so in a ``messages_dropped`` notice; past
``websocket_client_max_dropped`` it is disconnected (1013), and one that cannot
take a single message within the emit budget is disconnected at once. So a slow
browser never holds up the pipeline or the other clients. Each text message is
one JSON object as on ZeroMQ; its ``kind`` and ``type`` fields tell what it is.
Paths registered with :meth:`WebSocketServer.route` (``/v1/audio``) go to their
own handler instead.

A failure of one connection is that connection's failure, never the
listener's: whatever a handler raises (a client that resets its socket right
after the handshake, one that leaves while it is sent its first message) is
counted and logged, and the slot it held is given back.

Connections are accepted through a
:class:`~rtap_trio.connections.BoundedListener`: ``websocket_max_clients``
clients plus :data:`~rtap_trio.connections.WEBSOCKET_HANDSHAKE_ROOM` still in
their opening handshake are open at most (more get a 503 at once), and running
out of descriptors (EMFILE) is waited out.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

import trio
from loguru import logger
from pydantic import ValidationError
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest
from trio_websocket import WebSocketServer as _TrioWebSocketServer

from ..access import AccessPolicy
from ..connections import (
    WEBSOCKET_HANDSHAKE_ROOM,
    BoundedListener,
    ConnectionCap,
    http_refusal,
)
from ..errors import PortInUseError, only_errors, validation_problem
from ..metrics import Metrics
from ..settings import OutputSettings, SecuritySettings
from .outbox import Outbox, Subscription
from .schemas import Stream, SubscribeRequest, WatcherNotice
from .websocket_close import GOING_AWAY, POLICY, TRY_AGAIN, UNSUPPORTED_DATA, close_reason

__all__ = ["ConnectionHandler", "WebSocketServer"]

#: A close handshake the client does not answer within this is abandoned.
CLOSE_TIMEOUT_S = 1.0
#: A client that connects and does not finish its opening handshake within this
#: is dropped: trio-websocket's default (60 s) let 200 such connections hold
#: 200 tasks for a minute.
HANDSHAKE_TIMEOUT_S = 5.0

#: Serves one accepted connection until it ends; ``client`` numbers it in logs.
ConnectionHandler = Callable[[WebSocketConnection, int], Awaitable[None]]


#: What a client going away raises, possibly wrapped in exception groups.
_DISCONNECTS = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)

#: What a watcher gets when it does not say.
DEFAULT_TOPICS = (Stream.EVENTS, Stream.TRANSCRIPTS)


class _BadRequest(Exception):
    """A watcher asked for something that does not exist: close with this reason."""


def _watch_request(query: str) -> tuple[tuple[Stream, ...], list[str] | None]:
    """Topics and sessions from a watcher's query string."""
    params = parse_qs(query)
    topics: tuple[Stream, ...] = DEFAULT_TOPICS
    sessions: list[str] | None = None
    if "topics" in params:
        names = [t for t in ",".join(params["topics"]).split(",") if t]
        try:
            topics = tuple(dict.fromkeys(Stream(name) for name in names))
        except ValueError:
            known = ", ".join(s.value for s in Stream)
            raise _BadRequest(f"unknown topic in {names!r}; known: {known}") from None
        if not topics:
            raise _BadRequest("topics is empty")
    if "sessions" in params:
        sessions = [s for s in ",".join(params["sessions"]).split(",") if s][:256]
    return topics, sessions


class WebSocketServer:
    def __init__(
        self,
        settings: OutputSettings,
        outbox: Outbox,
        metrics: Metrics,
        *,
        security: SecuritySettings | None = None,
        service_id: str = "",
        send_budget_s: float = 0.5,
    ) -> None:
        self._settings = settings
        self._policy = AccessPolicy(security or SecuritySettings(), settings.bind_address)
        #: open connections against their cap, for /health
        self.connections = ConnectionCap(
            "websocket",
            settings.websocket_max_clients + WEBSOCKET_HANDSHAKE_ROOM,
            "output.websocket_max_clients",
        )
        self._service_id = service_id
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
        try:
            listeners = await trio.open_tcp_listeners(self.port, host=host)
        except OSError as exc:
            raise PortInUseError("websocket", host, self.port, exc.strerror or str(exc)) from None
        refusal = http_refusal("503 Service Unavailable", "too many connections", json_body=False)
        async with trio.open_nursery() as nursery:
            bounded = [BoundedListener(li, self.connections, nursery, refusal) for li in listeners]
            server = _TrioWebSocketServer(
                self._handle,
                bounded,  # type: ignore[arg-type]  # any trio Listener serves; only .port needs more
                handler_nursery=nursery,
                max_message_size=self._settings.websocket_max_message_bytes,
                connect_timeout=HANDSHAKE_TIMEOUT_S,
                disconnect_timeout=CLOSE_TIMEOUT_S,
            )
            await nursery.start(server.run)
            # After a restart the same port is bound again, even if it was 0.
            self.port = int(listeners[0].socket.getsockname()[1])
            task_status.started(self.port)
            await self._closing.wait()
            nursery.cancel_scope.cancel()

    async def drained(self) -> None:
        """Wait until every client has been sent what was queued and has gone."""
        await self._no_clients.wait()

    def close(self) -> None:
        """Stop accepting; connected clients get what is queued, then a close frame."""
        self._closing.set()

    async def _reject(self, request: WebSocketRequest, status: int, reason: str) -> None:
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            try:
                await request.reject(status, body=reason.encode())
            except Exception as exc:
                if not only_errors(exc, *_DISCONNECTS):
                    raise

    async def _handle(self, request: WebSocketRequest) -> None:
        path, _, query = request.path.partition("?")
        # wsproto takes Host out of the headers it hands on: it is on the
        # request event, which trio-websocket keeps private. Read directly, so
        # that a change there fails every handshake (logged) rather than
        # passing every Host.
        host: str = request._event.host
        refusal = self._policy.check_host_value(host) or self._policy.check(request.headers, query)
        if refusal is not None:
            self._metrics.errors.labels("websocket", f"refused_{refusal.status}").inc()
            logger.bind(component="websocket").info("refused: {}", refusal.reason)
            await self._reject(request, refusal.status, refusal.reason)
            return
        # The slot is taken before the first await, so that concurrent
        # handshakes cannot all pass the check before any of them counts.
        if self.clients >= self._settings.websocket_max_clients:
            self._metrics.errors.labels("websocket", "too_many_clients").inc()
            await self._reject(request, 503, "too many clients")
            return
        self.clients += 1
        self._no_clients = trio.Event()
        self._metrics.websocket_clients.set(self.clients)
        client = next(self._ids)
        log = logger.bind(component="websocket", client=client)
        try:
            handler = self._routes.get(path)
            if handler is None:
                try:
                    topics, sessions = _watch_request(query)
                except _BadRequest as exc:
                    await self._reject(request, 400, str(exc))
                    return
                ws = await request.accept()
                log.debug("watcher connected: {} {}", topics, sessions)
                await self._watch(ws, client, topics, sessions)
            else:
                ws = await request.accept()
                log.debug("client connected to {}", path)
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

    async def _watch(
        self,
        ws: WebSocketConnection,
        client: int,
        topics: tuple[Stream, ...],
        sessions: list[str] | None,
    ) -> None:
        """What the client subscribed to, until the client or the service goes."""
        subscription = self._outbox.subscribe(
            f"websocket-{client}", topics, self._settings.websocket_client_queue, sessions=sessions
        )
        published = self._outbox.statistics().published
        hello = WatcherNotice(
            type="hello",
            service_id=self._service_id,
            topics=list(topics),
            sessions=sessions,
            next_seq={stream: published[stream] for stream in published},
        )
        with subscription:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_requests, ws, subscription, nursery.cancel_scope)
                if await self._send(ws, hello.model_dump_json(exclude_none=True)):
                    await self._send_all(ws, subscription)
                nursery.cancel_scope.cancel()

    async def _send_all(self, ws: WebSocketConnection, subscription: Subscription) -> None:
        reported = 0
        max_dropped = self._settings.websocket_client_max_dropped
        async for item in subscription.receive:
            dropped = subscription.dropped
            if dropped > reported:
                if dropped >= max_dropped:
                    self._metrics.errors.labels("websocket", "too_many_dropped").inc()
                    logger.bind(component="websocket").warning(
                        "client lost {} messages: disconnected", dropped
                    )
                    await self._close(ws, TRY_AGAIN, f"too slow: {dropped} messages dropped")
                    return
                notice = WatcherNotice(
                    type="messages_dropped", count=dropped - reported, dropped_total=dropped
                )
                reported = dropped
                if not await self._send(ws, notice.model_dump_json(exclude_none=True)):
                    return
            if not await self._send(ws, item.payload.decode()):
                return
        # The outbox closed: the service is stopping.
        await self._close(ws, GOING_AWAY, "service stopping")

    async def _send(self, ws: WebSocketConnection, text: str) -> bool:
        """Send within the budget; False (and the client let go) if it could not."""
        with trio.move_on_after(self._send_budget_s) as budget:
            await ws.send_message(text)
        if not budget.cancelled_caught:
            return True
        # A client that cannot take one message within the emit budget is
        # stuck: free its resources.
        self._metrics.budget_exceeded.labels("emit").inc()
        self._metrics.errors.labels("websocket", "send_timeout").inc()
        logger.bind(component="websocket").warning(
            "client stuck for {:g}s: disconnected", self._send_budget_s
        )
        await self._close(ws, TRY_AGAIN, "too slow")
        return False

    @staticmethod
    async def _close(ws: WebSocketConnection, code: int, reason: str) -> None:
        # A stuck client's closing handshake cannot complete either: bounded.
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await ws.aclose(code=code, reason=close_reason(reason))

    async def _read_requests(
        self, ws: WebSocketConnection, subscription: Subscription, scope: trio.CancelScope
    ) -> None:
        """Subscribe requests; reading is also how a disconnect is noticed."""
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    await self._close(ws, UNSUPPORTED_DATA, "watchers send text: subscribe")
                    break
                try:
                    request = SubscribeRequest.model_validate_json(message)
                except ValidationError as exc:
                    problem = validation_problem(exc, "message")
                    await self._close(ws, POLICY, f"bad subscribe request: {problem}")
                    break
                subscription.update(request.topics, request.sessions)
                notice = WatcherNotice(
                    type="subscribed", topics=request.topics, sessions=request.sessions
                )
                with trio.move_on_after(self._send_budget_s):
                    await ws.send_message(notice.model_dump_json(exclude_none=True))
        except ConnectionClosed:
            pass
        scope.cancel()
