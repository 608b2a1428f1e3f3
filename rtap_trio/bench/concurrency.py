"""Many sessions at once: N ``/v1/audio`` clients streaming real speech at real-time pace.

The service is the real command, ``python -m rtap_trio --source none``, in a
child process with the bench's profile, so that its CPU and memory are its
own. For N = 1, 2, 4, 8 (the single session three times as long: it is the
ratios' denominator) the clients connect, then stream at once, each a
different rotation of the speech clips, client k's speech 0.35 k s late (talkers
do not end together), paced like a microphone (offset ``x`` of a client's audio
has been sent by ``t0 + x``). A transcript's latency is
its arrival at its client minus ``t0 +`` the end of speech (the end of the
last voiced frame, from the session's ``speech_end`` event): what a speaker
waits. Reported per N: latency p50/p95, the STT queue wait (in the session and
for the engine), the service's CPU (percent of one core) and peak RSS, and
the largest N whose p95 stays within 2x the single-session p95. Before that,
the cost of idle connected sessions: clients streaming silence (front-end
only) against the service with no session at all.

With ``balance`` (``bench --balance N``), the same runs go through HAProxy in
front of N such services (:mod:`.balancer`, the shipped configuration): the
clients connect to the balancer, and CPU and RSS are the instances' together.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import trio

from ..audio.pcm import pcm_to_float
from ..client import AudioSessionClient, open_audio_session
from ..events import SpeechEnd, parse_event
from ..items import Samples
from ..transport.schemas import EventType
from .balancer import behind_haproxy
from .common import (
    SAMPLE_RATE,
    Clip,
    concatenate,
    progress,
    service_child,
    service_command,
    summarize,
)
from .memory import proc_status_kb

__all__ = ["measure_concurrency"]

#: Each client sends 20 ms per message, as a browser's audio worklet would.
_CHUNK_S = 0.02
#: The target: N sessions "within 2x the single-session p95".
_WITHIN = 2.0
#: Session k starts speaking k times this late: independent talkers do not end
#: their utterances on the same 20 ms frame. With two clips (the corpus's English)
#: sessions k and k + 2 streamed the same audio from the same instant, so their
#: finals reached the one engine together, every time: four sessions at 2.90x the
#: single-session p95 that way (p95 1878 ms), 2.15-2.17x staggered (1249-1310 ms;
#: both against the largest of the single session's four utterances, before
#: _SINGLE_SESSION_FACTOR; 2026-12-04, pc2, docs/performance.md). Not a multiple
#: of the clips' gap (1.5 s).
_STAGGER_S = 0.35
#: How much longer the single session streams than each of several (below).
_SINGLE_SESSION_FACTOR = 3


class _Resources:
    """CPU seconds and RSS of the service processes (together), sampled while a run goes on."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak_rss = 0

    def cpu_s(self) -> float:
        return sum(float(t.user + t.system) for t in (p.cpu_times() for p in self.processes))

    async def watch_rss(self) -> None:
        while True:
            rss = sum(process.memory_info().rss for process in self.processes)
            self.peak_rss = max(self.peak_rss, rss)
            await trio.sleep(0.25)


def _to_float(samples: Samples) -> np.ndarray[Any, np.dtype[np.float32]]:
    return pcm_to_float(samples)


class _Clients:
    """The connected clients of a run, and an event once all of them are."""

    def __init__(self, expected: int) -> None:
        self.connected: list[AudioSessionClient] = []
        self.all_connected = trio.Event()
        self._expected = expected
        if not expected:
            self.all_connected.set()

    def add(self, client: AudioSessionClient) -> None:
        self.connected.append(client)
        if len(self.connected) >= self._expected:
            self.all_connected.set()


async def _stream(
    port: int, audio: Samples, clients: _Clients, go: trio.Event, limit_s: float
) -> None:
    async with open_audio_session(port, wake_word=False) as client:
        clients.add(client)
        await go.wait()
        await client.send_audio(_to_float(audio), chunk_s=_CHUNK_S, realtime=True)
        await client.stop(limit_s)


