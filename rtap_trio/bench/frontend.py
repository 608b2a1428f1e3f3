"""Front-end cost per 20 ms frame (ring buffer + wake word + VAD + endpointer) and its CPU share.

The real :class:`~rtap_trio.stages.frontend.FrontEnd` is driven frame by frame
outside trio, so the figures hold the stage's own work and nothing else. Two
configurations: ``wake_word`` (IDLE: Porcupine on every frame, then VAD after
a wake word) and ``vad`` (wake word off: webrtcvad and the endpointer on every
frame, the path a LISTENING pipeline runs).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from ..items import AudioFrame, Samples
from ..metrics import Metrics
from ..settings import Settings
from ..stages.wakeword import WakeWordDetector
from ..testing import detached_context, detached_frontend
from ..transport.outbox import Outbox
from ..vad import load_vad
from ..wakeword import load_wakeword
from .common import summarize

__all__ = ["measure_frontend"]


class _Harness:
    def __init__(self, settings: Settings) -> None:
        ctx = detached_context("bench", "bench", Outbox(), Metrics())
        self.session = ctx.state
        self.wake = (
            WakeWordDetector(load_wakeword(settings.wakeword))
            if settings.wakeword.enabled
            else None
        )
        voice = load_vad(settings.vad, settings.audio.sample_rate).stream(settings.vad)
        self.frontend = detached_frontend(ctx, settings, wake=self.wake, voice=voice)
        self.index = 0
        self.utterances = 0

    def step(self, samples: Samples) -> None:
        utterance = self.frontend.process(AudioFrame(self.index, samples, time.perf_counter()))
        self.index += 1
        if utterance is not None:
            # Nothing transcribes here: finish it at once so the session goes back to IDLE.
            self.utterances += 1
            self.session.utterance_done("bench")

    def close(self) -> None:
        if self.wake is not None:
            self.wake.close()


def _unpaced(settings: Settings, frames: np.ndarray[Any, Any], passes: int) -> dict[str, Any]:
    harness = _Harness(settings)
    wall: list[float] = []
    cpu: list[float] = []
    try:
        for _ in range(passes):
            for samples in frames:
                t0, c0 = time.perf_counter(), time.thread_time()
                harness.step(samples)
                cpu.append(time.thread_time() - c0)
                wall.append(time.perf_counter() - t0)
    finally:
        harness.close()
    return {
        "per_frame_ms": summarize((w * 1000 for w in wall), 4),
        "per_frame_cpu_ms": summarize((c * 1000 for c in cpu), 4),
        "utterances": harness.utterances,
    }


def _paced(
    settings: Settings, frames: np.ndarray[Any, Any], seconds: float
) -> tuple[dict[str, Any], list[float], list[float]]:
    """Frames at real time, as from a microphone: per-frame cost and CPU share of one core."""
    frame_s = settings.audio.frame_ms / 1000
    count = min(len(frames), max(1, int(seconds / frame_s)))
    harness = _Harness(settings)
    wall: list[float] = []
    cpu: list[float] = []
    try:
        started = time.perf_counter()
        process_cpu = os.times()
        for index in range(count):
            delay = started + index * frame_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0, c0 = time.perf_counter(), time.thread_time()
            harness.step(frames[index])
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        after = os.times()
    finally:
        harness.close()
    process_s = (after.user - process_cpu.user) + (after.system - process_cpu.system)
    return (
        {
            "seconds": round(elapsed, 2),
            "frames": count,
            "per_frame_ms": summarize((w * 1000 for w in wall), 4),
            "per_frame_cpu_ms": summarize((c * 1000 for c in cpu), 4),
            # Thread CPU time inside process() over wall time: the stage's own share.
            "cpu_percent_one_core": round(100 * sum(cpu) / elapsed, 3),
            # Whole-process CPU over the same window (pacing loop and idle threads too):
            # an upper bound, and coarse (os.times ticks at 10 ms).
            "process_cpu_percent_one_core": round(100 * process_s / elapsed, 2),
        },
        wall,
        cpu,
    )


def _porcupine_alone(settings: Settings, frames: np.ndarray[Any, Any], seconds: float) -> Any:
    """Porcupine's own ``process()`` per 512-sample block, paced at its 32 ms block rate.

    The floor under the wake-word path's per-frame figure: what the engine
    itself costs, without anything of ours around it.
    """
    engine = load_wakeword(settings.wakeword)
    try:
        block = engine.frame_length
        blocks = frames.reshape(-1)[: frames.size // block * block].reshape(-1, block)
        block_s = block / settings.audio.sample_rate
        count = min(len(blocks), max(1, int(seconds / block_s)))
        wall: list[float] = []
        started = time.perf_counter()
        for index in range(count):
            delay = started + index * block_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            engine.process_block(blocks[index])
            wall.append(time.perf_counter() - t0)
    finally:
        engine.close()
    return summarize((w * 1000 for w in wall), 4)


def measure_frontend(settings: Settings, audio: Samples, *, quick: bool) -> dict[str, Any]:
    """``audio``: speech and silence, several utterances; wake words included."""
    n = settings.audio.frame_samples
    usable = audio[: audio.size // n * n]
    frames = usable.reshape(-1, n)
    configs = {
        "wake_word": settings.model_copy(
            update={"wakeword": settings.wakeword.model_copy(update={"enabled": True})}
        ),
        "vad": settings.model_copy(
            update={"wakeword": settings.wakeword.model_copy(update={"enabled": False})}
        ),
    }
    # Quick: 1 s per paced run (50 frames per configuration, 31 Porcupine blocks)
    # is plenty for the sanity bounds the tests check; 3 s made this section 9.5 s
    # of sleeping (three paced runs) for 1.8 CPU-s.
    paced_s = 1.0 if quick else 15.0
    result: dict[str, Any] = {
        "frame_ms": settings.audio.frame_ms,
        "audio_s": round(usable.size / settings.audio.sample_rate, 1),
        "wake_keywords": settings.wakeword.keywords,
    }
    paced_wall: list[float] = []
    paced_cpu: list[float] = []
    for name, config in configs.items():
        paced, wall, cpu = _paced(config, frames, paced_s)
        paced_wall += wall
        paced_cpu += cpu
        result[name] = {"unpaced": _unpaced(config, frames, 1 if quick else 3), "paced": paced}
    # Headline: the paced (microphone-like) runs of both configurations together.
    # Wall time includes preemption by whatever else the machine runs; CPU time does not.
    result["per_frame_ms"] = summarize((w * 1000 for w in paced_wall), 4)
    result["per_frame_cpu_ms"] = summarize((c * 1000 for c in paced_cpu), 4)
    # Per state: LISTENING runs VAD and the endpointer only; IDLE adds Porcupine.
    result["per_frame_ms_listening"] = result["vad"]["paced"]["per_frame_ms"]
    result["per_frame_ms_idle_wake_word"] = result["wake_word"]["paced"]["per_frame_ms"]
    result["porcupine_alone_per_call_ms"] = _porcupine_alone(configs["wake_word"], frames, paced_s)
    result["cpu_percent_listening"] = result["vad"]["paced"]["cpu_percent_one_core"]
    result["cpu_percent_idle_wake_word"] = result["wake_word"]["paced"]["cpu_percent_one_core"]
    return result
