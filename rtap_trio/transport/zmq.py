"""ZeroMQ PUB emitters: events on one port, transcripts on another.

Each message is two frames, the topic and the JSON object, so subscribers can
filter by topic prefix (an event type, or ``transcript``). Any ZeroMQ SUB or
XSUB socket connects as to a libzmq PUB; the server side is RTAP's own
(:mod:`.zmtp`), so that what a subscriber can make the service hold is bounded
(issue 16):

- at most ``output.zmq_max_connections`` subscribers per port (one over the
  cap is closed at once; a ZeroMQ client retries by itself);
- at most :data:`MAX_SUBSCRIPTIONS` subscriptions of at most
  :data:`MAX_TOPIC_BYTES` bytes per subscriber, and nothing else may be sent:
  a subscriber past a bound is disconnected, as libzmq disconnects a peer over
  ``ZMQ_MAXMSGSIZE``;
- at most ``output.zmq_send_hwm`` messages wait per subscriber: past it a
  message is dropped for that subscriber alone, as PUB drops at its
  high-water mark. A message is encoded once and shared by every queue.

Sockets are bound at start (a taken port fails the start, not a restart
loop). A publisher whose socket was closed under it binds a fresh one on the
same port when it is restarted, waits (briefly) for its subscribers to come
back, and sends the message it could not send first: a subscriber that
reconnects misses nothing.
"""

from __future__ import annotations

import collections
import socket as stdlib_socket

import trio
from loguru import logger

from ..connections import BoundedListener, ConnectionCap
from ..errors import PortInUseError
from .outbox import Published, Subscription
from .zmtp import ZmtpConnection, ZmtpError, encode_message, serve_peer

__all__ = ["MAX_SUBSCRIPTIONS", "MAX_TOPIC_BYTES", "ZmqPublisher", "bind_listener"]

#: Subscriptions one subscriber may hold: RTAP's topics are an event type or
#: ``transcript``, each with the session id after a dot, so an agent needs a
#: handful. Each costs at most MAX_TOPIC_BYTES.
MAX_SUBSCRIPTIONS = 256
#: The longest subscription (topic prefix); RTAP's topics are under 40 bytes.
MAX_TOPIC_BYTES = 255
#: After a rebind, how long to wait for the subscribers seen before to return
#: (libzmq reconnects every 100 ms by default).
RESUBSCRIBE_WAIT_S = 2.0
#: At the end, how long queued messages may take to go out (libzmq's linger).
FLUSH_S = 0.5
#: The kernel's send buffer per subscriber (Linux doubles it): a subscriber
#: that stops reading holds this much kernel memory, not the 4 MiB
#: autotuning reaches.
SEND_BUFFER_BYTES = 256 * 1024
_SUBSCRIBER_TYPES = frozenset({"SUB", "XSUB"})


def bind_listener(what: str, host: str, port: int) -> trio.SocketListener:
    """A listening TCP socket on ``host:port`` (0: any free port), bound now,
    so a taken port fails here with :class:`PortInUseError`."""
    try:
        family, kind, proto, _, address = stdlib_socket.getaddrinfo(
            host, port, type=stdlib_socket.SOCK_STREAM, flags=stdlib_socket.AI_PASSIVE
        )[0]
        sock = stdlib_socket.socket(family, kind, proto)
    except OSError as exc:
        raise PortInUseError(what, host, port, str(exc)) from None
    try:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise PortInUseError(what, host, port, str(exc)) from None
    sock.setblocking(False)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def small_send_buffer(stream: trio.SocketStream) -> None:
    stream.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, SEND_BUFFER_BYTES)


class _Subscriber:
    """One connected subscriber: its subscriptions and its queue."""

    def __init__(self, connection: ZmtpConnection, send_hwm: int) -> None:
        self.connection = connection
        # A topic may be subscribed twice and cancelled once (as in libzmq).
        self.topics: collections.Counter[bytes] = collections.Counter()
        self.queue_in, self.queue_out = trio.open_memory_channel[bytes](send_hwm)
        self.dropped = 0

    def wants(self, topic: bytes) -> bool:
        return any(topic.startswith(prefix) for prefix in self.topics)

    def update(self, message: list[bytes]) -> int:
        """Apply one subscribe / cancel message; 1 for a new subscription."""
        if len(message) != 1 or not message[0] or message[0][0] not in (0, 1):
            raise ZmtpError("a subscriber may only subscribe and cancel")
        return self.apply(message[0][0] == 1, message[0][1:])

    def apply(self, subscribe: bool, topic: bytes) -> int:
        if not subscribe:
            if self.topics[topic] > 1:
                self.topics[topic] -= 1
            else:
                self.topics.pop(topic, None)
            return 0
        if len(topic) > MAX_TOPIC_BYTES:
            raise ZmtpError(f"a subscription of {len(topic)} bytes (at most {MAX_TOPIC_BYTES})")
        if topic not in self.topics and len(self.topics) >= MAX_SUBSCRIPTIONS:
            raise ZmtpError(f"more than {MAX_SUBSCRIPTIONS} subscriptions")
        self.topics[topic] += 1
        return 1


