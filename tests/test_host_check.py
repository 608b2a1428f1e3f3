"""DNS rebinding: a request whose Host does not name the service is refused (421)
on every route of both ports, before anything is read or streamed.

A page on attacker.example whose name is then pointed at 127.0.0.1 is, to the
browser, its own origin: a simple GET carries no Origin header, so before the
Host check ``GET /api/transcripts`` with ``Host: attacker.example`` answered
200 with the transcripts. Real in-process services, raw requests on real
sockets (a client library would write the Host from the URL).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from rtap_trio.app import BoundPorts
from rtap_trio.errors import ConfigError

from .support import in_process_service, service_settings

pytestmark = pytest.mark.timeout(90)

TOKEN = "0123456789abcdef0123"
WEBSOCKET_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[BoundPorts]:
    settings = service_settings("pc2", **{"audio.source": "none", **overrides})
    service = in_process_service(settings)
    async with trio.open_nursery() as nursery:
        ports: BoundPorts = await nursery.start(service.run)
        try:
            yield ports
        finally:
            service.stop()


async def exchange(port: int, head: str, *, head_only: bool = False) -> bytes:
    """``head`` (request line and headers, CRLF-separated) on a fresh connection;
    what comes back until the server closes (or, with ``head_only``, until the
    response's headers have come: an accepted WebSocket stays open) or 2 s pass."""

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall((head + "\r\n\r\n").encode())
            sock.settimeout(2)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                    if head_only and b"\r\n\r\n" in b"".join(chunks):
                        break
            except (TimeoutError, ConnectionResetError):
                pass
        return b"".join(chunks)

    return await trio.to_thread.run_sync(run)


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:120]
    return int(answer.split(b" ", 2)[1])


async def get(port: int, path: str, host: str | None, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", *([f"Host: {host}"] if host is not None else [])]
    return await exchange(port, "\r\n".join([*lines, *headers, "Connection: close"]))


async def handshake(port: int, path: str, host: str, *headers: str) -> int:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {WEBSOCKET_KEY}",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    return status(await exchange(port, "\r\n".join(lines), head_only=True))


async def test_a_foreign_host_is_refused_on_every_route_of_both_ports() -> None:
    async with running() as ports:
        http, ws = ports.telemetry, ports.websocket
        assert http is not None and ws is not None
        # The finding: transcripts to a page on a rebound name.
        answer = await get(http, "/api/transcripts", "attacker.example")
        assert status(answer) == 421, answer[:300]
        assert b"attacker.example" in answer and b"allowed_hosts" in answer
        # Every route of the HTTP port, the probes' and the console's too.
        for path in ("/api/transcripts", "/api/config", "/health", "/metrics", "/", "/v1/models"):
            for host in (f"attacker.example:{http}", "attacker.example", "10.1.2.3", "a b"):
                assert status(await get(http, path, host)) == 421, (path, host)
        # WebSockets on both ports: the Realtime route (hypercorn) and 5802.
        assert await handshake(http, "/v1/realtime", "attacker.example") == 421
        assert await handshake(ws, "/", f"attacker.example:{ws}") == 421
        assert await handshake(ws, "/v1/audio", "attacker.example") == 421

        # What names this service passes: loopback names, with or without a
        # port, and this machine's own name; a request without Host (HTTP/1.0).
        machine = socket.gethostname()
        for host in (f"127.0.0.1:{http}", "localhost", f"[::1]:{http}", "LOCALHOST.", machine):
            assert status(await get(http, "/api/transcripts", host)) == 200, host
        answer = await exchange(http, "GET /health HTTP/1.0\r\nConnection: close")
        assert status(answer) == 200
        assert await handshake(ws, "/", f"localhost:{ws}") == 101
        async with open_websocket_url(f"ws://127.0.0.1:{ws}/") as client:
            assert b"hello" in (await client.get_message()).encode()


async def test_bound_to_every_interface_addresses_and_allowed_hosts_pass() -> None:
    # The container's case: 0.0.0.0, so the token is required; clients reach
    # the service by an address or by a name the operator lists.
    overrides = {
        "output.bind_address": "0.0.0.0",
        "http.bind_address": "0.0.0.0",
        "security.token": TOKEN,
        "security.allowed_hosts": ["rtap.example", "[fd00::7]"],
    }
    bearer = f"Authorization: Bearer {TOKEN}"
    async with running(**overrides) as ports:
        http, ws = ports.telemetry, ports.websocket
        assert http is not None and ws is not None
        for host in (f"rtap.example:{http}", "RTAP.example", f"192.0.2.7:{http}", "[fd00::7]:1"):
            assert status(await get(http, "/api/transcripts", host, bearer)) == 200, host
        for host in ("attacker.example", f"rtap.example.attacker.example:{http}"):
            assert status(await get(http, "/api/transcripts", host, bearer)) == 421, host
            assert status(await get(http, "/health", host)) == 421, host
        # The Host check comes first; the token is still needed after it.
        assert status(await get(http, "/api/transcripts", "rtap.example")) == 401
        assert await handshake(ws, "/", "rtap.example", bearer) == 101
        assert await handshake(ws, "/", "attacker.example", bearer) == 421


def test_allowed_hosts_are_host_names_or_addresses() -> None:
    settings = service_settings("pc2", **{"security.allowed_hosts": ["Main-PC.lan.", "::1", "*"]})
    assert settings.security.allowed_hosts == ("main-pc.lan", "::1", "*")
    for bad in ("http://main-pc", "main-pc:8080", "main pc", "main-pc/x"):
        with pytest.raises(ConfigError, match="allowed_hosts"):
            service_settings("pc2", **{"security.allowed_hosts": [bad]})
