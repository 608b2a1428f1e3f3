"""whisper.cpp as an :class:`~rtap_trio.stt.engine.SttEngine`.

whisper.cpp is blocking C++: each engine is one whisper context
(:class:`.context.WhisperContext`, not safe to share between threads) whose
calls run in a worker thread. Cancelling a transcription sets the flag
whisper.cpp's abort callback polls between its steps, and waits (bounded) for
the thread to leave whisper.cpp, so the engine is free for the next utterance.
The scheduling around it is the pool's (:mod:`rtap_trio.stt.pool`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import trio
from loguru import logger

from ...items import Float32
from ...settings import SttSettings
from ..engine import ABORT_WAIT_S, EngineCapabilities, EngineRequest, EngineResult, SttEngine
from .context import MAX_PROMPT_TOKENS, WhisperContext
from .direct import whisper_language_name

__all__ = ["WhisperCppEngine", "open_whispercpp_engines"]

T = TypeVar("T")


class WhisperCppEngine(SttEngine):
    """One whisper.cpp context, transcribing in a worker thread."""

    def __init__(self, context: WhisperContext, *, requested_device: str = "cpu") -> None:
        self.context = context
        self.capabilities = EngineCapabilities(
            name=context.name,
            languages=context.languages,
            multilingual=not context.english_only,
            # An abort lands between encoder and decoder passes (170-260 ms
            # into tiny.en's encoder, measured): quick enough to guess with.
            speculative=True,
            origin=str(context.model_file),
            device=context.device,
            device_fallback=requested_device != context.device,
            max_prompt_tokens=MAX_PROMPT_TOKENS,
            word_timings=True,
            translation=not context.english_only,
        )

    async def transcribe(self, audio: Float32, request: EngineRequest) -> EngineResult:
        context = self.context
        return await _run_abortably(
            context,
            lambda should_abort: context.transcribe(
                audio,
                should_abort,
                request.language,
                partial=request.partial,
                prompt=request.prompt,
                words=request.words,
                task=request.task,
            ),
        )

    def prompt_tokens(self, prompt: str) -> int:
        return self.context.prompt_tokens(prompt)

    def language_name(self, code: str) -> str:
        return whisper_language_name(code)

    async def warm_up(self) -> None:
        """Allocate whisper.cpp's compute buffers now (cancellable)."""
        await _run_abortably(self.context, self.context.warm_up)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.context.close)


async def open_whispercpp_engines(settings: SttSettings) -> list[WhisperCppEngine]:
    """Load (and on first use convert) the model: ``stt.workers`` engines, warmed up.

    Cancelling (a stop during start-up) waits for the context being loaded,
    which whisper.cpp cannot interrupt, but aborts its warm-up.
    """
    requested = settings.whispercpp.device
    engines: list[WhisperCppEngine] = []
    try:
        for _ in range(settings.workers):
            context = await trio.to_thread.run_sync(WhisperContext, settings)
            engine = WhisperCppEngine(context, requested_device=requested)
            engines.append(engine)
            if settings.warmup:
                await engine.warm_up()
    except BaseException:
        for engine in engines:
            await engine.aclose()
        raise
    first = engines[0].context
    log = logger.bind(component="stt")
    if requested != first.device:
        # The recovery the design asks for: a GPU that is not there is not
        # fatal, the CPU takes over, and the operator is told.
        log.warning(
            "stt.whispercpp.device is {} but this whisper.cpp build has no GPU backend: "
            "running on the CPU (see docs/cuda.md to build one with CUDA)",
            requested,
        )
    log.info(
        "whisper model {} loaded from {} on the {} ({} worker(s))",
        first.name,
        first.model_file,
        first.device.upper(),
        len(engines),
    )
    return engines


async def _run_abortably(context: WhisperContext, call: Callable[[Callable[[], bool]], T]) -> T:
    """``call(should_abort)`` in a worker thread; cancelling aborts whisper.cpp promptly."""
    abort = threading.Event()
    try:
        return await trio.to_thread.run_sync(call, abort.is_set, abandon_on_cancel=True)
    except trio.Cancelled:
        # The thread was abandoned but whisper.cpp is still running: ask it to
        # stop, and wait (shielded, bounded) until it has, so no thread is left
        # inside whisper.cpp when the service exits or the engine is lent again.
        abort.set()
        with trio.CancelScope(shield=True), trio.move_on_after(ABORT_WAIT_S):
            await trio.to_thread.run_sync(context.wait_idle)
        raise
