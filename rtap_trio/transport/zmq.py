"""ZeroMQ PUB emitters: events on one port, transcripts on another.

Each message is two frames, the topic and the JSON object, so subscribers can
filter by topic prefix (an event type, or ``transcript``). Sockets are bound at
start (a taken port fails the start, not a restart loop); sends never block:
PUB drops for a subscriber past its high-water mark, as PUB does.
"""

from __future__ import annotations

import zmq

from ..errors import PortInUseError
from .outbox import Subscription

__all__ = ["ZmqPublisher"]


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
        self._socket = context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.LINGER, 500)
        try:
            if port == 0:
                self._socket.bind(f"tcp://{host}:*")
            else:
                self._socket.bind(f"tcp://{host}:{port}")
        except zmq.ZMQError as exc:
            self._socket.close(linger=0)
            raise PortInUseError(f"zmq {what}", host, port, str(exc)) from None
        endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.port = int(endpoint.rsplit(":", 1)[1])
        self.sent = 0

    async def run(self, subscription: Subscription) -> None:
        """Publish everything the subscription yields; returns when the outbox closes."""
        async for item in subscription.receive:
            try:
                self._socket.send_multipart([item.topic.encode(), item.payload], flags=zmq.NOBLOCK)
            except zmq.Again:
                continue  # no room at the HWM: PUB semantics, the message is dropped
            self.sent += 1

    def close(self) -> None:
        self._socket.close()
