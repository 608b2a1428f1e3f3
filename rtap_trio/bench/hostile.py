"""Hostile clients for the soak: one bounded round of each attack of issue 16, in a loop.

Each attack is what a hostile client did to the service before it was bounded
(docs/reliability.md, "Bounded by construction"), made small enough to repeat
beside normal sessions for the soak's whole run: an idle-connection flood on
every port, an upload whose header promises hours of multi-channel audio, a
chunked body past the upload limit, a Wyoming ``audio-start`` no session can
use, a ``/v1/audio`` start in a language the model lacks, catch-up
requests from a ZeroMQ peer that never reads, and a ZeroMQ subscriber whose
message never ends (each frame with MORE set). Every round must end in the
refusal the protocol documents; anything else is recorded as unexpected.

Only 127.0.0.1 is ever a target, every loop is bounded in count and time, and
every socket is closed when its round ends.
"""

from __future__ import annotations

import io
import json
import socket
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import soundfile
import trio
import zmq
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

__all__ = ["HostilePorts", "HostileTally", "run_hostile_load", "silent_flac"]

_HOST = "127.0.0.1"
#: How long an idle flood holds its connections open.
_HOLD_S = 3.0
_ROUND_TIMEOUT_S = 20.0
_CHUNK = b"\0" * 65_536


@dataclass(frozen=True, slots=True)
class HostilePorts:
    http: int
    websocket: int
    wyoming: int
    catchup: int
    zmq_events: int


@dataclass
class HostileTally:
    """Rounds per attack, and what did not end in the documented refusal."""

    rounds: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"rounds": dict(self.rounds), "unexpected": self.unexpected}


def silent_flac(seconds: float, channels: int, sample_rate: int = 48_000) -> bytes:
    """A FLAC of ``seconds`` of silence: a few hundred KB that decode to gigabytes."""
    out = io.BytesIO()
    block = np.zeros((sample_rate, channels), np.int16)
    with soundfile.SoundFile(
        out, "w", samplerate=sample_rate, channels=channels, format="FLAC", subtype="PCM_16"
    ) as flac:
        for _ in range(int(seconds)):
            flac.write(block)
    return out.getvalue()


def _http_status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return 0
        head += chunk
    return int(head.split(b" ", 2)[1])


def _upload(port: int, flac: bytes) -> int:
    boundary = "rtap-hostile"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="bomb.flac"\r\n'
            "Content-Type: audio/flac\r\n\r\n"
        ).encode()
        + flac
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {_HOST}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((_HOST, port), timeout=_ROUND_TIMEOUT_S) as sock:
        sock.sendall(head + body)
        return _http_status(sock)


def _chunked(port: int, megabytes: int) -> int:
    """A chunked body with a small Content-Length beside it; the status, 0 if none came."""
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {_HOST}:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        "Transfer-Encoding: chunked\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    # A well-formed start of a file part, so that only its size can refuse it.
    part = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    )
    chunk = b"%x\r\n" % len(_CHUNK) + _CHUNK + b"\r\n"
    with socket.create_connection((_HOST, port), timeout=_ROUND_TIMEOUT_S) as sock:
        try:
            sock.sendall(head + b"%x\r\n" % len(part) + part + b"\r\n")
            for _ in range(megabytes * 16):
                sock.sendall(chunk)
        except OSError:  # refused mid-body: the answer is waiting to be read
            pass
        try:
            return _http_status(sock)
        except OSError:
            return 0


def _wyoming_bad_start(port: int) -> str:
    """``audio-start`` at rate 0; the type of the first event that comes back."""
    header = {"type": "audio-start", "data": {"rate": 0, "width": 2, "channels": 64}}
    with socket.create_connection((_HOST, port), timeout=_ROUND_TIMEOUT_S) as sock:
        sock.sendall(json.dumps(header).encode() + b"\n")
        reply = sock.makefile("rb").readline()
    return str(json.loads(reply).get("type")) if reply else ""


