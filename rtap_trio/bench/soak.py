"""Soak: the whole service, several sessions at real-time pace, for minutes; nothing may grow.

The service is the real command (``python -m rtap_trio --source demo``: the
local demo loops at real-time pace as one session) in a child process, and N
``/v1/audio`` clients stream real speech at real-time pace into it, each
reconnecting as a new session after every pass (so sessions come and go the
whole time). Every few seconds the child's RSS, threads, open file
descriptors and trio tasks are read (``/proc`` through psutil, and
``/health``). At the end:

* growth: each figure's mean (and least) over the last third of the run
  against the first third after the warm-up;
* settled: the least threads, descriptors and trio tasks once the clients
  have gone and trio's idle worker threads have ended (the demo still runs),
  beside ``before``, the first sample, taken before the clients start;
* accounting: every utterance a session ended (``speech_end``) has a
  transcript or says why not (``utterance_discarded``, ``utterance_dropped``,
  ``stt_timeout``), and no session dropped a frame.

With ``hostile``, the attacks of :mod:`.hostile` run beside them the whole
time (Wyoming on, uploads limited to a minute of audio), each round checked
for its documented refusal, and the child's peak RSS is reported.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import trio

from ..audio.pcm import pcm_to_float
from ..client import open_audio_session
from ..events import SessionEnded, parse_event
from ..items import Samples
from ..transport.schemas import EventType
from .common import (
    SAMPLE_RATE,
    Clip,
    concatenate,
    free_port,
    progress,
    service_child,
    service_command,
)
from .hostile import HostilePorts, HostileTally, run_hostile_load

__all__ = ["run_soak"]

_SAMPLE_EVERY_S = 2.0
#: How long trio keeps an idle worker thread (trio's thread cache: 10 s), plus
#: a sample's worth: threads counted after the clients stop and this has
#: passed are ones left behind, not ones the load still kept. During the run
#: the least count of the last third followed the load, not a leak: 8 -> 11
#: and 8 -> 12 in CI on a busy machine, while an idle service goes back to 2.
_THREAD_IDLE_S = 10.0
_SETTLE_S = _THREAD_IDLE_S + 2 * _SAMPLE_EVERY_S
#: What "flat" allows between the first and the last third: allocator noise.
_RSS_GROWTH_LIMIT = 0.10


@dataclass
class _Accounts:
    sessions: int = 0
    utterances: int = 0
    transcripts: int = 0
    explained: int = 0
    unaccounted: list[str] = field(default_factory=list)
    frames_dropped: int = 0


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        report: dict[str, Any] = json.loads(response.read())
        return report


async def _client(
    port: int, audio: Samples, until: float, accounts: _Accounts, passes: int | None
) -> None:
    """Sessions one after another, each streaming ``audio`` at real-time pace:
    ``passes`` of them, else as many as start before ``until``."""
    samples = pcm_to_float(audio)
    done = 0
    while (trio.current_time() < until) if passes is None else (done < passes):
        done += 1
        async with open_audio_session(port, wake_word=False) as session:
            await session.send_audio(samples, chunk_s=0.02, realtime=True)
            await session.stop(60)
        accounts.sessions += 1
        ended = {e.utterance_id for e in session.events if e.type is EventType.SPEECH_END}
        transcribed = {t.utterance_id for t in session.transcripts}
        explained = {
            e.utterance_id
            for e in session.events
            if e.type
            in (EventType.UTTERANCE_DISCARDED, EventType.UTTERANCE_DROPPED, EventType.STT_TIMEOUT)
        }
        accounts.utterances += len(ended)
        accounts.transcripts += len(ended & transcribed)
        accounts.explained += len(ended & explained - transcribed)
        accounts.unaccounted += sorted(str(u) for u in ended - transcribed - explained)
        final = parse_event(session.events[-1]) if session.events else None
        if isinstance(final, SessionEnded):
            accounts.frames_dropped += final.frames_dropped


async def _sample(
    pid: int,
    port: int,
    into: list[dict[str, float]],
    started: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A sample every few seconds; started once the first is in (the service
    before the load: the clients start after it)."""
    process = psutil.Process(pid)
    while True:
        health = await trio.to_thread.run_sync(_health, port)
        into.append(
            {
                "t_s": round(trio.current_time() - started, 1),
                "rss_mb": round(process.memory_info().rss / 2**20, 1),
                "threads": process.num_threads(),
                "fds": process.num_fds(),
                "trio_tasks": health["runtime"]["trio_tasks"],
                "sessions": health["sessions"]["active"],
            }
        )
        if len(into) == 1:
            task_status.started()
        await trio.sleep(_SAMPLE_EVERY_S)


