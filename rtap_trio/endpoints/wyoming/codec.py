"""Wyoming's wire format: events framed on a byte stream, read within size limits.

A Wyoming event is one JSON header line ``{"type", "data", "data_length",
"payload_length"}``, then ``data_length`` bytes of JSON merged into ``data``,
then ``payload_length`` bytes of payload (PCM audio). :class:`EventReader`
takes events off a stream and refuses, as a :class:`ProtocolError`, a header,
data block or payload over ``wyoming.max_header_bytes`` / ``max_data_bytes`` /
``max_payload_bytes`` before reading it (fatal: the stream cannot be trusted
after it) and a malformed header line (not fatal: the next line is read).
:func:`encode_event` / :func:`write_event` frame an event for the client.

Apart from the server (:mod:`.server`) because framing knows nothing of
sessions: it is what a fuzzer or another Wyoming door can use on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import trio

from ...settings import WyomingSettings

__all__ = ["EventReader", "ProtocolError", "WyomingEvent", "encode_event", "write_event"]


@dataclass
class WyomingEvent:
    """One event: its type, its data (the header's and the data block's, merged), its payload."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""


class ProtocolError(Exception):
    """Bad input on a connection; ``fatal``: the stream cannot be read on."""

    def __init__(self, text: str, code: str, *, fatal: bool) -> None:
        super().__init__(text)
        self.code = code
        self.fatal = fatal


class EventReader:
    """Wyoming events off a byte stream, within the size limits of ``settings``."""

    def __init__(self, stream: trio.abc.ReceiveStream, settings: WyomingSettings) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._limits = settings

    async def _fill(self) -> bool:
        chunk = await self._stream.receive_some(65_536)
        if not chunk:
            return False
        self._buffer += chunk
        return True

    async def _line(self) -> bytes | None:
        limit = self._limits.max_header_bytes
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if len(line) > limit:
                    raise ProtocolError(f"header line over {limit} bytes", "too_large", fatal=True)
                return line
            if len(self._buffer) > limit:
                raise ProtocolError(f"header line over {limit} bytes", "too_large", fatal=True)
            if not await self._fill():
                return None

    async def _exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            if not await self._fill():
                raise ProtocolError("the connection ended inside an event", "eof", fatal=True)
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def read(self) -> WyomingEvent | None:
        """The next event; None at the end of the stream."""
        line = await self._line()
        if line is None:
            return None
        try:
            header = json.loads(line)
            if not isinstance(header, dict) or not isinstance(header.get("type"), str):
                raise ValueError("a header must be a JSON object with a string 'type'")
            data = header.get("data") or {}
            data_length = int(header.get("data_length") or 0)
            payload_length = int(header.get("payload_length") or 0)
            if not isinstance(data, dict) or data_length < 0 or payload_length < 0:
                raise ValueError("'data' must be an object, the lengths not negative")
        except (ValueError, TypeError, OverflowError) as exc:  # Overflow: a length of Infinity
            raise ProtocolError(
                f"malformed header line: {exc}", "bad_header", fatal=False
            ) from None
        if data_length > self._limits.max_data_bytes:
            raise ProtocolError(
                f"data of {data_length} bytes is over {self._limits.max_data_bytes}",
                "too_large",
                fatal=True,
            )
        if payload_length > self._limits.max_payload_bytes:
            raise ProtocolError(
                f"payload of {payload_length} bytes is over {self._limits.max_payload_bytes}",
                "too_large",
                fatal=True,
            )
        if data_length:
            try:
                extra = json.loads(await self._exactly(data_length))
            except ValueError as exc:
                raise ProtocolError(f"malformed data: {exc}", "bad_data", fatal=True) from None
            if not isinstance(extra, dict):
                raise ProtocolError("data must be a JSON object", "bad_data", fatal=True)
            data.update(extra)
        payload = await self._exactly(payload_length) if payload_length else b""
        return WyomingEvent(header["type"], data, payload)


def encode_event(event: WyomingEvent) -> bytes:
    header: dict[str, Any] = {"type": event.type}
    data = json.dumps(event.data, ensure_ascii=False).encode() if event.data else b""
    if data:
        header["data_length"] = len(data)
    if event.payload:
        header["payload_length"] = len(event.payload)
    return json.dumps(header).encode() + b"\n" + data + event.payload


async def write_event(stream: trio.abc.SendStream, event: WyomingEvent) -> None:
    await stream.send_all(encode_event(event))
