"""Ordinary clients that used to stop, wedge or bloat the service (issue 12, part 1).

Each test reproduces what a client did and checks that only that client
suffered: the listener keeps serving, its slot is given back, memory stays flat.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Awaitable, Callable

import psutil
import pytest
import trio
from trio_websocket import open_websocket_url

from rtap_trio.events import StateChanged, WakeWord
from rtap_trio.http_port import serve_http_port
from rtap_trio.metrics import Metrics
from rtap_trio.settings import HttpSettings, OutputSettings
from rtap_trio.supervisor import RestartPolicy, Supervisor
from rtap_trio.transport.outbox import Outbox
from rtap_trio.transport.schemas import Stream
from rtap_trio.transport.websocket import WebSocketServer
from rtap_trio.transport.zmq import ZmqPublisher

from .support import ZmqCollector

_HANDSHAKE = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN, as a crashed client or a proxy does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def raw_handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(_HANDSHAKE.encode())
    answer = await trio.to_thread.run_sync(sock.recv, 4096)
    assert answer.startswith(b"HTTP/1.1 101"), answer[:80]
    return sock


async def serve_websocket_under_supervision(
    settings: OutputSettings,
    outbox: Outbox,
    metrics: Metrics,
    body: Callable[[WebSocketServer, int, Supervisor], Awaitable[None]],
) -> Supervisor:
    supervisor = Supervisor(RestartPolicy(max_restarts=0))
    server = WebSocketServer(settings, outbox, metrics)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(supervisor.supervise_started, "websocket", server.run)
        await body(server, port, supervisor)
        server.close()
    return supervisor


async def wait_for_clients(server: WebSocketServer, count: int) -> None:
    with trio.fail_after(10):
        while server.clients != count:
            await trio.sleep(0.01)


@pytest.mark.timeout(60)
async def test_websocket_clients_that_reset_or_leave_early_cost_only_themselves() -> None:
    # With max_restarts=0 a single crash of the listener would end the run.
    settings = OutputSettings(websocket_port=0, websocket_max_clients=5)
    metrics = Metrics()
    outbox = Outbox()

    async def body(server: WebSocketServer, port: int, supervisor: Supervisor) -> None:
        async def chatter() -> None:
            while True:  # messages on the way while clients come and go
                outbox.event(StateChanged(from_state="IDLE", to="IDLE", reason="x" * 2000), "s1")
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(chatter)
            for _ in range(10):
                reset(await raw_handshake(port))  # RST right after the handshake
            for _ in range(10):  # leaves right after its first message
                sock = await raw_handshake(port)
                await trio.to_thread.run_sync(sock.recv, 10)
                reset(sock)
            await wait_for_clients(server, 0)  # every slot was given back
            # A real client is still served, all five slots are there.
            async with trio.open_nursery() as clients:
                for _ in range(5):
                    clients.start_soon(receive_one, port)
            nursery.cancel_scope.cancel()
        assert supervisor.statistics()["websocket"].crashes == 0

    supervisor = await serve_websocket_under_supervision(settings, outbox, metrics, body)
    assert supervisor.statistics()["websocket"].starts == 1


async def receive_one(port: int) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            assert await ws.get_message()


@pytest.mark.timeout(60)
async def test_websocket_client_cap_holds_under_concurrent_connects() -> None:
    settings = OutputSettings(websocket_port=0, websocket_max_clients=5)
    metrics = Metrics()
    outbox = Outbox()
    statuses: list[bytes] = []
    sockets: list[socket.socket] = []

    async def connect(port: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(sock)
        sock.sendall(_HANDSHAKE.encode())
        statuses.append((await trio.to_thread.run_sync(sock.recv, 4096))[:12])

    async def body(server: WebSocketServer, port: int, supervisor: Supervisor) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(connect, port)
        assert server.clients == 5
        for sock in sockets:
            reset(sock)
        await wait_for_clients(server, 0)

    await serve_websocket_under_supervision(settings, outbox, metrics, body)
    assert statuses.count(b"HTTP/1.1 101") == 5
    assert statuses.count(b"HTTP/1.1 503") == 35


@pytest.mark.timeout(30)
async def test_head_requests_answer_like_get_without_a_body() -> None:
    metrics = Metrics()
    settings = HttpSettings(port=0)
    supervisor = Supervisor(RestartPolicy(max_restarts=0))

    def health() -> dict[str, object]:
        return {"status": "ok"}

    async def request(port: int, text: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(text.encode())
            chunks = []
            try:
                while chunk := await trio.to_thread.run_sync(sock.recv, 65536):
                    chunks.append(chunk)
            except ConnectionResetError:  # closed with our request unread
                pass
        return b"".join(chunks)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            supervisor.supervise_started,
            "telemetry",
            lambda task_status: serve_http_port(settings, metrics, health, task_status=task_status),
        )
        get = await request(port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = get.split(b"\r\n\r\n", 1)[1]
        assert json.loads(body) == {"status": "ok"}
        for _ in range(10):  # six used to exhaust the restart policy
            head = await request(
                port, "HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n"), head
            assert f"content-length: {len(body)}".encode() in head.lower()
        # Headers past the limit get an error status, not a crash.
        huge = await request(port, "GET / HTTP/1.1\r\nX: " + "a" * 100_000 + "\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 431") or huge == b"", huge[:80]
        nursery.cancel_scope.cancel()
    assert supervisor.statistics()["telemetry"].crashes == 0


def _zmtp_sub_greeting() -> bytes:
    """A ZMTP 3.0 NULL-mechanism greeting and READY command for a SUB socket (RFC 23)."""
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00")
    greeting += b"\x00" + b"\x00" * 31
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB"
    return greeting + bytes([0x04, len(body)]) + body


@pytest.mark.timeout(60)
async def test_zmq_peer_announcing_a_huge_frame_is_cut_off_without_memory_growth() -> None:
    outbox = Outbox()
    publisher = ZmqPublisher("events", "127.0.0.1", 0, 1000, 64)
    process = psutil.Process()
    before = process.memory_info().rss
    sent = 0
    try:
        sock = socket.create_connection(("127.0.0.1", publisher.port), timeout=5)
        sock.sendall(_zmtp_sub_greeting())
        # A message frame announcing 4 GiB, then the stream behind it.
        sock.sendall(b"\x02" + struct.pack(">Q", 4 << 30))
        chunk = b"\x01" * (1 << 20)

        def stream() -> int:
            total = 0
            try:
                for _ in range(300):
                    sock.sendall(chunk)
                    total += len(chunk)
            except OSError:  # the publisher hung up on us: the point of the test
                pass
            return total

        sent = await trio.to_thread.run_sync(stream)
        reset(sock)
        grown_mb = (process.memory_info().rss - before) / 1e6
        # Before the limit, 300 MB streamed meant about 300 MB more RSS.
        assert grown_mb < 50, f"RSS grew {grown_mb:.0f} MB after {sent / 1e6:.0f} MB sent"
        assert sent < 300 * len(chunk), "the peer was never disconnected"

        # The publisher still serves well-behaved subscribers.
        subscription = outbox.subscribe("zmq-events", (Stream.EVENTS,), 100)
        collector = ZmqCollector(publisher.port)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publisher.run, subscription)
                await collector.wait_connected()
                with trio.fail_after(10):
                    while not collector.messages:
                        outbox.event(WakeWord(keyword="computer", offset_s=0.0), "s1")
                        with trio.move_on_after(0.2):
                            await collector.collect_until(lambda m: True, 1)
                outbox.close()
        finally:
            collector.close()
    finally:
        publisher.close()


def test_binding_off_loopback_without_a_token_is_a_configuration_error() -> None:
    from rtap_trio.app import is_loopback
    from rtap_trio.errors import ConfigError

    from .support import service_settings

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    for key in ("output.bind_address", "http.bind_address"):
        with pytest.raises(ConfigError, match=f"{key} is 0.0.0.0.*security.token is not set"):
            service_settings("pc2", **{key: "0.0.0.0"})
    with pytest.raises(ConfigError, match="at least 16 characters"):
        service_settings("pc2", **{"security.token": "short"})


@pytest.mark.timeout(60)
async def test_binding_off_loopback_with_a_token_says_what_has_no_authentication() -> None:
    from loguru import logger

    from .support import in_process_service, service_settings

    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING", format="{message}")
    try:
        settings = service_settings(
            "pc2",
            **{
                "audio.source": "none",
                "output.bind_address": "0.0.0.0",
                "http.bind_address": "0.0.0.0",
                "security.token": "0123456789abcdef0123",
            },
        )
        service = in_process_service(settings)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            service.stop()
    finally:
        logger.remove(sink)
    assert any("ZeroMQ on 0.0.0.0 without authentication" in w for w in warnings), warnings
