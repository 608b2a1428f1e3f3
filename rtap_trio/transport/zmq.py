"""ZeroMQ PUB emitters: events on one port, transcripts on another.

Each message is two frames, the topic and the JSON object, so subscribers can
filter by topic prefix (an event type, or ``transcript``). Sockets are bound at
start (a taken port fails the start, not a restart loop); sends never block:
PUB drops for a subscriber past its high-water mark, as PUB does. A publisher
whose socket broke binds a fresh one on the same port when it is restarted.

What a peer may send a PUB socket is a subscription: a topic prefix. Without a
limit, libzmq allocates whatever a frame header announces and buffers the
stream behind it (a peer announcing 4 GiB took the process from 273 MB to
1.3 GB RSS in a second), so inbound messages are capped and a peer that
exceeds the cap is disconnected by libzmq itself.

A publisher is an XPUB socket: to its subscribers exactly a PUB, but it sees
their subscriptions. After its socket broke and was bound again, it waits
(briefly) for its subscribers to come back before it publishes, and the
message whose send failed is sent again first: a subscriber that reconnects
misses nothing.
"""

from __future__ import annotations

import trio
import zmq

from ..errors import PortInUseError
from .outbox import Published, Subscription

__all__ = ["MAX_INBOUND_MESSAGE_BYTES", "ZmqPublisher"]

#: Largest message a peer may send (a subscription: one byte plus the topic).
MAX_INBOUND_MESSAGE_BYTES = 1024
#: After a rebind, how long to wait for the subscribers seen before to return
#: (libzmq reconnects every 100 ms by default).
RESUBSCRIBE_WAIT_S = 2.0


class ZmqPublisher:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        what: str,
        host: str,
        port: int,
        send_hwm: int,
    ) -> None:
        self.what = what
        self._context = context
        self._host = host
        self._send_hwm = send_hwm
        self.port = port
        self.sent = 0
        #: subscriptions seen (XPUB_VERBOSE: one per subscriber and topic)
        self.subscriptions = 0
        self._pending: Published | None = None
        self._socket = self._bind()

    def _bind(self) -> zmq.Socket[bytes]:
        socket = self._context.socket(zmq.XPUB)
        socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        socket.setsockopt(zmq.SNDHWM, self._send_hwm)
        socket.setsockopt(zmq.LINGER, 500)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_INBOUND_MESSAGE_BYTES)
        try:
            socket.bind(f"tcp://{self._host}:{self.port or '*'}")
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            raise PortInUseError(f"zmq {self.what}", self._host, self.port, str(exc)) from None
        # Port 0 asked for any port: keep the one bound, so a rebind reuses it.
        self.port = int(socket.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        return socket

    def _read_subscriptions(self) -> int:
        """Take what subscribers sent (subscribe / unsubscribe); how many subscribed."""
        subscribed = 0
        while True:
            try:
                message = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if message[:1] == b"\x01":
                subscribed += 1
        self.subscriptions += subscribed
        return subscribed

    async def _await_subscribers(self) -> None:
        deadline = trio.current_time() + RESUBSCRIBE_WAIT_S
        # A ZeroMQ socket is no trio object to wait on (its FD is edge-triggered):
        # polled, once, for at most two seconds, after a rebind only.
        while not self._read_subscriptions() and trio.current_time() < deadline:  # noqa: ASYNC110
            await trio.sleep(0.01)

    def _send(self, item: Published) -> None:
        try:
            self._read_subscriptions()
            self._socket.send_multipart([item.topic.encode(), item.payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            return  # no room at the HWM: PUB semantics, the message is dropped
        except zmq.ZMQError:
            self._pending = item  # the socket broke: sent again after the rebind
            raise
        self.sent += 1

    async def run(self, subscription: Subscription) -> None:
        """Publish everything the subscription yields; returns when the outbox closes."""
        if self._socket.closed:
            self._socket = self._bind()
            if self.subscriptions:  # it had subscribers: let them come back first
                await self._await_subscribers()
        if self._pending is not None:
            item, self._pending = self._pending, None
            self._send(item)
        async for item in subscription.receive:
            self._send(item)

    def close(self) -> None:
        self._socket.close()
