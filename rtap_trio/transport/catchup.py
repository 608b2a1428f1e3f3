"""ZeroMQ catch-up: "the transcripts after seq N", for an agent that was away.

A ROUTER socket (as its peers see it) on ``output.zmq_catchup_port`` (6554)
answers REQ (or DEALER) clients: the request is one JSON
:class:`~.schemas.CatchupRequest`, the reply one JSON
:class:`~.schemas.CatchupReply` from the outbox's kept transcripts. Each
client is served in its own task, so none waits on another; a request that is
not valid JSON of that shape gets a reply with ``error`` set.

An agent subscribes to 6553 first, then asks for what came after the last seq
it has, and drops duplicates by seq (docs/examples/subscriber.py).

A peer that sends and never reads costs a bounded amount. Unbounded, 20 peers
sending 1 100 requests each took the service from 322 MB to 2.34 GB (each
reply 108 KB, up to ZeroMQ's default 1 000 queued per peer, issue 16). Now:

- at most ``output.zmq_max_connections`` peers at once, each served in its
  own task by RTAP's ZMTP server (:mod:`.zmtp`: a request is at most
  :data:`MAX_REQUEST_FRAMES` frames of :data:`MAX_REQUEST_BYTES`);
- at most ``zmq_catchup_send_hwm`` replies wait for a peer (past it, its next
  requests wait unread: back-pressure on it alone, and a REQ client never
  loses a reply), and the kernel holds at most ``SEND_BUFFER_BYTES`` more for
  it (the 4 MiB autotuned default held 1.4-2 MB per silent peer);
- a reply is at most ``zmq_catchup_max_reply_bytes``: longer, it is cut to the
  oldest transcripts that fit and says ``truncated`` (ask again after its last
  seq, as for ``limit``);
- each peer (connection) may ask ``zmq_catchup_rate_per_s`` times a second,
  ``zmq_catchup_burst`` at once; past that it gets a short error reply (a REQ
  client must get an answer to ask again), not the transcripts;
- each transcript is serialised once and kept as JSON while it is kept: a
  1 000-transcript reply took 5-13 ms to serialise on the event loop, and is
  now joined from the kept pieces.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import trio
from loguru import logger
from pydantic import ValidationError

from ..connections import BoundedListener, ConnectionCap
from ..errors import validation_problem
from ..settings import OutputSettings
from .outbox import Outbox
from .schemas import CatchupReply, CatchupRequest, TranscriptMessage
from .zmq import bind_listener, small_send_buffer
from .zmtp import ZmtpConnection, encode_message, serve_peer

__all__ = ["MAX_TRACKED_PEERS", "PeerRate", "ReplyEncoder", "ZmqCatchup"]

#: A request is a few dozen bytes; anything much larger is not one.
MAX_REQUEST_BYTES = 4096
#: A request's frames: REQ sends an empty delimiter and the request; a DEALER
#: may add envelope frames of its own. More is not a catch-up client.
MAX_REQUEST_FRAMES = 4
_REQUESTER_TYPES = frozenset({"REQ", "DEALER", "ROUTER"})
#: Peers whose request rate is tracked; the least recently seen is forgotten
#: (and starts with a full bucket again). About 150 bytes each.
MAX_TRACKED_PEERS = 4096


@dataclass
class _Bucket:
    tokens: float
    at: float


class PeerRate:
    """A token bucket per peer (one connection), for a bounded number of peers."""

    def __init__(self, rate_per_s: float, burst: int, max_peers: int = MAX_TRACKED_PEERS) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_peers = max_peers
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, peer: bytes, now: float) -> float:
        """Take one request's token: 0.0 when there was one, else the seconds until there is."""
        bucket = self._buckets.pop(peer, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            if len(self._buckets) >= self._max_peers:
                self._buckets.popitem(last=False)
        self._buckets[peer] = bucket  # most recently seen last
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s


class ReplyEncoder:
    """A :class:`CatchupReply` as bytes, at most ``max_bytes``, from transcripts serialised once."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: seq -> the transcript's JSON, for the transcripts still kept
        self._json: dict[int, bytes] = {}
        self._oldest = -1

    def __len__(self) -> int:
        return len(self._json)

    def _piece(self, transcript: TranscriptMessage) -> bytes:
        piece = self._json.get(transcript.seq)
        if piece is None:
            piece = self._json[transcript.seq] = transcript.model_dump_json().encode()
        return piece

    def _forget_before(self, oldest_seq: int) -> None:
        if oldest_seq > self._oldest:
            self._oldest = oldest_seq
            self._json = {seq: piece for seq, piece in self._json.items() if seq >= oldest_seq}

    def encode(self, reply: CatchupReply) -> bytes:
        if not reply.transcripts:
            return reply.model_dump_json().encode()
        self._forget_before(reply.oldest_seq)
        pieces = [self._piece(t) for t in reply.transcripts]
        envelope = reply.model_copy(update={"transcripts": []}).model_dump_json().encode()
        size = len(envelope) + sum(map(len, pieces)) + len(pieces) - 1
        if size > self.max_bytes:
            envelope = (
                reply.model_copy(update={"transcripts": [], "truncated": True})
                .model_dump_json()
                .encode()
            )
            room, fits = self.max_bytes - len(envelope), 0
            for piece in pieces:
                room -= len(piece) + (1 if fits else 0)
                if room < 0:
                    break
                fits += 1
            # The oldest one always goes, or a client could never get past it
            # (a transcript is a few KB: 30 s of speech at most).
            pieces = pieces[: max(1, fits)]
        # pydantic writes a list of models as "[" + ",".join(each) + "]", so the
        # reply is the envelope with its empty list filled in; the key's quote
        # cannot occur unescaped inside a string, so the first match is the key.
        empty = b'"transcripts":[]'
        return envelope.replace(empty, b'"transcripts":[' + b",".join(pieces) + b"]", 1)


class ZmqCatchup:
    def __init__(
        self,
        host: str,
        port: int,
        outbox: Outbox,
        service_id: str,
        settings: OutputSettings,
    ) -> None:
        self._host = host
        self.port = port
        self._outbox = outbox
        self._service_id = service_id
        self._send_hwm = settings.zmq_catchup_send_hwm
        self._rate = PeerRate(settings.zmq_catchup_rate_per_s, settings.zmq_catchup_burst)
        self._encoder = ReplyEncoder(settings.zmq_catchup_max_reply_bytes)
        self.connections = ConnectionCap(
            "zmq-catchup", settings.zmq_max_connections, "output.zmq_max_connections"
        )
        self._peers = 0
        self.answered = 0
        #: requests answered with the rate-limit error
        self.limited = 0
        #: peers disconnected for breaking the protocol or a bound
        self.disconnected = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the port, answer until cancelled."""
        listener = bind_listener("zmq catch-up", self._host, self.port)
        self.port = int(listener.socket.getsockname()[1])
        async with listener, trio.open_nursery() as nursery:
            bounded = BoundedListener(listener, self.connections, nursery, b"")
            task_status.started(self.port)
            while True:
                stream = await bounded.accept()
                self._peers += 1
                nursery.start_soon(self._serve, stream, self._peers.to_bytes(8, "big"))

    async def _serve(self, stream: trio.SocketStream, peer: bytes) -> None:
        """One peer: requests in order; while ``send_hwm`` replies wait for it
        to read, its next requests wait unread (back-pressure on it alone)."""
        small_send_buffer(stream)
        connection = ZmtpConnection(
            stream, max_frames=MAX_REQUEST_FRAMES, max_frame_bytes=MAX_REQUEST_BYTES
        )
        replies_in, replies_out = trio.open_memory_channel[bytes](self._send_hwm)

        async def read() -> None:
            # Closed synchronously: an ``async with`` would checkpoint on the
            # way out, and the writer, ending at that moment, would cancel it
            # and so replace the ZmtpError that says why the peer was cut off.
            try:
                while True:
                    message = await connection.receive()
                    if not isinstance(message, list):
                        continue  # PONG, ERROR: nothing to answer
                    # REQ: [empty, request]; a DEALER may omit the empty frame.
                    envelope, request = message[:-1], message[-1]
                    reply = self.answer(request, peer=peer, now=trio.current_time())
                    await replies_in.send(encode_message([*envelope, reply]))
                    self.answered += 1
            finally:
                replies_in.close()

        async def write() -> None:
            try:
                async for reply in replies_out:
                    await connection.send(reply)
            finally:
                replies_out.close()

        broken = await serve_peer(connection, "ROUTER", _REQUESTER_TYPES, read, write)
        if broken:
            self.disconnected += 1
            logger.bind(component="catchup").debug("peer disconnected: {}", broken)

    def _error(self, problem: str) -> bytes:
        reply = CatchupReply(
            service_id=self._service_id,
            transcripts=[],
            oldest_seq=-1,
            next_seq=-1,
            lost=0,
            error=problem,
        )
        return reply.model_dump_json().encode()

    def answer(self, payload: bytes, *, peer: bytes = b"", now: float = 0.0) -> bytes:
        """The reply to one request from ``peer`` (its connection's id) at ``now`` (seconds)."""
        wait_s = self._rate.take(peer, now)
        if wait_s:
            self.limited += 1
            return self._error(
                f"rate limited: at most {self._rate.burst} requests at once and"
                f" {self._rate.rate_per_s:g} a second; ask again in {wait_s:.2f} s"
            )
        try:
            request = CatchupRequest.model_validate_json(payload)
        except ValidationError as exc:
            problem = validation_problem(exc, "request")
            logger.bind(component="catchup").debug("bad request: {}", problem)
            return self._error(problem)
        return self._encoder.encode(self._outbox.catch_up(request, self._service_id))
