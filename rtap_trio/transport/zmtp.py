"""ZMTP 3, the ZeroMQ wire protocol, on a trio stream: the server side RTAP needs.

RTAP's ZeroMQ ports (PUB on 6552 and 6553, catch-up on 6554) speak ZMTP 3.0
and 3.1 with the NULL mechanism (https://rfc.zeromq.org/spec/23/ and /37/), so
any ZeroMQ client (pyzmq, libzmq, JeroMQ, zmq.rs) connects as it always did.
They are served here rather than by libzmq because libzmq cannot bound what a
peer makes it hold (issue 16), measured on libzmq 4.3.5:

- the frames of a message that never ends (each with MORE set) are buffered
  without limit: ``ZMQ_MAXMSGSIZE`` caps one frame, ``ZMQ_RCVHWM`` counts whole
  messages; 294 MB of 256-byte frames took a PUB socket to 588 MB RSS;
- every distinct subscription is kept in a trie (10 000 subscriptions of
  900 bytes: 424 MB); PUB has no cap and XPUB_MANUAL keeps them too;
- connections are never capped.

Here every read is bounded before it is made: a frame's size is checked from
its header before its body is read, a message has at most ``max_frames``
frames, a command at most :data:`MAX_COMMAND_BYTES`, and the handshake must end
within :data:`HANDSHAKE_TIMEOUT_S`. A peer that breaks a bound gets
:class:`ZmtpError` and its connection is closed: what libzmq does with a frame
over ``ZMQ_MAXMSGSIZE``.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

__all__ = [
    "HANDSHAKE_TIMEOUT_S",
    "MAX_COMMAND_BYTES",
    "Command",
    "ZmtpConnection",
    "ZmtpError",
    "encode_message",
    "serve_peer",
]

#: A peer has this long from connecting to finish greeting and READY (libzmq's
#: own ``ZMQ_HANDSHAKE_IVL`` is 30 s; a real peer needs a round trip).
HANDSHAKE_TIMEOUT_S = 10.0
#: The largest command a peer may send: READY with its metadata (Socket-Type,
#: a routing id of at most 255 bytes) or a 3.1 SUBSCRIBE.
MAX_COMMAND_BYTES = 1024

_SIGNATURE_FIRST, _SIGNATURE_LAST = 0xFF, 0x7F
#: Ours: version 3.0, so libzmq peers send subscriptions as messages (3.1's
#: SUBSCRIBE/CANCEL commands are understood too).
_GREETING = (
    bytes([_SIGNATURE_FIRST])
    + bytes(8)
    + bytes([_SIGNATURE_LAST])
    + bytes([3, 0])
    # mechanism NULL, as-server 0 (NULL has no roles), filler
    + b"NULL".ljust(20, b"\x00")
    + bytes(1)
    + bytes(31)
)
_GREETING_BYTES = 64

_MORE, _LONG, _COMMAND = 0x01, 0x02, 0x04
_RESERVED = 0xF8
_READ_BYTES = 16 * 1024


class ZmtpError(Exception):
    """The peer broke the protocol or one of its bounds; the connection is closed."""


@dataclass(frozen=True, slots=True)
class Command:
    """A ZMTP command other than READY: PING, PONG, SUBSCRIBE, CANCEL, ERROR."""

    name: str
    body: bytes


def _frame(data: bytes, flags: int) -> bytes:
    if len(data) > 255:
        return bytes([flags | _LONG]) + struct.pack(">Q", len(data)) + data
    return bytes([flags, len(data)]) + data


def encode_message(frames: list[bytes]) -> bytes:
    """A whole message as it goes on the wire: one bytes object, so a message
    sent to many subscribers is encoded once and shared."""
    last = len(frames) - 1
    return b"".join(_frame(f, _MORE if i < last else 0) for i, f in enumerate(frames))


def _command(name: bytes, body: bytes) -> bytes:
    return _frame(bytes([len(name)]) + name + body, _COMMAND)


def _ready(socket_type: str) -> bytes:
    name, value = b"Socket-Type", socket_type.encode()
    return _command(b"READY", bytes([len(name)]) + name + struct.pack(">I", len(value)) + value)


def _properties(body: bytes) -> dict[str, bytes]:
    """READY's metadata: (name length, name, 4-byte value length, value)*."""
    properties: dict[str, bytes] = {}
    at = 0
    while at < len(body):
        size = body[at]
        name = body[at + 1 : at + 1 + size]
        at += 1 + size
        if len(name) != size or at + 4 > len(body):
            raise ZmtpError("malformed READY metadata")
        (value_size,) = struct.unpack_from(">I", body, at)
        at += 4
        if at + value_size > len(body):
            raise ZmtpError("malformed READY metadata")
        properties[name.decode("ascii", "replace").lower()] = body[at : at + value_size]
        at += value_size
    return properties


