"""ZeroMQ ports under hostile peers: what one peer can make the service hold.

Issue 16, measured with libzmq 4.3.5 serving the ports: a peer that sends the
frames of a message that never ends (MORE set on each) was buffered without
limit (294 MB sent: +571 MB RSS); distinct subscriptions were all kept (10 000
of 900 bytes: +424 MB); connections were never capped. The ports are now
served by RTAP's own ZMTP server. The hostile peers here speak raw ZMTP over
TCP on 127.0.0.1 (what a libzmq peer would send, minus the politeness); the
well-behaved ones are real pyzmq sockets.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Awaitable, Callable

import psutil
import pytest
import trio
import trio.lowlevel
import zmq

from rtap_trio.events import WakeWord
from rtap_trio.settings import OutputSettings
from rtap_trio.transport.catchup import ZmqCatchup
from rtap_trio.transport.outbox import Outbox
from rtap_trio.transport.schemas import CatchupReply, Stream
from rtap_trio.transport.zmq import MAX_SUBSCRIPTIONS, ZmqPublisher

from .support import ZmqCollector

pytestmark = pytest.mark.timeout(120)

#: RSS growth allowed under each attack: before, each grew it by 190-570 MB.
BOUND_MB = 40


def greeting(socket_type: bytes) -> bytes:
    """A ZMTP 3.0 NULL greeting and READY, as libzmq sends them (RFC 23)."""
    head = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00")
    body = b"\x05READY\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return head + bytes(32) + bytes([0x04, len(body)]) + body


def frame(data: bytes, *, more: bool = False) -> bytes:
    return bytes([0x01 if more else 0x00, len(data)]) + data


async def eventually(condition: Callable[[], bool]) -> None:
    """The server counts a disconnection after it has closed the socket, which
    the peer may notice first."""
    with trio.fail_after(5):
        while not condition():
            await trio.sleep(0.01)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def attack(port: int, socket_type: bytes, chunk: bytes, total_mb: int) -> int:
    """Greet, then stream ``chunk`` until ``total_mb`` are sent or the server
    hangs up; the bytes sent (blocking: run it in a thread)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(greeting(socket_type))
        try:
            while sent < total_mb * 1_000_000:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server hung up on us: the point of the test
            pass
    return sent


async def published_and_received(outbox: Outbox, port: int) -> None:
    """A real SUB socket still gets what is published."""
    collector = ZmqCollector(port)
    try:
        await collector.wait_connected()
        with trio.fail_after(10):
            while not collector.messages:
                outbox.event(WakeWord(keyword="computer", offset_s=0.0), "s1")
                with trio.move_on_after(0.2):
                    await collector.collect_until(lambda m: True, 1)
    finally:
        collector.close()


async def with_publisher(
    check: Callable[[ZmqPublisher, Outbox], Awaitable[None]], **options: int
) -> None:
    outbox = Outbox()
    publisher = ZmqPublisher(
        "events", "127.0.0.1", 0, options.get("send_hwm", 1000), options.get("max_connections", 64)
    )
    subscription = outbox.subscribe("zmq-events", (Stream.EVENTS,), 100)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher.run, subscription)
            await check(publisher, outbox)
            outbox.close()
    finally:
        publisher.close()


async def test_a_message_that_never_ends_is_cut_off_at_its_second_frame() -> None:
    async def check(publisher: ZmqPublisher, outbox: Outbox) -> None:
        before = rss_mb()
        # 255-byte frames, each with MORE set: libzmq buffered all of them.
        chunk = frame(b"\x01" + b"x" * 254, more=True) * 4000
        sent = await trio.to_thread.run_sync(attack, publisher.port, b"SUB", chunk, 200)
        grown = rss_mb() - before
        assert grown < BOUND_MB, f"RSS grew {grown:.0f} MB after {sent / 1e6:.0f} MB sent"
        assert sent < 200_000_000, "the peer was never disconnected"
        await eventually(lambda: publisher.disconnected == 1)
        await published_and_received(outbox, publisher.port)

    await with_publisher(check)


async def test_a_frame_announcing_gigabytes_is_refused_from_its_header() -> None:
    async def check(publisher: ZmqPublisher, outbox: Outbox) -> None:
        before = rss_mb()
        chunk = b"\x02" + struct.pack(">Q", 4 << 30) + b"\x01" * (1 << 20)
        sent = await trio.to_thread.run_sync(attack, publisher.port, b"SUB", chunk, 300)
        grown = rss_mb() - before
        assert grown < BOUND_MB, f"RSS grew {grown:.0f} MB after {sent / 1e6:.0f} MB sent"
        assert sent < 300_000_000, "the peer was never disconnected"
        await published_and_received(outbox, publisher.port)

    await with_publisher(check)


