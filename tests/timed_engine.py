"""An STT engine for scheduling tests: a set time per utterance, no speech.

It keeps the engine protocol as a real engine must (one utterance at a time,
cancellation aborts within a set time, closed once) and records what the pool
asked of it, on trio's clock, so that tests on the mock clock are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import trio

from rtap_trio.stt import EngineCapabilities, EngineRequest, EngineResult, SttEngine

__all__ = ["Call", "TimedEngine", "utterance"]


def utterance(number: int, samples: int = 1600) -> npt.NDArray[np.float32]:
    """Audio that names itself: the engine's text for it is ``"utterance <number>"``."""
    return np.full(samples, float(number), dtype=np.float32)


@dataclass
class Call:
    """One transcription the pool asked of an engine."""

    engine: str
    text: str
    language: str | None
    started: float
    ended: float | None = None
    #: it was cancelled (an abort) rather than finished
    aborted: bool = False


@dataclass
class TimedEngine(SttEngine):
    """Takes ``seconds`` per utterance and ``abort_s`` to stop once cancelled."""

    label: str = "engine"
    seconds: float = 1.0
    abort_s: float = 0.0
    #: the CPU time it reports per utterance (None: it cannot tell)
    cpu_ms: float | None = None
    capabilities: EngineCapabilities = field(
        default_factory=lambda: EngineCapabilities(
            name="timed", languages=("en", "de"), multilingual=True
        )
    )
    #: every call, shared between the engines of one test when they are given one list
    calls: list[Call] = field(default_factory=list)
    closed: bool = False
    _busy: bool = field(default=False, init=False, repr=False)

    async def transcribe(
        self, audio: npt.NDArray[np.float32], request: EngineRequest
    ) -> EngineResult:
        language = request.language
        assert not self.closed, "transcribe on a closed engine"
        assert not self._busy, "the pool lent one engine twice at once"
        text = f"utterance {int(audio[0])}"
        call = Call(self.label, text, language, trio.current_time())
        self.calls.append(call)
        self._busy = True
        try:
            await trio.sleep(self.seconds)
        except trio.Cancelled:
            call.aborted = True
            with trio.CancelScope(shield=True):  # as whisper.cpp: it stops between steps
                await trio.sleep(self.abort_s)
            raise
        finally:
            self._busy = False
            call.ended = trio.current_time()
        return EngineResult(text, language or "en", None, 0.0, self.cpu_ms)

    def language_name(self, code: str) -> str:
        return {"en": "english", "de": "german"}.get(code, code)

    async def aclose(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True
