"""An engine with a fallback: the remote answers while it can, a local engine
when it cannot; the pool and the stages see one engine.

Each utterance goes to the primary engine (``stt.engine``: remote) with a
limit of its own, and to the fallback (``stt.fallback``: whisper.cpp on the
CPU, loaded at start) when the primary fails, outlives that limit, or its
circuit is open (:class:`~rtap_trio.stt.circuit.CircuitBreaker`, shared by
the pool's engines: one remote, one circuit). So an utterance is late, never
lost: the price of a dead remote is the failed attempt (a refused connection:
about a millisecond; a remote that hangs: the limit) plus the local
transcription, and once the circuit is open only the latter.

The limit leaves the fallback time within the pool's budget (the enclosing
cancel scope's deadline): ``stt.remote.timeout_ms``, cut to what remains of
the budget less ``stt.remote.fallback_reserve_ms``, and never below half of
what remains, so a short budget is shared rather than given to one side.
Cancelling the call (the budget itself, a final preempting a partial)
cancels whichever engine is working, and counts as no failure.

Which engine answered is on the result (``EngineResult.engine``), and so on
the transcript (``stt_engine``); switches and counts go to the observer.
"""

from __future__ import annotations

import dataclasses
import math

import trio
from loguru import logger

from ..items import Float32
from .circuit import CircuitBreaker
from .engine import EngineRequest, EngineResult, SttEngine
from .failure import EngineFailed
from .observer import CircuitClosed, CircuitOpened, EngineObserver, SilentObserver

__all__ = ["FallbackEngine"]


class FallbackEngine(SttEngine):
    """``primary`` while it answers, ``fallback`` when it does not."""

    def __init__(
        self,
        primary: SttEngine,
        fallback: SttEngine,
        circuit: CircuitBreaker,
        *,
        names: tuple[str, str],
        timeout_s: float,
        reserve_s: float,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._circuit = circuit
        self._primary_name, self._fallback_name = names
        self._timeout_s = timeout_s
        self._reserve_s = reserve_s
        self._observer: EngineObserver = SilentObserver()
        # What the pool and the endpoints see is the primary: its languages are
        # the ones asked for (the fallback answers them as well as it can).
        self.capabilities = primary.capabilities

    def observe(self, observer: EngineObserver) -> None:
        self._observer = observer

    @property
    def circuit(self) -> CircuitBreaker:
        return self._circuit

    def _limit_s(self) -> float:
        remaining = trio.current_effective_deadline() - trio.current_time()
        if math.isinf(remaining):
            return self._timeout_s
        return min(self._timeout_s, max(remaining - self._reserve_s, remaining / 2))

    async def transcribe(self, audio: Float32, request: EngineRequest) -> EngineResult:
        reason = await self._primary_or_reason(audio, request)
        if isinstance(reason, EngineResult):
            return reason
        self._observer.fell_back(self._primary_name, reason)
        started = trio.current_time()
        result = await self._fallback.transcribe(audio, request)
        self._observer.answered(self._fallback_name, trio.current_time() - started)
        return dataclasses.replace(result, engine=self._fallback_name)

    async def _primary_or_reason(
        self, audio: Float32, request: EngineRequest
    ) -> EngineResult | str:
        """The primary's answer, or why the fallback must answer."""
        circuit = self._circuit
        permit = circuit.permit()
        if permit is None:
            return "circuit_open"
        started = trio.current_time()
        limit_s = self._limit_s()
        reason = "timeout"
        try:
            with trio.move_on_after(limit_s):
                result = await self._primary.transcribe(audio, request)
                elapsed = trio.current_time() - started
                self._observer.answered(self._primary_name, elapsed)
                down_s = circuit.succeeded(permit)
                if down_s is not None:
                    self._restored(down_s)
                return result
        except EngineFailed as exc:
            reason = exc.reason
            detail = exc.detail
        except BaseException:  # cancelled from outside: no verdict on the primary
            circuit.abandoned(permit)
            raise
        else:
            detail = f"no answer within {limit_s:.2f}s"
        self._observer.failed(self._primary_name, reason, trio.current_time() - started)
        if circuit.failed(permit):
            self._opened(reason, detail)
        return reason

    def _opened(self, reason: str, detail: str) -> None:
        circuit = self._circuit
        logger.bind(component="stt").warning(
            "{} STT failed {} times in a row ({}): the {} fallback answers; "
            "trying it again in {:.1f}s",
            self._primary_name,
            circuit.failures,
            detail,
            self._fallback_name,
            circuit.retry_in_s,
        )
        self._observer.circuit_opened(
            CircuitOpened(
                engine=self._primary_name,
                fallback=self._fallback_name,
                reason=reason,
                failures=circuit.failures,
                retry_in_s=circuit.retry_in_s,
            )
        )

    def _restored(self, down_s: float) -> None:
        diverted = self._circuit.diverted
        logger.bind(component="stt").info(
            "{} STT answers again after {:.1f}s; the fallback answered {} utterance(s) meanwhile",
            self._primary_name,
            down_s,
            diverted,
        )
        self._observer.circuit_closed(
            CircuitClosed(engine=self._primary_name, down_s=down_s, fallbacks=diverted)
        )

    def language_name(self, code: str) -> str:
        return self._fallback.language_name(code)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self._primary.aclose()
            finally:
                await self._fallback.aclose()