def _growth(samples: list[dict[str, float]], warmup_s: float) -> dict[str, dict[str, float]]:
    steady = [s for s in samples if s["t_s"] >= warmup_s]
    third = max(1, len(steady) // 3)
    first, last = steady[:third], steady[-third:]
    out = {}
    for key in ("rss_mb", "threads", "fds", "trio_tasks"):
        before = sum(s[key] for s in first) / len(first)
        after = sum(s[key] for s in last) / len(last)
        out[key] = {
            "first_third": round(before, 2),
            "last_third": round(after, 2),
            # What is there at every sample: a leaked thread, descriptor or task
            # is; a worker thread busy at one sample is not (trio keeps an idle
            # one 10 s: on a busy machine the mean of threads rose 7.0 -> 9.25
            # with nothing leaked).
            "first_third_min": min(s[key] for s in first),
            "last_third_min": min(s[key] for s in last),
        }
    return out


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def _soak(
    command: list[str],
    audios: Sequence[Samples],
    seconds: float,
    warmup_s: float,
    wyoming_port: int | None,
    passes: int | None,
) -> dict[str, Any]:
    accounts = _Accounts()
    tally = HostileTally()
    samples: list[dict[str, float]] = []
    async with service_child(command) as (child, ports):
        started = trio.current_time()
        until = started + seconds
        async with trio.open_nursery() as nursery:
            await nursery.start(_sample, child.pid, ports.telemetry, samples, started)
            async with trio.open_nursery() as clients:
                for audio in audios:
                    clients.start_soon(_client, ports.websocket, audio, until, accounts, passes)
                if wyoming_port is not None:
                    hostile = HostilePorts(
                        ports.telemetry, ports.websocket, wyoming_port, ports.catchup, ports.events
                    )
                    clients.start_soon(run_hostile_load, hostile, until, tally)
            load_s = trio.current_time() - started
            await trio.sleep(_SETTLE_S)  # the demo goes on; the sampler too
            nursery.cancel_scope.cancel()
        health = await trio.to_thread.run_sync(_health, ports.telemetry)
        peak_rss_mb = _peak_rss_mb(child.pid)
    growth = _growth([sample for sample in samples if sample["t_s"] <= load_s], warmup_s)
    settled = [sample for sample in samples if sample["t_s"] >= load_s + _THREAD_IDLE_S]
    rss = growth["rss_mb"]
    return {
        "command": " ".join(command[1:]),
        "seconds": seconds,
        "passes": passes,
        "clients": len(audios),
        "warmup_s": warmup_s,
        "samples": samples,
        "growth": growth,
        "before": samples[0],
        # The least of each figure once the clients had gone and idle worker
        # threads had had time to end (the demo still running).
        "settled": {key: min(x[key] for x in settled) for key in ("threads", "fds", "trio_tasks")}
        if settled
        else {},
        "rss_growth": round(rss["last_third"] / rss["first_third"] - 1, 4),
        "rss_growth_limit": _RSS_GROWTH_LIMIT,
        "sessions": accounts.sessions,
        "utterances": accounts.utterances,
        "transcripts": accounts.transcripts,
        "explained": accounts.explained,
        "unaccounted": accounts.unaccounted,
        "frames_dropped": accounts.frames_dropped,
        "local_session_state": health.get("state"),
        "peak_rss_mb": peak_rss_mb,
        "hostile": tally.as_dict() if wyoming_port is not None else None,
        "exit_code": child.returncode,
    }


def run_soak(
    clips: Sequence[Clip],
    *,
    seconds: float,
    clients: int,
    profile: str | None,
    settings_dir: Path | None = None,
    overrides: Sequence[str] = (),
    out: Path | None = None,
    hostile: bool = False,
    passes: int | None = None,
) -> dict[str, Any]:
    """Soak the service; the report (and ``out/soak.json`` if ``out`` is given).

    ``passes``: each client's sessions, however long they take (the tests: a
    busy machine cannot cut the count short); None: as many as start within
    ``seconds``. The hostile clients attack for ``seconds`` either way.
    """
    wyoming_port = None
    if hostile:
        wyoming_port = free_port()
        overrides = [
            *overrides,
            "wyoming.enabled=true",
            f"wyoming.port={wyoming_port}",
            "openai.max_audio_s=60",
        ]
    command = service_command(
        "demo", profile=profile, settings_dir=settings_dir, overrides=overrides
    )
    audios = []
    for index in range(clients):  # each client a different order of the clips
        shift = index % len(clips)
        speech = concatenate([*clips[shift:], *clips[:shift]], 1.5)
        audios.append(np.concatenate((speech, np.zeros(int(1.5 * SAMPLE_RATE), np.int16))))
    warmup_s = min(60.0, seconds / 4)
    against = " and hostile clients" if hostile else ""
    progress(f"soak: {clients} client(s){against} and the demo for {seconds:g} s")
    started = time.perf_counter()
    report = trio.run(_soak, command, audios, seconds, warmup_s, wyoming_port, passes)
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