async def test_subscriptions_are_capped_per_subscriber() -> None:
    async def check(publisher: ZmqPublisher, outbox: Outbox) -> None:
        before = rss_mb()
        # 20 000 distinct topics of 200 bytes (libzmq kept every one in its trie).
        chunk = b"".join(frame(b"\x01" + f"{n:08d}".encode() * 25) for n in range(20_000))
        sent = await trio.to_thread.run_sync(attack, publisher.port, b"SUB", chunk, 4)
        grown = rss_mb() - before
        assert grown < BOUND_MB, f"RSS grew {grown:.0f} MB"
        await eventually(lambda: publisher.disconnected == 1)
        assert publisher.subscriptions == MAX_SUBSCRIPTIONS
        # A subscription longer than a topic can be: disconnected at once.
        long = frame(b"\x01" + b"t" * 254) + b"\x02" + struct.pack(">Q", 900) + b"\x01" * 900
        await trio.to_thread.run_sync(attack, publisher.port, b"SUB", long, 1)
        await eventually(lambda: publisher.disconnected == 2)
        assert sent < 4_000_000 or sent == len(chunk)
        await published_and_received(outbox, publisher.port)

    await with_publisher(check)


async def test_only_subscribers_may_connect_and_only_to_subscribe() -> None:
    async def check(publisher: ZmqPublisher, outbox: Outbox) -> None:
        # A PUB cannot talk to a PUB; a SUB may not send data.
        await trio.to_thread.run_sync(attack, publisher.port, b"PUB", frame(b"\x01"), 1)
        await trio.to_thread.run_sync(attack, publisher.port, b"SUB", frame(b"hello"), 1)
        await eventually(lambda: publisher.disconnected == 2)
        await published_and_received(outbox, publisher.port)

    await with_publisher(check)


async def test_connections_past_the_cap_are_closed_at_once() -> None:
    async def check(publisher: ZmqPublisher, outbox: Outbox) -> None:
        held = []
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", publisher.port), timeout=5)
            sock.sendall(greeting(b"SUB"))
            held.append(sock)
        with trio.fail_after(5):
            while publisher.connections.open < 4:
                await trio.sleep(0.01)
        extra = socket.create_connection(("127.0.0.1", publisher.port), timeout=5)
        assert await trio.to_thread.run_sync(extra.recv, 100) == b""  # closed, nothing said
        extra.close()
        assert publisher.connections.statistics()["refused"] == 1
        held.pop().close()
        await published_and_received(outbox, publisher.port)
        for sock in held:
            sock.close()

    await with_publisher(check, max_connections=4)


async def test_a_subscriber_that_never_reads_holds_its_queue_and_no_more() -> None:
    async def check(publisher: ZmqPublisher, outbox: Outbox) -> None:
        silent = socket.create_connection(("127.0.0.1", publisher.port), timeout=5)
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        silent.sendall(greeting(b"SUB") + frame(b"\x01"))
        with trio.fail_after(5):
            while not publisher.subscriptions:
                await trio.sleep(0.01)
        before = rss_mb()
        text = "x" * 10_000
        for n in range(3_000):  # 30 MB published, none of it read
            outbox.event(WakeWord(keyword=f"{n}{text}", offset_s=0.0), "s1")
            if n % 10 == 0:
                await trio.lowlevel.checkpoint()
        await trio.sleep(0.2)
        grown = rss_mb() - before
        assert grown < BOUND_MB / 2, f"RSS grew {grown:.0f} MB"
        assert publisher.dropped > 0 and publisher.sent - publisher.dropped < 200, (
            publisher.sent,
            publisher.dropped,
        )
        await published_and_received(outbox, publisher.port)
        silent.close()

    await with_publisher(check, send_hwm=20)


async def test_catchup_cuts_off_a_request_that_never_ends_and_answers_others() -> None:
    outbox = Outbox(history=10)
    catchup = ZmqCatchup("127.0.0.1", 0, outbox, "c0ffee123456", settings=OutputSettings())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(catchup.run)
        before = rss_mb()
        chunk = frame(b"y" * 255, more=True) * 4000
        sent = await trio.to_thread.run_sync(attack, port, b"DEALER", chunk, 200)
        grown = rss_mb() - before
        assert grown < BOUND_MB, f"RSS grew {grown:.0f} MB after {sent / 1e6:.0f} MB sent"
        assert sent < 200_000_000
        await eventually(lambda: catchup.disconnected == 1)

        def ask() -> bytes:
            context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
            req = context.socket(zmq.REQ)
            req.setsockopt(zmq.RCVTIMEO, 5000)
            req.connect(f"tcp://127.0.0.1:{port}")
            req.send(json.dumps({"after_seq": -1}).encode())
            try:
                return req.recv()
            finally:
                context.destroy(linger=0)

        reply = CatchupReply.model_validate_json(await trio.to_thread.run_sync(ask))
        assert reply.error is None and reply.service_id == "c0ffee123456"
        nursery.cancel_scope.cancel()