class ZmtpConnection:
    """One peer's connection: the handshake, then bounded messages both ways."""

    def __init__(self, stream: trio.SocketStream, *, max_frames: int, max_frame_bytes: int):
        self.stream = stream
        self._max_frames = max_frames
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        # A subscriber's writer and its reader's PONG share the stream.
        self._send_lock = trio.StrictFIFOLock()
        #: the peer's READY metadata, names lower-cased (``socket-type``, ``identity``)
        self.peer: dict[str, bytes] = {}

    async def _read(self, size: int) -> bytes:
        """Exactly ``size`` bytes (callers have bounded it)."""
        while len(self._buffer) < size:
            data = await self.stream.receive_some(_READ_BYTES)
            if not data:
                raise trio.BrokenResourceError("peer closed the connection")
            self._buffer += data
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    async def handshake(self, socket_type: str, peer_types: frozenset[str]) -> None:
        """Greet as ``socket_type``; the peer must be one of ``peer_types``.
        Bounded by :data:`HANDSHAKE_TIMEOUT_S`."""
        with trio.fail_after(HANDSHAKE_TIMEOUT_S):
            await self.stream.send_all(_GREETING + _ready(socket_type))
            greeting = await self._read(_GREETING_BYTES)
            if greeting[0] != _SIGNATURE_FIRST or not greeting[9] & 1:
                raise ZmtpError("not a ZMTP peer")
            if greeting[10] < 3:
                raise ZmtpError(f"ZMTP {greeting[10]}.x is not supported (3.0 or later)")
            mechanism = greeting[12:32].rstrip(b"\x00")
            if mechanism != b"NULL":
                raise ZmtpError(f"security mechanism {mechanism!r} is not offered (NULL only)")
            command = await self._read_command_frame()
            if command.name != "READY":
                raise ZmtpError(f"expected READY, got {command.name}")
            self.peer = _properties(command.body)
        kind = self.peer.get("socket-type", b"").decode("ascii", "replace")
        if kind not in peer_types:
            raise ZmtpError(f"a {kind or 'nameless'} socket cannot talk to {socket_type}")

    async def _header(self) -> tuple[int, int]:
        (flags,) = await self._read(1)
        if flags & _RESERVED:
            raise ZmtpError(f"reserved frame flags set ({flags:#04x})")
        if flags & _LONG:
            (size,) = struct.unpack(">Q", await self._read(8))
        else:
            (size,) = await self._read(1)
        limit = MAX_COMMAND_BYTES if flags & _COMMAND else self._max_frame_bytes
        if size > limit:
            raise ZmtpError(f"a frame of {size} bytes (at most {limit})")
        if flags & _COMMAND and flags & _MORE:
            raise ZmtpError("a command frame with MORE set")
        return flags, size

    @staticmethod
    def _split_command(body: bytes) -> Command:
        if not body or len(body) < 1 + body[0]:
            raise ZmtpError("malformed command")
        name = body[1 : 1 + body[0]].decode("ascii", "replace")
        return Command(name, body[1 + body[0] :])

    async def _read_command_frame(self) -> Command:
        flags, size = await self._header()
        if not flags & _COMMAND:
            raise ZmtpError("expected a command")
        return self._split_command(await self._read(size))

    async def receive(self) -> list[bytes] | Command:
        """The next message (its frames) or command. PING is answered here."""
        frames: list[bytes] = []
        while True:
            flags, size = await self._header()
            body = await self._read(size)
            if flags & _COMMAND:
                if frames:
                    raise ZmtpError("a command inside a message")
                command = self._split_command(body)
                if command.name == "PING":  # heartbeat: PONG carries the ping's context
                    await self._send(_command(b"PONG", command.body[2:18]))
                    continue
                return command
            frames.append(body)
            if not flags & _MORE:
                return frames
            if len(frames) >= self._max_frames:
                raise ZmtpError(f"a message of more than {self._max_frames} frames")

    async def send(self, message: bytes) -> None:
        """One message encoded by :func:`encode_message`."""
        await self._send(message)

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


#: What a peer that goes away (or never greets) makes a read or write raise.
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError)


async def serve_peer(
    connection: ZmtpConnection,
    socket_type: str,
    peer_types: frozenset[str],
    read: Callable[[], Awaitable[None]],
    write: Callable[[], Awaitable[None]],
    *,
    on_ready: Callable[[], None] = lambda: None,
) -> str | None:
    """One peer's life: the handshake, then ``read`` and ``write`` side by side
    until either ends (the peer left, broke a bound, or the writer finished);
    the connection is always closed. Returns the bound the peer broke, if any."""
    broken: list[str] = []

    async def guarded(step: Callable[[], Awaitable[None]], done: trio.CancelScope) -> None:
        try:
            await step()
        except ZmtpError as exc:
            broken.append(str(exc))
        except _PEER_GONE:
            pass
        finally:
            done.cancel()

    try:
        try:
            await connection.handshake(socket_type, peer_types)
        except ZmtpError as exc:
            return str(exc)
        except _PEER_GONE:
            return None
        on_ready()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, read, nursery.cancel_scope)
            nursery.start_soon(guarded, write, nursery.cancel_scope)
    finally:
        await connection.aclose()
    return broken[0] if broken else None
