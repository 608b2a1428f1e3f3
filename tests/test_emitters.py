"""Emitters on real sockets: restart after a broken socket, back-pressure per client."""

from __future__ import annotations

import trio
from trio_websocket import open_websocket_url

from rtap_trio.events import StateChanged, WakeWord
from rtap_trio.metrics import Metrics
from rtap_trio.settings import OutputSettings
from rtap_trio.supervisor import RestartPolicy, Supervisor
from rtap_trio.transport.outbox import Outbox
from rtap_trio.transport.schemas import (
    EventMessage,
    Stream,
    WatcherNotice,
    parse_message,
)
from rtap_trio.transport.websocket import WebSocketServer
from rtap_trio.transport.zmq import ZmqPublisher

from .support import ZmqCollector


async def publish_until_received(outbox: Outbox, collector: ZmqCollector, keyword: str) -> None:
    """PUB/SUB has no delivery guarantee until the subscription has reached the
    publisher, which happens some time after the handshake: publish until one arrives."""
    with trio.fail_after(10):
        while True:
            outbox.event(WakeWord(keyword=keyword, offset_s=0.0), "s1")
            with trio.move_on_after(0.2):
                await collector.collect_until(lambda m: m.data.get("keyword") == keyword, 1)
                return


async def test_zmq_emitter_restarts_on_a_fresh_socket_and_loses_nothing() -> None:
    outbox = Outbox()
    publisher = ZmqPublisher("events", "127.0.0.1", 0, 1000, 64)
    subscription = outbox.subscribe("zmq-events", (Stream.EVENTS,), 100)
    supervisor = Supervisor(RestartPolicy(backoff_initial_s=0.05))
    collector = ZmqCollector(publisher.port)
    after = [f"after-{n}" for n in range(5)]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                supervisor.supervise, "zmq-events", lambda: publisher.run(subscription)
            )
            await collector.wait_connected()
            await publish_until_received(outbox, collector, "computer")

            publisher.close()  # the fault: the socket is gone under the running emitter
            outbox.event(WakeWord(keyword="in-flight", offset_s=0.0), "s1")  # its send fails
            with trio.fail_after(10):
                while supervisor.statistics()["zmq-events"].crashes < 1:
                    await trio.sleep(0.01)
            for keyword in after:  # published while the emitter backs off and rebinds
                outbox.event(WakeWord(keyword=keyword, offset_s=0.0), "s1")
            await collector.collect_until(lambda m: m.data.get("keyword") == after[-1], 10)
            outbox.close()
    finally:
        collector.close()
        publisher.close()
    stats = supervisor.statistics()["zmq-events"]
    assert (stats.starts, stats.crashes) == (2, 1)
    keywords = [m.data["keyword"] for _, m in collector.messages if isinstance(m, EventMessage)]
    # Everything after the first delivery arrives exactly once, in order: the
    # message whose send failed is sent again once the subscriber is back.
    tail = [k for k in keywords if k != "computer"]
    assert tail == ["in-flight", *after]


async def test_slow_websocket_client_loses_oldest_without_stalling_others() -> None:
    settings = OutputSettings(websocket_port=0, websocket_client_queue=8)
    metrics = Metrics()
    outbox = Outbox(on_drop=lambda name: metrics.messages_dropped.labels(name).inc())
    # A generous send budget: this test is about the queue, not about stuck clients.
    emitter = WebSocketServer(settings, outbox, metrics, send_budget_s=60)
    # Messages big enough that the slow client's socket buffers (a few MB on
    # loopback) fill and its queue in the server has to drop.
    blob = "x" * 40_000
    fast: list[int] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(emitter.run)
        async with (
            open_websocket_url(f"ws://127.0.0.1:{port}/") as slow_ws,
            open_websocket_url(f"ws://127.0.0.1:{port}/") as fast_ws,
        ):
            with trio.fail_after(5):
                while emitter.clients < 2:
                    await trio.sleep(0.01)

            # Each is greeted first: the service and where each stream stands.
            for ws in (slow_ws, fast_ws):
                hello = parse_message(await ws.get_message())
                assert isinstance(hello, WatcherNotice) and hello.type == "hello"
                assert hello.next_seq == {"events": 0, "transcripts": 0, "levels": 0}
            # Lockstep with the fast client while the slow one reads nothing:
            # the fast one still gets every message.
            with trio.fail_after(30):
                for _ in range(500):
                    outbox.event(StateChanged(from_state="IDLE", to="IDLE", reason=blob), "s1")
                    message = parse_message(await fast_ws.get_message())
                    assert isinstance(message, EventMessage)
                    fast.append(message.seq)
            # The slow client reads only now: it gets what fits in its queue,
            # newest last, told how many were lost before the first after a gap.
            slow: list[int] = []
            told = 0
            with trio.fail_after(30):
                while not slow or slow[-1] != 499:
                    message = parse_message(await slow_ws.get_message())
                    if isinstance(message, WatcherNotice):
                        assert message.type == "messages_dropped" and message.count
                        told += message.count
                    else:
                        assert isinstance(message, EventMessage)
                        slow.append(message.seq)
        emitter.close()
    assert fast == list(range(500))
    assert slow[-1] == 499 and len(slow) < 500
    dropped = sum(
        sample.value
        for metric in metrics.registry.collect()
        if metric.name == "rtap_messages_dropped"
        for sample in metric.samples
        if sample.name == "rtap_messages_dropped_total"
    )
    assert dropped == 500 - len(slow) == told


async def test_websocket_client_that_stops_reading_is_disconnected_after_the_emit_budget() -> None:
    settings = OutputSettings(websocket_port=0, websocket_client_queue=64)
    metrics = Metrics()
    outbox = Outbox()
    emitter = WebSocketServer(settings, outbox, metrics, send_budget_s=0.2)
    payload = "x" * 30_000  # big events fill the socket buffers quickly
    async with trio.open_nursery() as nursery:
        port = await nursery.start(emitter.run)
        async with open_websocket_url(f"ws://127.0.0.1:{port}/", message_queue_size=1):
            with trio.fail_after(5):
                while emitter.clients < 1:
                    await trio.sleep(0.01)
            # The client reads nothing: TCP buffers fill, a send blocks, the
            # budget passes, the server lets the client go.
            with trio.fail_after(30):
                while emitter.clients:
                    outbox.event(StateChanged(from_state="IDLE", to="IDLE", reason=payload), "s1")
                    await trio.sleep(0.001)
        emitter.close()
    exceeded = metrics.registry.get_sample_value(
        "rtap_stage_budget_exceeded_total", {"stage": "emit"}
    )
    assert exceeded == 1.0
