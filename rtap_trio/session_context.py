"""What every stage of one session shares: :class:`SessionContext`.

Stages get a context and their own settings sections, nothing more: this
module knows no stage, engine or transport. :func:`publishing_context` makes
the one a session runs with, whose state machine
(:mod:`rtap_trio.session_state`) publishes, counts and logs each change.
Apart from the session itself (:mod:`rtap_trio.sessions`) so that stages
import what they share without the sessions that run them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from .events import StateChanged, StateReset
from .metrics import Metrics
from .session_state import PipelineState, SessionStateMachine
from .transport.outbox import Outbox, SessionOutbox

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["SessionContext", "publishing_context"]


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What every stage of one session shares."""

    session_id: str
    #: what the session is for metrics labels: "local", "websocket", ...
    kind: str
    outbox: SessionOutbox
    metrics: Metrics
    state: SessionStateMachine
    #: loguru, bound to the session
    log: Logger


def publishing_context(
    session_id: str, kind: str, outbox: Outbox, metrics: Metrics
) -> SessionContext:
    """A context whose state machine publishes each transition as a
    ``state_changed`` event of the session, counts it, and logs it."""
    session_outbox = outbox.session(session_id)
    log = logger.bind(session_id=session_id, session_kind=kind)

    def transitioned(before: PipelineState, to: PipelineState, reason: str) -> None:
        metrics.state_transitions.labels(before.value, to.value).inc()
        session_outbox.event(StateChanged(from_state=before.value, to=to.value, reason=reason))
        log.bind(component="pipeline", state=to.value).debug(
            "state {} -> {} ({})", before.value, to.value, reason
        )

    def reset(before: PipelineState, attempted: PipelineState, reason: str) -> None:
        metrics.state_resets.inc()
        session_outbox.event(
            StateReset(from_state=before.value, attempted=attempted.value, reason=reason)
        )
        log.bind(component="pipeline").warning(
            "state {} -> {} is not allowed ({}): reset to IDLE",
            before.value,
            attempted.value,
            reason,
        )

    return SessionContext(
        session_id=session_id,
        kind=kind,
        outbox=session_outbox,
        metrics=metrics,
        state=SessionStateMachine(transitioned, on_reset=reset),
        log=log,
    )
