"""Parts of the service driven outside a running service: for tests and benches.

A session context with no session around it (:func:`detached_context`) and a
front-end fed frame by frame (:func:`detached_frontend`): what a test of one
stage or a benchmark of its per-frame cost needs, and the service never does.
Apart from the package's core so that nothing the service runs depends on it
(an import-linter contract in pyproject.toml forbids the core to import it).

The fault hooks that prove recovery stay where the service calls them
(:data:`rtap_trio.sessions.FaultHook`, ``Service(fault_hook=...)``): they are
how a test reaches inside a running service.
"""

from __future__ import annotations

from .buffers import FullPolicy, open_channel
from .metrics import Metrics
from .session_context import SessionContext, publishing_context
from .settings import Settings
from .stages.frontend import FrontEnd
from .stages.wakeword import WakeWordDetector
from .transport.outbox import Outbox
from .vad.base import VoiceActivity

__all__ = ["detached_context", "detached_frontend"]


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
) -> FrontEnd:
    """A front-end driven frame by frame through :meth:`FrontEnd.process`, not
    :meth:`FrontEnd.run`: the channels it is given are never used."""
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
    )
