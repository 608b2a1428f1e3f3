"""WebSocket fan-out: delivery delay with many connected clients.

The service's own :class:`~rtap_trio.transport.websocket.WebSocketServer`
serves an :class:`~rtap_trio.transport.outbox.Outbox` on 127.0.0.1; real
trio-websocket clients connect, then transcript-sized messages are published
at a steady rate. Delay is the client's receive time minus the message's
``emitted_at``. By default the clients run in a child process
(``python -m rtap_trio.bench.fanout``), as browsers would be; in-process
clients share the server's event loop and so add their own reading to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from ..metrics import Metrics
from ..settings import OutputSettings
from ..transport.outbox import Outbox
from ..transport.schemas import LatencyBreakdown
from ..transport.websocket import WebSocketServer
from .common import summarize

__all__ = ["measure_fanout"]


async def _client(
    port: int, delays: list[float], counts: list[int], slot: int, connected: trio.Semaphore
) -> None:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/?topics=transcripts") as ws:
        connected.release()
        try:
            while True:
                message = json.loads(await ws.get_message())
                received = time.time()
                if message["kind"] != "transcript":  # the server's hello notice
                    continue
                delays.append(received - message["emitted_at"])
                counts[slot] += 1
        except ConnectionClosed:
            return


def _publish(outbox: Outbox, number: int) -> None:
    outbox.transcript(
        session_id="bench",
        utterance_id=f"bench-{number:04d}",
        text="Computer, what is the weather in Berlin today? " * 2,
        language="en",
        language_confidence=0.93,
        sentiment="neutral",
        sentiment_confidence=0.8,
        wake_word="computer",
        audio_start_s=1.0,
        audio_end_s=4.2,
        model="tiny.en",
        latency_ms=LatencyBreakdown(endpoint=600, queue=0.1, stt=400, total=402),
    )


async def _child_clients(port: int, clients: int) -> None:
    """The child's side: connect every client, say so, report delays when the server closes."""
    delays: list[float] = []
    counts = [0] * clients
    connected = trio.Semaphore(0, max_value=clients)
    async with trio.open_nursery() as nursery:
        for slot in range(clients):
            nursery.start_soon(_client, port, delays, counts, slot, connected)
        for _ in range(clients):
            await connected.acquire()
        print("connected", flush=True)
    print(json.dumps({"delays": delays, "counts": counts}), flush=True)


async def _run_child(port: int, clients: int, result: dict[str, Any], ready: trio.Event) -> None:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "rtap_trio.bench.fanout",
            "--port",
            str(port),
            "--clients",
            str(clients),
        ],
        stdout=-1,  # subprocess.PIPE
    )
    assert process.stdout is not None
    buffer = b""
    try:
        async for chunk in process.stdout:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line == b"connected":
                    ready.set()
                elif line.startswith(b"{"):
                    result.update(json.loads(line))
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def measure_fanout(
    clients: int, messages: int, interval_s: float, *, child: bool = True
) -> dict[str, Any]:
    settings = OutputSettings(
        websocket_port=0, websocket_max_clients=max(clients, 200), zmq_enabled=False
    )
    outbox = Outbox()
    emitter = WebSocketServer(settings, outbox, Metrics())
    delays: list[float] = []
    counts = [0] * clients
    from_child: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(emitter.run)
        connect_started = time.perf_counter()
        with trio.fail_after(30):
            if child:
                ready = trio.Event()
                nursery.start_soon(_run_child, port, clients, from_child, ready)
                await ready.wait()
            else:
                connected = trio.Semaphore(0, max_value=clients)
                for slot in range(clients):
                    nursery.start_soon(_client, port, delays, counts, slot, connected)
                for _ in range(clients):
                    await connected.acquire()
            # Each client's outbox subscription is made after its handshake, inside
            # the emitter, which signals nothing: watching its statistics is the way.
            while outbox.statistics().subscribers < clients:  # noqa: ASYNC110
                await trio.sleep(0.01)
        connect_s = time.perf_counter() - connect_started
        for number in range(messages):
            _publish(outbox, number)
            await trio.sleep(interval_s)
        with trio.move_on_after(10):
            while not child and min(counts) < messages:  # noqa: ASYNC110 - 100 counters
                await trio.sleep(0.01)
        # Closing the outbox sends each client what is queued, then a close frame.
        outbox.close()
        with trio.move_on_after(10):
            await emitter.drained()
        emitter.close()
    if child:
        delays, counts = from_child.get("delays", []), from_child.get("counts", [0] * clients)
    complete = sum(1 for count in counts if count >= messages)
    return {
        "clients": clients,
        "messages": messages,
        "interval_ms": round(interval_s * 1000, 1),
        "connect_s": round(connect_s, 2),
        "clients_all_received": complete,
        "deliveries": len(delays),
        "delay_ms": summarize((d * 1000 for d in delays), 2),
        "clients_in": "child process" if child else "the server's process",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket clients for the fan-out benchmark")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    trio.run(_child_clients, args.port, args.clients)


if __name__ == "__main__":
    main()
