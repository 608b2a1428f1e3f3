"""ZeroMQ catch-up: "the transcripts after seq N", for an agent that was away.

A ROUTER socket on ``output.zmq_catchup_port`` (6554) answers REQ (or DEALER)
clients: the request is one JSON :class:`~.schemas.CatchupRequest`, the reply
one JSON :class:`~.schemas.CatchupReply` from the outbox's kept transcripts. A
ROUTER serves any number of clients in turn and never blocks on one; a request
that is not valid JSON of that shape gets a reply with ``error`` set.

An agent subscribes to 6553 first, then asks for what came after the last seq
it has, and drops duplicates by seq (docs/examples/subscriber.py).
"""

from __future__ import annotations

import trio
import zmq
from loguru import logger
from pydantic import ValidationError

from ..errors import PortInUseError, validation_problem
from .outbox import Outbox
from .schemas import CatchupReply, CatchupRequest
from .zmq_async import close, receive_multipart

__all__ = ["ZmqCatchup"]

#: A request is a few dozen bytes; anything much larger is not one.
MAX_REQUEST_BYTES = 4096


class ZmqCatchup:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        host: str,
        port: int,
        outbox: Outbox,
        service_id: str,
    ) -> None:
        self._context = context
        self._host = host
        self.port = port
        self._outbox = outbox
        self._service_id = service_id
        self.answered = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the port, answer until cancelled."""
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a client that left: its reply is dropped
        try:
            try:
                socket.bind(f"tcp://{self._host}:{self.port or '*'}")
            except zmq.ZMQError as exc:
                raise PortInUseError("zmq catch-up", self._host, self.port, str(exc)) from None
            self.port = int(socket.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
            task_status.started(self.port)
            while True:
                frames = await receive_multipart(socket)
                # REQ: [identity, empty, request]; DEALER may omit the empty frame.
                envelope, request = frames[:-1], frames[-1]
                socket.send_multipart([*envelope, self.answer(request)], zmq.NOBLOCK)
                self.answered += 1
        finally:
            close(socket)

    def answer(self, payload: bytes) -> bytes:
        try:
            request = CatchupRequest.model_validate_json(payload)
        except ValidationError as exc:
            problem = validation_problem(exc, "request")
            logger.bind(component="catchup").debug("bad request: {}", problem)
            reply = CatchupReply(
                service_id=self._service_id,
                transcripts=[],
                oldest_seq=-1,
                next_seq=-1,
                lost=0,
                error=problem,
            )
        else:
            reply = self._outbox.catch_up(request, self._service_id)
        return reply.model_dump_json().encode()
