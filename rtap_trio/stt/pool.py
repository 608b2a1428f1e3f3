"""The engine pool: every session's transcriptions over a few engines, scheduled.

The pool lends its ``stt.workers`` engines (:class:`~rtap_trio.stt.engine.SttEngine`:
whisper.cpp contexts, or any other engine) through a
:class:`~rtap_trio.stt.scheduling.PriorityLimiter`, so that every session's
speech is served in the order it ended. Finals come first, then early work,
then partial transcripts: speculative work runs only on an engine free at
once, and gives it up (cancelled) when a final needs it; partials also make
way for early work and do not start while a final is foreseen
(:class:`~rtap_trio.stt.base.FinalsForeseen`). A transcription that outlives
its budget, or whose caller is cancelled (a client that left), is cancelled on
its engine, which the engine turns into an abort, so the engine is free again
at once. None of this depends on which engine runs the words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from ..errors import SttSkippedError, SttTimeoutError
from ..items import Float32, SttResult
from .base import FinalsForeseen, SttBackend, SttStatistics
from .engine import EngineCapabilities, EngineRequest, SttEngine, Task
from .scheduling import PriorityLimiter

__all__ = ["SttPool"]


def _now() -> float:
    return trio.current_time()


@dataclass(eq=False)
class _Speculation:
    """One speculative transcription on an engine."""

    partial: bool
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    preempted_by: str = ""


class SttPool(SttBackend):
    """:class:`SttBackend` over engines of one kind, all of them alike."""

    def __init__(self, engines: Sequence[SttEngine]) -> None:
        if not engines:
            raise ValueError("a pool needs at least one engine")
        self._engines = tuple(engines)
        self._free = list(engines)
        self._limiter = PriorityLimiter(len(engines))
        capabilities = engines[0].capabilities
        self.capabilities: EngineCapabilities = capabilities
        self.name = capabilities.name
        self.english_only = not capabilities.multilingual and capabilities.languages == ("en",)
        self.origin = capabilities.origin
        self.languages = capabilities.languages
        self.device = capabilities.device
        self.device_fallback = capabilities.device_fallback
        self.max_prompt_tokens = capabilities.max_prompt_tokens
        self.word_timings = capabilities.word_timings
        self.translation = capabilities.translation
        self.foreseen = FinalsForeseen()
        self._transcriptions = 0
        self._timeouts = 0
        self._skipped = 0
        #: the speculative transcriptions running now, oldest first
        self._speculative: list[_Speculation] = []

    @property
    def engines(self) -> tuple[SttEngine, ...]:
        return self._engines

    async def transcribe(
        self,
        audio: Float32,
        *,
        priority: float = 0.0,
        budget_s: float | None = None,
        language: str | None = None,
        speculative: bool = False,
        partial: bool = False,
        prompt: str = "",
        words: bool = False,
        task: Task = "transcribe",
    ) -> SttResult:
        request = EngineRequest(language, partial, prompt=prompt, words=words, task=task)
        if speculative or partial:
            return await self._speculate(audio, budget_s, request)
        asked = _now()
        if self._limiter.statistics().borrowed_tokens >= len(self._engines):
            # A final waits only for finals: speculative work gives its engine up.
            self._preempt_one(partials_only=False)
        async with self._limiter.borrow(priority):
            return await self._run(audio, budget_s, request, asked)

    async def _speculate(
        self, audio: Float32, budget_s: float | None, request: EngineRequest
    ) -> SttResult:
        partial = request.partial
        asked = _now()
        if not self.capabilities.speculative:
            self._skipped += 1
            raise SttSkippedError(f"the {self.name} engine takes no speculative work")
        if partial and self.foreseen.due:
            self._skipped += 1
            raise SttSkippedError("a final is due")
        try:
            with self._limiter.borrow_nowait():
                return await self._speculative_run(audio, budget_s, request, asked)
        except trio.WouldBlock:
            pass
        # Early work (its result is likely the final) takes an engine from a
        # partial; it waits for that abort, never for a final.
        if partial or self._limiter.waiting or not self._preempt_one(partials_only=True):
            self._skipped += 1
            raise SttSkippedError("every engine is busy")
        async with self._limiter.borrow(math.inf):
            return await self._speculative_run(audio, budget_s, request, asked)

    async def _speculative_run(
        self,
        audio: Float32,
        budget_s: float | None,
        request: EngineRequest,
        asked: float,
    ) -> SttResult:
        speculation = _Speculation(request.partial)
        self._speculative.append(speculation)
        try:
            with speculation.scope:
                return await self._run(audio, budget_s, request, asked)
        finally:
            self._speculative.remove(speculation)
        # Only a preemption ends the scope without a result.
        self._skipped += 1
        raise SttSkippedError(speculation.preempted_by)

    def _preempt_one(self, *, partials_only: bool) -> bool:
        """Cancel one speculative transcription, a partial one first; whether any was."""
        running = [s for s in self._speculative if not s.scope.cancel_called]
        running.sort(key=lambda s: not s.partial)  # partials first, then oldest first
        for speculation in running:
            if speculation.partial or not partials_only:
                speculation.preempted_by = (
                    "preempted by early work" if partials_only else "preempted by a final"
                )
                speculation.scope.cancel()  # its engine aborts (SttEngine.transcribe)
                return True
        return False

    async def _run(
        self, audio: Float32, budget_s: float | None, request: EngineRequest, asked: float
    ) -> SttResult:
        # Called holding a limiter token, so an engine is free.
        engine = self._free.pop()
        acquired = _now()
        try:
            with trio.move_on_after(budget_s if budget_s is not None else math.inf) as scope:
                result = await engine.transcribe(audio, request)
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
            cpu_ms=result.cpu_ms,
            words=result.words,
            engine=result.engine,
            decoded_again=result.decoded_again,
        )

    def language_name(self, code: str) -> str:
        return self._engines[0].language_name(code)

    def prompt_tokens(self, prompt: str) -> int:
        return self._engines[0].prompt_tokens(prompt)

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
        """Free every engine now rather than at interpreter exit."""
        engines, self._free = self._free, []
        with trio.CancelScope(shield=True):
            for engine in engines:
                await engine.aclose()
