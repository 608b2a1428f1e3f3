"""Replay throughput: seconds of audio through the whole pipeline per second of wall time.

Like ``python -m rtap_trio replay --no-wake``: an unpaced source (back-pressure,
nothing dropped), no listening ports. The clock starts at the first frame,
after the models are loaded, and stops when the last transcript is out.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from ..app import Service
from ..items import Samples
from ..settings import Settings
from ..transport.schemas import Stream
from .common import ArraySource

__all__ = ["measure_throughput"]


async def measure_throughput(settings: Settings, audio: Samples) -> dict[str, Any]:
    settings = settings.model_copy(
        update={
            "wakeword": settings.wakeword.model_copy(update={"enabled": False}),
            "output": settings.output.model_copy(
                update={"zmq_enabled": False, "websocket_enabled": False}
            ),
            "http": settings.http.model_copy(update={"enabled": False}),
        }
    )
    source = ArraySource(
        audio,
        frame_samples=settings.audio.frame_samples,
        paced=False,
        trailing_silence_s=settings.vad.hangover_ms / 1000 + 0.2,
    )
    service = Service(settings, source=source, handle_signals=False)
    subscription = service.outbox.subscribe("bench", (Stream.TRANSCRIPTS,), 100_000)
    transcripts = 0
    last = 0.0
    stt_ms = 0.0
    loaded = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        async for item in subscription.receive:
            transcripts += 1
            last = time.perf_counter()
            stt_ms += item.message.latency_ms.stt  # type: ignore[union-attr]
    started = source.started_perf
    finished = max(last, source.finished_perf)
    elapsed = finished - started
    return {
        "model": settings.stt.whispercpp.model_name,
        "audio_s": round(source.duration_s, 1),
        "wall_s": round(elapsed, 2),
        "startup_s": round(started - loaded, 2),
        "transcripts": transcripts,
        "realtime_factor": round(source.duration_s / elapsed, 2) if elapsed > 0 else None,
        "stt_share": round(stt_ms / 1000 / elapsed, 3) if elapsed > 0 else None,
    }