class ZmqPublisher:
    def __init__(self, what: str, host: str, port: int, send_hwm: int, max_connections: int):
        self.what = what
        self._host = host
        self._send_hwm = send_hwm
        self.port = port
        self.sent = 0
        #: subscriptions received, over all subscribers and restarts
        self.subscriptions = 0
        #: messages dropped for a subscriber whose queue was full
        self.dropped = 0
        #: subscribers disconnected for breaking the protocol or a bound
        self.disconnected = 0
        self.connections = ConnectionCap(
            f"zmq-{what}", max_connections, "output.zmq_max_connections"
        )
        self._subscribers: set[_Subscriber] = set()
        self._subscribed = trio.Event()
        self._pending: Published | None = None
        self._closed = False
        self._listener = self._bind()

    def _bind(self) -> trio.SocketListener:
        listener = bind_listener(f"zmq {self.what}", self._host, self.port)
        # Port 0 asked for any port: keep the one bound, so a rebind reuses it.
        self.port = int(listener.socket.getsockname()[1])
        self._closed = False
        return listener

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def run(self, subscription: Subscription) -> None:
        """Serve subscribers and publish everything the subscription yields;
        returns when the outbox closes, once the queues are sent (or
        :data:`FLUSH_S` has passed)."""
        rebound = self._closed
        if rebound:
            self._listener = self._bind()
        accepting = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            listener = BoundedListener(self._listener, self.connections, nursery, b"")
            nursery.start_soon(self._accept, listener, nursery, accepting)
            if rebound and self.subscriptions:  # it had subscribers: let them come back first
                self._subscribed = trio.Event()
                with trio.move_on_after(RESUBSCRIBE_WAIT_S):
                    await self._subscribed.wait()
            if self._pending is not None:
                item, self._pending = self._pending, None
                self._publish(item)
            async for item in subscription.receive:
                if self._closed:  # closed under us: kept for the fresh socket
                    self._pending = item
                    raise trio.ClosedResourceError(f"zmq {self.what}: socket closed")
                self._publish(item)
            # The end: each subscriber's task ends once its queue is sent.
            accepting.cancel()
            for subscriber in self._subscribers:
                subscriber.queue_in.close()
            nursery.cancel_scope.deadline = trio.current_time() + FLUSH_S

    def _publish(self, item: Published) -> None:
        topic = item.topic.encode()
        message: bytes | None = None
        for subscriber in self._subscribers:
            if not subscriber.wants(topic):
                continue
            message = message or encode_message([topic, item.payload])
            try:
                subscriber.queue_in.send_nowait(message)
            except trio.WouldBlock:  # its high-water mark: dropped for it alone, as PUB does
                subscriber.dropped += 1
                self.dropped += 1
            except trio.ClosedResourceError:
                pass  # it is leaving
        self.sent += 1

    async def _accept(
        self, listener: BoundedListener, nursery: trio.Nursery, scope: trio.CancelScope
    ) -> None:
        with scope:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._serve, stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        small_send_buffer(stream)
        connection = ZmtpConnection(stream, max_frames=1, max_frame_bytes=MAX_TOPIC_BYTES + 1)
        subscriber = _Subscriber(connection, self._send_hwm)

        async def read() -> None:
            while True:
                message = await connection.receive()
                if isinstance(message, list):
                    added = subscriber.update(message)
                elif message.name in ("SUBSCRIBE", "CANCEL"):  # ZMTP 3.1
                    added = subscriber.apply(message.name == "SUBSCRIBE", message.body)
                else:
                    continue  # PONG, ERROR: nothing to do
                if added:
                    self.subscriptions += added
                    self._subscribed.set()

        async def write() -> None:
            async for message in subscriber.queue_out:
                await connection.send(message)
            # The queue was closed: the publisher is ending and this one is sent.

        try:
            broken = await serve_peer(
                connection,
                "PUB",
                _SUBSCRIBER_TYPES,
                read,
                write,
                on_ready=lambda: self._subscribers.add(subscriber),
            )
        finally:
            self._subscribers.discard(subscriber)
            subscriber.queue_in.close()
        if broken:
            self.disconnected += 1
            logger.bind(component=f"zmq-{self.what}").debug("subscriber disconnected: {}", broken)

    def close(self) -> None:
        """Close the socket (a restarted :meth:`run` binds a fresh one)."""
        self._closed = True
        # The listener's socket is closed at once; trio wakes a task waiting in
        # accept() with ClosedResourceError, which ends the running emitter.
        self._listener.socket.close()
