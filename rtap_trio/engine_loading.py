"""Loading the engines every session shares (STT, language, VAD) and opening the
local audio source, side by side.

Apart from the composition root because it is the one slow step of a start
(models load for seconds): all of it runs at once, and any failure ends the
start.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from loguru import logger

from .audio import AudioSource
from .pipeline import Engines
from .settings import Settings, SttSettings
from .stages.language import LanguageAnalyzer
from .stt import SttEngine, SttPool, open_engines
from .turn import load_turn_detector
from .vad import load_vad

__all__ = ["SttOpener", "load_engines"]

#: Opens the STT engines for a section: :func:`rtap_trio.stt.open_engines`, or
#: a lender of engines already loaded (:class:`rtap_trio.testing.EngineLender`).
SttOpener = Callable[[SttSettings], Awaitable[Sequence[SttEngine]]]


async def load_engines(
    settings: Settings, source: AudioSource | None, open_stt: SttOpener = open_engines
) -> Engines:
    """The engines the settings name, loaded while ``source`` (if any) opens."""
    log = logger.bind(component="service")
    results: dict[str, Any] = {}

    async def load(name: str, fn: Callable[[], Any]) -> None:
        results[name] = await fn()

    started = time.perf_counter()
    log.info("loading engines and opening the audio source")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(load, "stt", lambda: open_stt(settings.stt))
        nursery.start_soon(load, "analyzer", lambda: LanguageAnalyzer.load(settings.language))
        nursery.start_soon(
            load,
            "vad",
            lambda: trio.to_thread.run_sync(load_vad, settings.vad, settings.audio.sample_rate),
        )
        nursery.start_soon(
            load, "turn", lambda: trio.to_thread.run_sync(load_turn_detector, settings.turn)
        )
        if source is not None:
            nursery.start_soon(source.open)
    log.info("engines loaded in {:.2f}s", time.perf_counter() - started)
    return Engines(
        stt=SttPool(results["stt"]),
        analyzer=results["analyzer"],
        vad=results["vad"],
        turn=results["turn"],
    )
