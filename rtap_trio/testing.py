"""Parts of the service driven outside a running service: for tests and benches.

A session context with no session around it (:func:`detached_context`), a
front-end fed frame by frame (:func:`detached_frontend`) and STT engines loaded
once and lent to service after service (:class:`EngineLender`): what a test of
one stage, a benchmark of its per-frame cost or a test suite that starts a
hundred services needs, and the service never does.
Apart from the package's core so that nothing the service runs depends on it
(an import-linter contract in pyproject.toml forbids the core to import it).

The fault hooks that prove recovery stay where the service calls them
(:data:`rtap_trio.sessions.FaultHook`, ``Service(fault_hook=...)``): they are
how a test reaches inside a running service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .buffers import FullPolicy, open_channel
from .items import Float32
from .metrics import Metrics
from .session_context import SessionContext, publishing_context
from .settings import Settings, SttSettings
from .stages.frontend import FrontEnd
from .stages.speculative import SpeculativeTranscriber
from .stages.turn import TurnJudge
from .stages.wakeword import WakeWordDetector
from .stt import EngineRequest, EngineResult, SttEngine, open_engines
from .stt.observer import EngineObserver, Observable
from .transport.outbox import Outbox
from .vad.base import VoiceActivity

__all__ = ["EngineLender", "EngineLenderStatistics", "detached_context", "detached_frontend"]


def detached_context(
    session_id: str = "test",
    kind: str = "test",
    outbox: Outbox | None = None,
    metrics: Metrics | None = None,
) -> SessionContext:
    """A session's context, as a running session has it (its state machine
    publishes, counts and logs each change), on ``outbox`` and ``metrics`` or
    fresh ones."""
    return publishing_context(
        session_id,
        kind,
        outbox if outbox is not None else Outbox(),
        metrics if metrics is not None else Metrics(),
    )


def detached_frontend(
    ctx: SessionContext,
    settings: Settings,
    *,
    wake: WakeWordDetector | None,
    voice: VoiceActivity,
    live_from_start: bool = False,
    early_transcriber: SpeculativeTranscriber | None = None,
    turn_judge: TurnJudge | None = None,
) -> FrontEnd:
    """A front-end driven frame by frame through :meth:`FrontEnd.process`, not
    :meth:`FrontEnd.run`: the channels it is given are never used. With a
    ``turn_judge`` it asks it at pauses as ``settings.turn`` says."""
    _, frames = open_channel("frames", 1, FullPolicy.DROP_OLDEST)
    utterances, _ = open_channel("utterances", 1, FullPolicy.DROP_OLDEST)
    return FrontEnd(
        ctx,
        audio=settings.audio,
        vad=settings.vad,
        listen_timeout_ms=settings.wakeword.listen_timeout_ms,
        budget_ms=settings.pipeline.frontend_budget_ms,
        wake=wake if settings.wakeword.enabled else None,
        voice=voice,
        frames=frames,
        utterances=utterances,
        live_from_start=live_from_start,
        early_transcriber=early_transcriber,
        turn_judge=turn_judge,
        turn=settings.turn,
    )


@dataclass(frozen=True, slots=True)
class EngineLenderStatistics:
    #: engines loaded (and warmed up) so far
    loaded: int
    #: engines lent so far, counting each loan
    lent: int
    #: engines out on loan now
    out: int


class EngineLender:
    """STT engines loaded once per STT section and lent to one service at a time.

    Pass it as ``Service(open_stt=lender)``: the service's pool gets engines
    already loaded and warmed up, and "closing" them gives them back. A test
    suite that starts a service per test spends the model's load once per
    section instead (a base model's load and warm-up is 3.3 s of CPU, tiny.en's
    1.1 s). Two services running at once never share an engine: the second gets
    engines of its own. Engines are keyed by the whole ``stt`` section, so a
    service with other STT settings gets other engines.
    """

    def __init__(self) -> None:
        self._idle: dict[str, list[SttEngine]] = {}
        self._loaded = 0
        self._lent = 0
        self._out = 0

    async def __call__(self, settings: SttSettings) -> list[SttEngine]:
        idle = self._idle.setdefault(settings.model_dump_json(), [])
        engines = [idle.pop() for _ in range(min(len(idle), settings.workers))]
        missing = settings.workers - len(engines)
        if missing:
            loaded = await open_engines(settings.model_copy(update={"workers": missing}))
            self._loaded += len(loaded)
            engines.extend(loaded)
        self._lent += len(engines)
        self._out += len(engines)
        return [_LentEngine(engine, self._give_back(idle)) for engine in engines]

    def _give_back(self, idle: list[SttEngine]) -> _Return:
        def give_back(engine: SttEngine) -> None:
            self._out -= 1
            idle.append(engine)

        return give_back

    def statistics(self) -> EngineLenderStatistics:
        return EngineLenderStatistics(loaded=self._loaded, lent=self._lent, out=self._out)

    async def aclose(self) -> None:
        """Free the engines not out on loan."""
        idle, self._idle = self._idle, {}
        for engines in idle.values():
            for engine in engines:
                await engine.aclose()


_Return = Callable[[SttEngine], None]


class _LentEngine(SttEngine):
    """An engine on loan: closing it gives it back to its lender."""

    def __init__(self, engine: SttEngine, give_back: _Return) -> None:
        self.capabilities = engine.capabilities
        self._engine: SttEngine | None = engine
        self._give_back = give_back

    async def transcribe(self, audio: Float32, request: EngineRequest) -> EngineResult:
        assert self._engine is not None, "transcribing on an engine given back"
        return await self._engine.transcribe(audio, request)

    def language_name(self, code: str) -> str:
        assert self._engine is not None, "an engine given back"
        return self._engine.language_name(code)

    def prompt_tokens(self, prompt: str) -> int:
        assert self._engine is not None, "an engine given back"
        return self._engine.prompt_tokens(prompt)

    def observe(self, observer: EngineObserver) -> None:
        """Passed on to an engine with something to tell (a fallback's switches)."""
        if isinstance(self._engine, Observable):
            self._engine.observe(observer)

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            self._give_back(engine)
