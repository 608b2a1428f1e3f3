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
"""

from __future__ import annotations

import zmq

from ..errors import PortInUseError
from .outbox import Subscription

__all__ = ["MAX_INBOUND_MESSAGE_BYTES", "ZmqPublisher"]

#: Largest message a peer may send (a subscription: one byte plus the topic).
MAX_INBOUND_MESSAGE_BYTES = 1024


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
        self._socket = self._bind()

    def _bind(self) -> zmq.Socket[bytes]:
        socket = self._context.socket(zmq.PUB)
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

    async def run(self, subscription: Subscription) -> None:
        """Publish everything the subscription yields; returns when the outbox closes."""
        if self._socket.closed:
            self._socket = self._bind()
        async for item in subscription.receive:
            try:
                self._socket.send_multipart([item.topic.encode(), item.payload], flags=zmq.NOBLOCK)
            except zmq.Again:
                continue  # no room at the HWM: PUB semantics, the message is dropped
            self.sent += 1

    def close(self) -> None:
        self._socket.close()