def _latencies(client: AudioSessionClient) -> tuple[dict[str, list[float]], int, int]:
    """Each transcript's latency and its parts (ms), utterances ended, utterances dropped.

    Parts: ``endpoint`` (the wait after the speech: timer or detector),
    ``queue`` (for an engine), ``after_endpoint`` (the rest: STT or the wait for
    the early transcript, and delivery)."""
    ends: dict[str, float] = {}
    for message in client.events:
        event = parse_event(message)
        if isinstance(event, SpeechEnd) and message.utterance_id:
            ends[message.utterance_id] = event.offset_s
    parts: dict[str, list[float]] = {
        "latency": [],
        "endpoint": [],
        "queue": [],
        "after_endpoint": [],
    }
    for transcript in client.transcripts:
        uid = transcript.utterance_id
        if uid in ends and uid in client.arrived_at:
            latency = (client.arrived_at[uid] - (client.stream_started + ends[uid])) * 1000
            parts["latency"].append(latency)
            parts["endpoint"].append(transcript.latency_ms.endpoint)
            parts["queue"].append(transcript.latency_ms.queue)
            parts["after_endpoint"].append(latency - transcript.latency_ms.endpoint)
    dropped = sum(
        1 for e in client.events if e.type in (EventType.UTTERANCE_DROPPED, EventType.STT_TIMEOUT)
    )
    return parts, len(ends), dropped


async def _run_level(
    port: int, audios: Sequence[Samples], resources: _Resources, limit_s: float
) -> dict[str, Any]:
    clients = _Clients(len(audios))
    go = trio.Event()
    resources.peak_rss = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(resources.watch_rss)
        async with trio.open_nursery() as streams:
            for audio in audios:
                streams.start_soon(_stream, port, audio, clients, go, limit_s)
            with trio.fail_after(30):
                await clients.all_connected.wait()
            cpu_before, wall_before = resources.cpu_s(), time.perf_counter()
            go.set()
        cpu = resources.cpu_s() - cpu_before
        wall = time.perf_counter() - wall_before
        nursery.cancel_scope.cancel()
    parts: dict[str, list[float]] = {}
    utterances = dropped = 0
    for client in clients.connected:
        client_parts, ended, lost = _latencies(client)
        for name, values in client_parts.items():
            parts.setdefault(name, []).extend(values)
        utterances += ended
        dropped += lost
    return {
        "sessions": len(audios),
        "audio_s_per_session": round(max(a.size for a in audios) / SAMPLE_RATE, 1),
        "utterances": utterances,
        "transcripts": len(parts.get("latency", [])),
        "dropped_or_timed_out": dropped,
        "latency_ms": summarize(parts.get("latency", []), 1),
        "queue_ms": summarize(parts.get("queue", []), 1),
        "endpoint_ms": summarize(parts.get("endpoint", []), 1),
        "after_endpoint_ms": summarize(parts.get("after_endpoint", []), 1),
        "cpu_percent": round(100 * cpu / wall, 1) if wall else None,
        "peak_rss_mb": round(resources.peak_rss / 2**20, 1),
        "seconds": round(wall, 1),
    }


async def _idle_cost(
    port: int, resources: _Resources, sessions: int, seconds: float
) -> dict[str, Any]:
    silence = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.int16)

    async def measure(count: int) -> float:
        clients = _Clients(count)
        go = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(_stream, port, silence, clients, go, 30.0)
            with trio.fail_after(30):
                await clients.all_connected.wait()
            before, started = resources.cpu_s(), time.perf_counter()
            if count:
                go.set()
            else:
                await trio.sleep(seconds)
        return 100 * (resources.cpu_s() - before) / (time.perf_counter() - started)

    baseline = await measure(0)
    loaded = await measure(sessions)
    return {
        "sessions": sessions,
        "seconds": seconds,
        "service_cpu_percent_no_session": round(baseline, 2),
        "service_cpu_percent_with_idle_sessions": round(loaded, 2),
        "cpu_percent_per_idle_session": round((loaded - baseline) / sessions, 2),
    }


def _rotations(
    clips: Sequence[Clip], count: int, seconds: float, gap_s: float = 1.5, tail_s: float = 1.5
) -> list[Samples]:
    """A different order of the clips for each session, ``seconds`` long, silence at the
    end; session k's speech starts ``k * _STAGGER_S`` late."""
    audios = []
    for index in range(count):
        shift = index % len(clips)
        order = [*clips[shift:], *clips[:shift]]
        speech = concatenate(order, gap_s, seconds)
        lead = np.zeros(round(index * _STAGGER_S * SAMPLE_RATE), np.int16)
        tail = np.zeros(int(tail_s * SAMPLE_RATE), np.int16)
        audios.append(np.concatenate((lead, speech, tail)))
    return audios


