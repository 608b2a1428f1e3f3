"""whisper.cpp behind the :class:`~rtap_trio.stt.base.SttBackend` interface.

whisper.cpp is blocking C++: each transcription runs in a worker thread on one
of ``stt.workers`` engines (a whisper context is not safe to share between
threads), lent by a :class:`~rtap_trio.stt.scheduling.PriorityLimiter` so that
every session's speech is served in the order it ended. A transcription that
outlives its budget, or whose caller is cancelled (a client that left), is
aborted through whisper.cpp's abort callback, so the engine is free again at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import trio
from loguru import logger

from ...errors import SttSkippedError, SttTimeoutError
from ...items import Float32, SttResult
from ...settings import SttSettings
from ..base import FinalsForeseen, SttBackend, SttStatistics
from ..scheduling import PriorityLimiter
from .direct import whisper_language_name
from .engine import WhisperEngine

__all__ = ["ABORT_WAIT_S", "WhisperCppBackend"]

#: How long a cancelled transcription may take to notice its abort flag.
ABORT_WAIT_S = 0.5

T = TypeVar("T")


def _now() -> float:
    return trio.current_time()


@dataclass(eq=False)
class _Speculation:
    """One speculative transcription on an engine."""

    partial: bool
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    preempted_by: str = ""


class WhisperCppBackend(SttBackend):
    def __init__(self, engines: list[WhisperEngine], *, requested_device: str = "cpu") -> None:
        if not engines:
            raise ValueError("a backend needs at least one engine")
        self._free = list(engines)
        self._engines = tuple(engines)
        self._limiter = PriorityLimiter(len(engines))
        self.name = engines[0].name
        self.english_only = engines[0].english_only
        self.model_file = engines[0].model_file
        self.origin = str(self.model_file)
        self.languages = engines[0].languages
        self.device = engines[0].device
        self.device_fallback = requested_device != self.device
        self._transcriptions = 0
        self._timeouts = 0
        self._skipped = 0
        self.foreseen = FinalsForeseen()
        #: the speculative transcriptions running now, oldest first
        self._speculative: list[_Speculation] = []

    @property
    def engines(self) -> tuple[WhisperEngine, ...]:
        return self._engines

    @classmethod
    async def load(cls, settings: SttSettings) -> WhisperCppBackend:
        """Load (and on first use convert) the model, one engine per worker, warmed up.

        Cancelling (a stop during start-up) waits for the engine being loaded,
        which whisper.cpp cannot interrupt, but aborts its warm-up.
        """
        engines: list[WhisperEngine] = []
        try:
            for _ in range(settings.workers):
                engine = await trio.to_thread.run_sync(WhisperEngine, settings)
                engines.append(engine)
                if settings.warmup:
                    await _run_abortably(engine, engine.warm_up)
        except BaseException:
            with trio.CancelScope(shield=True):
                for engine in engines:
                    await trio.to_thread.run_sync(engine.close)
            raise
        log = logger.bind(component="stt")
        if settings.device != engines[0].device:
            # The recovery the design asks for: a GPU that is not there is not
            # fatal, the CPU takes over, and the operator is told.
            log.warning(
                "stt.device is {} but this whisper.cpp build has no GPU backend: "
                "running on the CPU (see docs/cuda.md to build one with CUDA)",
                settings.device,
            )
        log.info(
            "whisper model {} loaded from {} on the {} ({} worker(s))",
            engines[0].name,
            engines[0].model_file,
            engines[0].device.upper(),
            len(engines),
        )
        return cls(engines, requested_device=settings.device)

    async def transcribe(
        self,
        audio: Float32,
        *,
        priority: float = 0.0,
        budget_s: float | None = None,
        language: str | None = None,
        speculative: bool = False,
        partial: bool = False,
    ) -> SttResult:
        if speculative or partial:
            return await self._speculate(audio, budget_s, language, partial)
        asked = _now()
        if self._limiter.statistics().borrowed_tokens >= len(self._engines):
            # A final waits only for finals: speculative work gives its engine up.
            self._preempt_one(partials_only=False)
        async with self._limiter.borrow(priority):
            return await self._run(audio, budget_s, language, asked)

    async def _speculate(
        self, audio: Float32, budget_s: float | None, language: str | None, partial: bool
    ) -> SttResult:
        asked = _now()
        if partial and self.foreseen.due:
            self._skipped += 1
            raise SttSkippedError("a final is due")
        try:
            with self._limiter.borrow_nowait():
                return await self._speculative_run(audio, budget_s, language, partial, asked)
        except trio.WouldBlock:
            pass
        # Early work (its result is likely the final) takes an engine from a
        # partial; it waits for that abort, never for a final.
        if partial or self._limiter.waiting or not self._preempt_one(partials_only=True):
            self._skipped += 1
            raise SttSkippedError("every engine is busy")
        async with self._limiter.borrow(math.inf):
            return await self._speculative_run(audio, budget_s, language, partial, asked)

    async def _speculative_run(
        self,
        audio: Float32,
        budget_s: float | None,
        language: str | None,
        partial: bool,
        asked: float,
    ) -> SttResult:
        speculation = _Speculation(partial)
        self._speculative.append(speculation)
        try:
            with speculation.scope:
                return await self._run(audio, budget_s, language, asked)
        finally:
            self._speculative.remove(speculation)
        # Only a preemption ends the scope without a result.
        self._skipped += 1
        raise SttSkippedError(speculation.preempted_by)

    def _preempt_one(self, *, partials_only: bool) -> bool:
        """Abort one speculative transcription, a partial one first; whether any was."""
        running = [s for s in self._speculative if not s.scope.cancel_called]
        running.sort(key=lambda s: not s.partial)  # partials first, then oldest first
        for speculation in running:
            if speculation.partial or not partials_only:
                speculation.preempted_by = (
                    "preempted by early work" if partials_only else "preempted by a final"
                )
                speculation.scope.cancel()  # its engine stops at the next abort check
                return True
        return False

    async def _run(
        self, audio: Float32, budget_s: float | None, language: str | None, asked: float
    ) -> SttResult:
        engine = self._free.pop()
        acquired = _now()
        try:
            with trio.move_on_after(budget_s if budget_s is not None else float("inf")) as scope:
                result = await _run_abortably(
                    engine, lambda abort: engine.transcribe(audio, abort, language)
                )
        finally:
            self._free.append(engine)
        finished = _now()
        queue_ms = (acquired - asked) * 1000
        stt_ms = (finished - acquired) * 1000
        if scope.cancelled_caught:
            self._timeouts += 1
            raise SttTimeoutError(queue_ms=queue_ms, elapsed_ms=stt_ms)
        self._transcriptions += 1
        return SttResult(
            text=result.text,
            language=result.language,
            language_probability=result.language_probability,
            no_speech_probability=result.no_speech_probability,
            queue_ms=queue_ms,
            stt_ms=stt_ms,
        )

    def language_name(self, code: str) -> str:
        return whisper_language_name(code)

    def statistics(self) -> SttStatistics:
        limiter = self._limiter.statistics()
        return SttStatistics(
            engines=len(self._engines),
            busy=limiter.borrowed_tokens,
            waiting=limiter.waiting,
            transcriptions=self._transcriptions,
            timeouts=self._timeouts,
            speculative_skipped=self._skipped,
        )

    async def aclose(self) -> None:
        """Free every model now rather than at interpreter exit."""
        engines, self._free = self._free, []
        with trio.CancelScope(shield=True):
            for engine in engines:
                await trio.to_thread.run_sync(engine.close)


async def _run_abortably(engine: WhisperEngine, call: Callable[[Callable[[], bool]], T]) -> T:
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
            await trio.to_thread.run_sync(engine.wait_idle)
        raise
