"""``bench`` section ``remote``: the remote engine over loopback against the
local engine, on the same clips.

A second RTAP process (the same profile, ``--source none``) is the remote;
this process opens ``stt.engine: remote`` on its OpenAI endpoint and the
profile's whisper.cpp engine side by side, and times each clip on both, in
turns (local first on even runs, remote first on odd ones, so neither always
follows the other's cache misses; with one run, on even and odd clips). Both
run on this machine's cores, so the figure is what the remote path adds (the
WAV, HTTP on loopback, the remote's upload session: its VAD, queue and
language stage) over the same model, not what a GPU across the LAN saves:
that is docs/cuda.md's 23 ms against the CPU's hundreds. Each side's first
request is a warm-up, not counted (connections, the remote's first session).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import trio

from ..devtools.textmetrics import word_error_rate
from ..items import Float32
from ..settings import RemoteSttSettings, Settings
from ..stt import EngineRequest, SttEngine, open_engines
from .common import REPO, Clip, ServicePorts, summarize

__all__ = ["measure_remote"]


def measure_remote(
    settings: Settings,
    clips: list[Clip],
    *,
    runs: int,
    profile: str | None,
    settings_dir: Path | None,
) -> dict[str, Any]:
    """Per-clip and overall STT milliseconds, remote (loopback) and local."""
    ports = ServicePorts.free()
    env = {
        **os.environ,
        **ports.env(),
        "RTAP_LOG_LEVEL": "ERROR",
        "RTAP_STT__PARTIALS": "false",
        # An upload arrives whole, faster than real time, yet its session still
        # starts an early transcript 150 ms into the trailing silence, which the
        # final then preempts: measured here, a ~390 ms request took 627-1202 ms
        # 5 times in 12 with it, never without (docs/scaling.md).
        "RTAP_VAD__EARLY_MS": "0",
        **({"RTAP_SETTINGS_DIR": str(settings_dir)} if settings_dir else {}),
    }
    command = [sys.executable, "-m", "rtap_trio", "--source", "none"]
    command += ["--profile", profile or settings.environment]
    child = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(ports, child, limit_s=120)
        url = f"http://127.0.0.1:{ports.telemetry}/v1"
        return trio.run(_measure, settings, clips, runs, url)
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _wait_healthy(ports: ServicePorts, child: subprocess.Popen[bytes], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"the remote service exited with {child.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("the remote service did not come up")
        try:
            url = f"http://127.0.0.1:{ports.telemetry}/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)


async def _measure(settings: Settings, clips: list[Clip], runs: int, url: str) -> dict[str, Any]:
    stt = settings.stt.model_copy(update={"engine": "whispercpp", "fallback": "none"})
    local = (await open_engines(stt))[0]
    remote_settings = RemoteSttSettings(
        urls=[url], languages=list(local.capabilities.languages), timeout_ms=300_000
    )
    remote_stt = stt.model_copy(update={"engine": "remote", "remote": remote_settings})
    remote = (await open_engines(remote_stt))[0]
    engines: dict[str, SttEngine] = {"local": local, "remote": remote}
    language = "en" if local.capabilities.languages == ("en",) else None
    request = EngineRequest(language=language)
    audio: list[Float32] = [(clip.samples / 32768).astype(np.float32) for clip in clips]
    times: dict[str, dict[str, list[float]]] = {n: {c.name: [] for c in clips} for n in engines}
    texts: dict[str, dict[str, str]] = {n: {} for n in engines}
    try:
        for engine in engines.values():  # warm-up: connections, the remote's first session
            await engine.transcribe(audio[0], request)
        for run in range(runs):
            for index, (clip, samples) in enumerate(zip(clips, audio, strict=True)):
                # One run (quick): the clips take turns at going first instead.
                first = run if runs > 1 else index
                order = ["local", "remote"] if first % 2 == 0 else ["remote", "local"]
                for name in order:
                    started = time.perf_counter()
                    result = await engines[name].transcribe(samples, request)
                    times[name][clip.name].append((time.perf_counter() - started) * 1000)
                    texts[name][clip.name] = result.text
    finally:
        for engine in engines.values():
            await engine.aclose()
    per_clip = {
        clip.name: {
            "audio_s": round(clip.duration_s, 2),
            **{name: round(float(np.median(times[name][clip.name])), 1) for name in engines},
        }
        for clip in clips
    }
    overhead = [row["remote"] - row["local"] for row in per_clip.values()]
    return {
        "model": local.capabilities.name,
        "clips": len(clips),
        "runs": runs,
        "local_ms": summarize([t for ts in times["local"].values() for t in ts], 1),
        "remote_ms": summarize([t for ts in times["remote"].values() for t in ts], 1),
        "remote_overhead_ms_p50": round(float(np.median(overhead)), 1),
        "per_clip_median_ms": per_clip,
        # The same model on both sides: the words should not differ.
        "text_wer_remote_vs_local": round(
            float(
                np.mean(
                    [
                        word_error_rate(texts["local"][c.name], texts["remote"][c.name])
                        for c in clips
                    ]
                )
            ),
            3,
        ),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
