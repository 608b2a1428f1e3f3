"""ZeroMQ catch-up under hostile peers: what a peer that asks and never reads costs.

Issue 16: 20 peers sending 1 100 requests each and never reading took the
service from 322 MB to 2.34 GB, every reply queued up to ZeroMQ's high-water
mark. The service here is the real command (``--source none``) with its
catch-up history filled by real sessions of generated speech; the peers are
real ZeroMQ sockets on 127.0.0.1 that never read (a tiny receive buffer and
high-water mark, so nothing drains into their own process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import zmq

from rtap_trio.audio.file import load_audio
from rtap_trio.client import open_audio_session
from rtap_trio.settings import OutputSettings
from rtap_trio.transport.catchup import ZmqCatchup
from rtap_trio.transport.outbox import Outbox
from rtap_trio.transport.schemas import CatchupReply, TranscriptMessage

from .support import REPO, RunningService, peak_rss_mb, reset_peak_rss, rss_mb, running_service

pytestmark = pytest.mark.timeout(300)

#: Fixtures spoken into the service to fill its catch-up history: 12 utterances,
#: so a reply is ~8 KB.
FILL = [
    "paused_sentences.wav",
    "two_utterances.wav",
    "en_no_wake.wav",
    "computer_garage.wav",
    "jarvis_lights.wav",
    "porcupine_music.wav",
    "bumblebee_tokyo.wav",
]
PEERS = 20
#: ZeroMQ's default high-water mark (1 000) plus what the kernel takes (~2 MB a peer).
REQUESTS = 1_300
#: Peak RSS growth allowed under the attack. Before the bounds the same attack
#: grew it by ~150 MB (20 peers x 1 000 queued replies of ~8 KB); now by ~2 MB.
BOUND_MB = 30


@dataclass(frozen=True)
class Filled:
    service: RunningService
    transcripts: list[TranscriptMessage]


def _ask(port: int, request: bytes, timeout_ms: int = 10_000) -> bytes:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        socket = context.socket(zmq.REQ)
        socket.setsockopt(zmq.RCVTIMEO, timeout_ms)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(f"tcp://127.0.0.1:{port}")
        socket.send(request)
        return socket.recv()
    finally:
        context.destroy(linger=0)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _wait_idle(pid: int, limit_s: float) -> None:
    """Until the process has used (almost) no CPU for a second, or ``limit_s`` passed."""
    deadline = time.monotonic() + limit_s
    last, quiet = _cpu_ticks(pid), 0
    while quiet < 4 and time.monotonic() < deadline:
        time.sleep(0.25)
        now = _cpu_ticks(pid)
        quiet = quiet + 1 if now - last <= 1 else 0
        last = now


async def _speak(port: int, speech_dir: Path) -> None:
    async def one(name: str) -> None:
        audio = load_audio(speech_dir / name, 16_000).astype(np.float32) / 32768
        async with open_audio_session(port, wake_word=False) as client:
            await client.send_audio(audio)
            await client.stop(limit_s=120)

    async with trio.open_nursery() as nursery:
        for name in FILL:
            nursery.start_soon(one, name)


@pytest.fixture(scope="module")
def filled(speech: dict[str, Any]) -> Iterator[Filled]:
    env = {
        "RTAP_LOG_LEVEL": "ERROR",
        # One transcription per utterance: no partials, no early pass, and
        # the silence timer alone ends them (no end-of-turn model to load and ask).
        "RTAP_STT__PARTIALS": "false",
        "RTAP_VAD__EARLY_MS": "0",
        "RTAP_TURN__ENGINE": "none",
        # Everything is sent at once and queues for the one STT worker: no timeouts.
        "RTAP_STT__BUDGET_MS": "120000",
    }
    with running_service("--profile", "pc2", "--source", "none", env=env) as service:
        assert service.ports.websocket and service.ports.catchup
        trio.run(_speak, service.ports.websocket, Path(speech["dir"]))
        reply = CatchupReply.model_validate_json(_ask(service.ports.catchup, b'{"limit": 1000}'))
        assert len(reply.transcripts) >= 10, [t.text for t in reply.transcripts]
        yield Filled(service, list(reply.transcripts))


def _silent_peer(context: zmq.Context[zmq.Socket[bytes]], port: int) -> zmq.Socket[bytes]:
    """A DEALER that never reads, and lets nothing drain into its own process."""
    peer = context.socket(zmq.DEALER)
    peer.setsockopt(zmq.RCVHWM, 1)
    peer.setsockopt(zmq.RCVBUF, 4096)
    peer.setsockopt(zmq.SNDHWM, 0)
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(f"tcp://127.0.0.1:{port}")
    return peer


def test_peers_that_ask_and_never_read_cost_a_bounded_amount(filled: Filled) -> None:
    service, kept = filled.service, filled.transcripts
    port = service.ports.catchup
    _wait_idle(service.pid, 30)
    reset_peak_rss(service.pid)
    before = rss_mb(service.pid)

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        peers = [_silent_peer(context, port) for _ in range(PEERS)]
        for _ in range(REQUESTS):
            for peer in peers:
                peer.send_multipart([b"", b'{"limit": 1000}'])

        # While the service works through 26 000 requests, an agent catches up
        # as docs/examples/subscriber.py does (REQ, one request) and gets it all.
        agent = subprocess.run(
            [
                sys.executable,
                str(REPO / "docs" / "examples" / "subscriber.py"),
                f"--transcripts-port={service.ports.transcripts}",
                f"--catchup-port={port}",
                f"--count={len(kept)}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert agent.returncode == 0, agent.stderr
        lines = [json.loads(line) for line in agent.stdout.splitlines()]
        assert [line["seq"] for line in lines] == [t.seq for t in kept]
        assert [line["text"] for line in lines] == [t.text for t in kept]

        _wait_idle(service.pid, 60)
        grown = peak_rss_mb(service.pid) - before

        # After the flood, a well-behaved client still gets its whole reply.
        reply = CatchupReply.model_validate_json(_ask(port, b'{"after_seq": -1, "limit": 1000}'))
        assert reply.error is None and reply.transcripts[: len(kept)] == kept
    finally:
        context.destroy(linger=0)
    assert grown < BOUND_MB, f"peak RSS grew {grown:.0f} MB under {PEERS}x{REQUESTS} requests"


def test_a_peer_over_its_rate_gets_an_error_reply_it_can_act_on(filled: Filled) -> None:
    port, kept = filled.service.ports.catchup, filled.transcripts
    defaults = OutputSettings()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        peer = context.socket(zmq.DEALER)
        peer.setsockopt(zmq.RCVTIMEO, 10_000)
        peer.setsockopt(zmq.LINGER, 0)
        peer.connect(f"tcp://127.0.0.1:{port}")
        asked = 4 * defaults.zmq_catchup_burst
        for _ in range(asked):
            peer.send_multipart([b"", b'{"limit": 1000}'])
        replies = []
        while len(replies) < asked:  # all, or until none came for 2 s
            try:
                replies.append(CatchupReply.model_validate_json(peer.recv_multipart()[-1]))
            except zmq.Again:
                break
            peer.setsockopt(zmq.RCVTIMEO, 2_000)
        full = [r for r in replies if r.error is None]
        limited = [r for r in replies if r.error is not None]
        # The burst is answered in full, the rest is told to wait; none is
        # answered with transcripts past the rate.
        assert full and all(r.transcripts[: len(kept)] == kept for r in full)
        assert len(full) <= 2 * defaults.zmq_catchup_burst
        assert limited and all(r.error and r.error.startswith("rate limited") for r in limited)
        assert all(r.transcripts == [] for r in limited)

        # It says when to ask again, and then the answer is the transcripts.
        error = limited[-1].error
        assert error is not None
        wait_s = float(error.rsplit("ask again in ", 1)[1].split()[0])
        time.sleep(wait_s + 0.3)
        peer.setsockopt(zmq.RCVTIMEO, 10_000)
        peer.send_multipart([b"", b'{"limit": 1000}'])
        again = CatchupReply.model_validate_json(peer.recv_multipart()[-1])
        assert again.error is None and again.transcripts[: len(kept)] == kept
    finally:
        context.destroy(linger=0)
    # Another client was never limited by it.
    other = CatchupReply.model_validate_json(_ask(port, b"{}"))
    assert other.error is None and other.transcripts[: len(kept)] == kept


async def test_a_reply_over_the_size_limit_is_cut_to_the_oldest_and_says_so(
    filled: Filled,
) -> None:
    # The service's own transcripts, kept 300 times over (~200 KB of JSON).
    outbox = Outbox(history=1000)
    for i in range(300):
        said = filled.transcripts[i % len(filled.transcripts)]
        outbox.transcript(**said.model_dump(exclude={"seq", "session_seq", "emitted_at", "kind"}))
    settings = OutputSettings(zmq_catchup_max_reply_bytes=65_536)
    catchup = ZmqCatchup("127.0.0.1", 0, outbox, "c0ffee123456", settings=settings)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(catchup.run)
        pages: list[bytes] = []
        after = -1
        while len(pages) < 10:
            request = json.dumps({"after_seq": after, "limit": 1000}).encode()
            raw = await trio.to_thread.run_sync(_ask, port, request)
            pages.append(raw)
            reply = CatchupReply.model_validate_json(raw)
            if not reply.truncated:
                break
            after = reply.transcripts[-1].seq
        nursery.cancel_scope.cancel()

    replies = [CatchupReply.model_validate_json(raw) for raw in pages]
    assert len(replies) >= 3, "200 KB comes in pages of at most 64 KiB"
    assert all(len(raw) <= 65_536 for raw in pages)
    assert all(r.truncated for r in replies[:-1]) and not replies[-1].truncated
    # Oldest first, nothing skipped, nothing twice, nothing counted as lost.
    seqs = [t.seq for r in replies for t in r.transcripts]
    assert seqs == list(range(300))
    assert all(r.lost == 0 and r.error is None for r in replies)
    # A reply that fits is byte for byte what it was before the flag existed.
    assert b'"truncated"' not in pages[-1] and b'"truncated":true' in pages[0]
    assert json.loads(pages[-1]).keys() == {
        "service_id",
        "transcripts",
        "oldest_seq",
        "next_seq",
        "lost",
        "error",
    }