def _catchup_spam(port: int, requests: int) -> None:
    """A DEALER that asks ``requests`` times and never reads a reply."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.SNDHWM, requests)
    try:
        dealer.connect(f"tcp://{_HOST}:{port}")
        request = json.dumps({"after_seq": -1, "limit": 1000}).encode()
        for _ in range(requests):
            dealer.send_multipart([b"", request], zmq.NOBLOCK)
    except zmq.Again:
        pass
    finally:
        dealer.close()
        context.term()


def _endless_message(port: int, megabytes: int) -> bool:
    """A SUB peer whose first message never ends; True when the server hung up
    before ``megabytes`` were sent."""
    greeting = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00")
    ready = b"\x05READY\x0bSocket-Type\x00\x00\x00\x03SUB"
    frame = bytes([0x01, 255]) + b"\x01" * 255  # MORE set on every frame
    chunk = frame * 256
    with socket.create_connection((_HOST, port), timeout=_ROUND_TIMEOUT_S) as sock:
        sock.sendall(greeting + bytes(32) + bytes([0x04, len(ready)]) + ready)
        try:
            for _ in range(megabytes * 1_000_000 // len(chunk)):
                sock.sendall(chunk)
        except OSError:
            return True
    return False


async def _idle_flood(port: int, count: int) -> None:
    streams = []
    try:
        for _ in range(count):
            try:
                streams.append(await trio.open_tcp_stream(_HOST, port))
            except OSError:  # refused at the cap: what a cap does
                break
        await trio.sleep(_HOLD_S)
    finally:
        for stream in streams:
            await stream.aclose()


async def _bad_language(port: int) -> tuple[int, str | None] | None:
    url = f"ws://{_HOST}:{port}/v1/audio"
    start = {
        "type": "start",
        "sample_rate": 16000,
        "encoding": "pcm_s16le",
        "channels": 1,
        "language": "xx",
        "wake_word": False,
    }
    try:
        async with open_websocket_url(url) as ws:
            await ws.send_message(json.dumps(start))
            while True:
                await ws.get_message()
    except ConnectionClosed as closed:
        reason = closed.reason
        return (reason.code, reason.reason) if reason is not None else (0, None)
    except HandshakeError:
        return None


async def _round(name: str, tally: HostileTally, ports: HostilePorts, flac: bytes) -> None:
    run = trio.to_thread.run_sync
    ok: bool
    if name == "idle_flood":
        async with trio.open_nursery() as nursery:
            for port in (ports.http, ports.websocket, ports.wyoming):
                nursery.start_soon(_idle_flood, port, 40)
        ok = True  # the normal sessions beside it are the proof
    elif name == "header_bomb":
        status = await run(_upload, ports.http, flac)
        ok, detail = status == 413, f"status {status}"
    elif name == "chunked_body":
        status = await run(_chunked, ports.http, 64)
        ok, detail = status == 413, f"status {status}"
    elif name == "wyoming_bad_start":
        kind = await run(_wyoming_bad_start, ports.wyoming)
        ok, detail = kind == "error", f"answered {kind!r}"
    elif name == "bad_language":
        closed = await _bad_language(ports.websocket)
        ok, detail = closed is not None and closed[0] == 1008, f"closed {closed}"
    elif name == "zmq_endless_message":
        cut = await run(_endless_message, ports.zmq_events, 32)
        ok, detail = cut, "32 MB taken without a hang-up"
    else:
        await run(_catchup_spam, ports.catchup, 500)
        ok = True
    tally.rounds[name] += 1
    if not ok:
        tally.unexpected.append(f"{name}: {detail}")


ATTACKS = (
    "idle_flood",
    "header_bomb",
    "chunked_body",
    "wyoming_bad_start",
    "bad_language",
    "catchup_spam",
    "zmq_endless_message",
)


async def run_hostile_load(
    ports: HostilePorts, until: float, tally: HostileTally, *, pause_s: float = 1.0
) -> None:
    """Every attack in turn, one round at a time, until ``until`` (trio's clock)."""
    # 120 s of 8-channel 48 kHz silence: ~90 MB as float32 once decoded, 60 KB as FLAC;
    # the soak sets openai.max_audio_s below it, so it must be refused from its header.
    flac = await trio.to_thread.run_sync(silent_flac, 120, 8)
    while trio.current_time() < until:
        for name in ATTACKS:
            if trio.current_time() >= until:
                return
            try:
                with trio.fail_after(_ROUND_TIMEOUT_S):
                    await _round(name, tally, ports, flac)
            except (OSError, trio.TooSlowError) as exc:
                tally.rounds[name] += 1
                tally.unexpected.append(f"{name}: {type(exc).__name__}: {exc}")
            await trio.sleep(pause_s)