@asynccontextmanager
async def _services(command: list[str], balance: int) -> AsyncIterator[tuple[list[int], int]]:
    """The service (or ``balance`` of them behind HAProxy): pids, and the clients' port."""
    if balance:
        async with behind_haproxy(command, balance) as (children, front):
            yield [child.pid for child in children], front.websocket
    else:
        async with service_child(command) as (child, ports):
            yield [child.pid], ports.websocket


async def _measure(
    command: list[str],
    clips: Sequence[Clip],
    levels: Sequence[int],
    seconds: float,
    quick: bool,
    balance: int,
) -> dict[str, Any]:
    async with _services(command, balance) as (pids, port):
        resources = _Resources(pids)
        progress("concurrency: idle sessions")
        # Quick: 1.5 s with and 1.5 s without the idle sessions (3 s each before):
        # four sessions at ~1.5 % of a core each are still ~90 ms of CPU, nine
        # ticks of the 10 ms clock the service's CPU time is read with.
        idle = await _idle_cost(port, resources, 4, 1.5 if quick else 8.0)
        # Quick: the generated commands end their speech 1.6 s before the clip
        # does; 0.5 s of gap and 0.5 s of tail still leave 2.6 s of silence after
        # it (the endpoint needs 0.6 s, at most vad.max_hangover_ms = 1.2 s with
        # the detector), where 1.5 + 1.5 left 4.6 s: 5.6 s per session, not 7.6.
        gap_s, tail_s = (0.5, 0.5) if quick else (1.5, 1.5)
        runs = []
        for count in levels:
            progress(f"concurrency: {count} session(s) streaming")
            # The single session is the ratios' denominator: three times the
            # audio, so that its p95 is not just the largest of four utterances
            # (580-830 ms from run to run, pc2, 2026-12-04).
            level_s = seconds * _SINGLE_SESSION_FACTOR if count == 1 and not quick else seconds
            audios = _rotations(clips, count, level_s, gap_s, tail_s)
            runs.append(await _run_level(port, audios, resources, 60 + 30 * count + level_s))
        hwm = sum(proc_status_kb(pid).get("VmHWM", 0) for pid in pids)
    single = runs[0]["latency_ms"].get("p95") if runs else None
    within = [
        run["sessions"]
        for run in runs
        if single
        and run["latency_ms"].get("p95") is not None
        and run["latency_ms"]["p95"] <= _WITHIN * single
    ]
    for run in runs:
        p95 = run["latency_ms"].get("p95")
        run["p95_vs_single"] = round(p95 / single, 2) if single and p95 else None
    return {
        "command": " ".join(command[1:]),
        "instances": len(pids),
        "through": "haproxy (ops/haproxy/haproxy.cfg)" if balance else None,
        "chunk_ms": _CHUNK_S * 1000,
        "idle": idle,
        "runs": runs,
        "max_sessions_within_2x_p95": max(within) if within else None,
        "peak_rss_mb": round(hwm / 1024, 1),
        "definitions": {
            "latency": "end of speech (end of the last voiced frame, the client streaming "
            "at real-time pace) -> transcript received by that client",
            "queue": "waiting in the session for its STT stage plus waiting for an engine",
            "cpu_percent": "the service process (all instances together), percent of one "
            "core, over the run",
        },
    }


def measure_concurrency(
    clips: Sequence[Clip],
    *,
    profile: str | None,
    settings_dir: Path | None,
    overrides: Sequence[str],
    quick: bool,
    balance: int = 0,
) -> dict[str, Any]:
    """``balance``: N (1-3) instances behind HAProxy instead of one service."""
    levels = (1, 2) if quick else (1, 2, 4, 8)
    seconds = 5.0 if quick else 30.0
    command = service_command(
        "none", profile=profile, settings_dir=settings_dir, overrides=overrides
    )
    return trio.run(_measure, command, clips, levels, seconds, quick, balance)
