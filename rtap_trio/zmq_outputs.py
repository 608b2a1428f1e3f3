"""The service's two ZeroMQ publishers (events, transcripts), bound together,
and the ZeroMQ context the standby's subscribers share.

Apart from the composition root because binding is a small lifecycle of its
own: a bind retried while a port is still held binds both publishers again,
their ports are read back once bound (port 0), and everything is closed
whatever ended the run.
"""

from __future__ import annotations

import trio
import zmq

from .connections import ConnectionCap
from .settings import OutputSettings
from .transport.schemas import Stream
from .transport.zmq import ZmqPublisher

__all__ = ["ZmqOutputs"]


class ZmqOutputs:
    """``output.zmq_*``: the publishers of both streams, once :meth:`bind` has run."""

    def __init__(self, settings: OutputSettings) -> None:
        self._settings = settings
        #: (publisher, the stream it publishes); empty until bound, or with ZeroMQ off
        self.publishers: list[tuple[ZmqPublisher, Stream]] = []
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None

    async def bind(self) -> list[tuple[ZmqPublisher, Stream]]:
        """Bind both publishers (again, on a retry); none with ``output.zmq_enabled`` off."""
        out = self._settings
        if not out.zmq_enabled:
            return []
        await trio.lowlevel.checkpoint()
        self._close_publishers()  # a retry: bind both again
        for what, port, stream in (
            ("events", out.zmq_pub_port_events, Stream.EVENTS),
            ("transcripts", out.zmq_pub_port_transcripts, Stream.TRANSCRIPTS),
        ):
            publisher = ZmqPublisher(
                what, out.bind_address, port, out.zmq_send_hwm, out.zmq_max_connections
            )
            self.publishers.append((publisher, stream))
        return self.publishers

    def port(self, stream: Stream) -> int | None:
        """The bound port of ``stream``'s publisher; None while unbound."""
        return next((p.port for p, s in self.publishers if s is stream), None)

    def connections(self) -> list[ConnectionCap]:
        """Each publisher's open connections against ``output.zmq_max_connections``."""
        return [publisher.connections for publisher, _ in self.publishers]

    def context(self) -> zmq.Context[zmq.Socket[bytes]]:
        """The ZeroMQ context, made on first use (the standby's subscribers)."""
        if self._context is None:
            self._context = zmq.Context()
        return self._context

    def close(self) -> None:
        self._close_publishers()
        if self._context is not None:
            self._context.term()

    def _close_publishers(self) -> None:
        for publisher, _ in self.publishers:
            publisher.close()
        self.publishers = []
