"""One audio session: its state machine and the context its stages share.

The published state follows the session, not a single stage: the front-end can
already be capturing the next utterance while the last one is transcribed. It
is derived from what is going on, in priority order: emitting (EMIT), an
utterance queued or in STT (PROCESSING), capturing after a wake word or speech
start (LISTENING), else IDLE. Every change is checked against
:data:`ALLOWED_TRANSITIONS` and reported to a callback (the session publishes
it as a ``state_changed`` event and counts it).

Stages get a :class:`SessionContext` and their own settings sections, nothing
more: this module knows no stage, engine or transport.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from .metrics import Metrics
from .transport.outbox import Outbox, SessionOutbox
from .transport.schemas import EventType

if TYPE_CHECKING:
    from loguru import Logger

__all__ = [
    "ALLOWED_TRANSITIONS",
    "PipelineState",
    "SessionContext",
    "SessionStateMachine",
    "StateTransitionError",
    "TransitionHook",
]


class PipelineState(enum.StrEnum):
    IDLE = "IDLE"
    LISTENING = "LISTENING"
    PROCESSING = "PROCESSING"
    EMIT = "EMIT"
    SHUTDOWN = "SHUTDOWN"
    ERROR = "ERROR"


_S = PipelineState
ALLOWED_TRANSITIONS: frozenset[tuple[PipelineState, PipelineState]] = frozenset(
    {
        (_S.IDLE, _S.LISTENING),
        (_S.LISTENING, _S.IDLE),  # listen timeout, or speech too short
        (_S.LISTENING, _S.PROCESSING),
        (_S.PROCESSING, _S.EMIT),
        (_S.PROCESSING, _S.IDLE),  # nothing to emit (no words, timeout, dropped)
        (_S.PROCESSING, _S.LISTENING),  # same, while the next utterance is captured
        (_S.EMIT, _S.IDLE),
        (_S.EMIT, _S.LISTENING),
        (_S.EMIT, _S.PROCESSING),  # another utterance is already queued
        (_S.ERROR, _S.IDLE),
        (_S.ERROR, _S.LISTENING),
        (_S.ERROR, _S.PROCESSING),
    }
    | {(s, _S.ERROR) for s in _S if s not in (_S.ERROR, _S.SHUTDOWN)}
    | {(s, _S.SHUTDOWN) for s in _S if s is not _S.SHUTDOWN}
)


class StateTransitionError(RuntimeError):
    pass


#: Called with (from, to, reason) after each transition.
TransitionHook = Callable[[PipelineState, PipelineState, str], None]


class SessionStateMachine:
    """The session's published state, derived from what its stages report.

    A report that would take it where :data:`ALLOWED_TRANSITIONS` forbids (the
    counters have gone wrong: a bug, a stage that reported twice) does not
    crash the stage that reported it: the machine resets to IDLE with its
    counters cleared, and ``on_reset`` is told (the session counts it and
    publishes a ``state_reset`` event). The transcripts go on regardless: no
    stage waits on the state.
    """

    def __init__(
        self,
        on_transition: TransitionHook | None = None,
        *,
        on_reset: TransitionHook | None = None,
    ) -> None:
        self._on_transition = on_transition
        self._on_reset = on_reset
        self._resyncing = False
        self._state = PipelineState.IDLE
        self._capturing = False
        self._in_flight = 0
        self._emitting = False
        self.transitions = 0

    @property
    def state(self) -> PipelineState:
        return self._state

    def capture_started(self, reason: str) -> None:
        self._capturing = True
        self._settle(reason)

    def capture_ended(self, reason: str) -> None:
        self._capturing = False
        self._settle(reason)

    def utterance_queued(self) -> None:
        self._capturing = False
        self._in_flight += 1
        self._settle("endpoint")

    def utterance_done(self, reason: str) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        self._settle(reason)

    def emit_started(self) -> None:
        self._emitting = True
        self._settle("transcript")

    def emit_finished(self) -> None:
        self._emitting = False
        self._in_flight = max(0, self._in_flight - 1)
        self._settle("emitted")

    def fault(self, reason: str) -> None:
        """A stage crashed: show ERROR, then whatever the counters say."""
        self._emitting = False
        if self._state not in (PipelineState.ERROR, PipelineState.SHUTDOWN):
            self._transition(PipelineState.ERROR, reason)
        self._settle("recovered")

    def reset_capture(self) -> None:
        """The front-end restarted: whatever it was capturing is gone."""
        self.capture_ended("frontend_restart")

    def shutdown(self, reason: str) -> None:
        if self._state is not PipelineState.SHUTDOWN:
            self._transition(PipelineState.SHUTDOWN, reason)

    def _target(self) -> PipelineState:
        if self._emitting:
            return PipelineState.EMIT
        if self._in_flight:
            return PipelineState.PROCESSING
        if self._capturing:
            return PipelineState.LISTENING
        return PipelineState.IDLE

    def _settle(self, reason: str) -> None:
        if self._state is PipelineState.SHUTDOWN:
            return
        target = self._target()
        if target is not self._state:
            self._transition(target, reason)

    def _transition(self, to: PipelineState, reason: str) -> None:
        before = self._state
        resyncing, self._resyncing = self._resyncing, False
        if (before, to) not in ALLOWED_TRANSITIONS and not resyncing:
            if self._on_reset is None:
                raise StateTransitionError(f"{before} -> {to} is not allowed ({reason})")
            self._reset(before, to, reason)
            return
        self._state = to
        self.transitions += 1
        if self._on_transition is not None:
            self._on_transition(before, to, reason)

    def _reset(self, before: PipelineState, attempted: PipelineState, reason: str) -> None:
        self._capturing = self._emitting = False
        self._in_flight = 0
        self._state = PipelineState.IDLE
        # The stages' work in progress goes on and reports as before: the next
        # change out of IDLE (an utterance queued mid-capture, say) is taken
        # as it comes, then the rules hold again.
        self._resyncing = True
        assert self._on_reset is not None
        self._on_reset(before, attempted, reason)


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

    @classmethod
    def create(cls, session_id: str, kind: str, outbox: Outbox, metrics: Metrics) -> SessionContext:
        """A context whose state machine publishes each transition as a
        ``state_changed`` event of the session, counts it, and logs it."""
        session_outbox = outbox.session(session_id)
        log = logger.bind(session_id=session_id, session_kind=kind)

        def transitioned(before: PipelineState, to: PipelineState, reason: str) -> None:
            metrics.state_transitions.labels(before.value, to.value).inc()
            session_outbox.event(
                EventType.STATE_CHANGED, **{"from": before.value, "to": to.value, "reason": reason}
            )
            log.bind(component="pipeline", state=to.value).debug(
                "state {} -> {} ({})", before.value, to.value, reason
            )

        def reset(before: PipelineState, attempted: PipelineState, reason: str) -> None:
            metrics.state_resets.inc()
            session_outbox.event(
                EventType.STATE_RESET,
                **{"from": before.value, "attempted": attempted.value, "reason": reason},
            )
            log.bind(component="pipeline").warning(
                "state {} -> {} is not allowed ({}): reset to IDLE",
                before.value,
                attempted.value,
                reason,
            )

        return cls(
            session_id=session_id,
            kind=kind,
            outbox=session_outbox,
            metrics=metrics,
            state=SessionStateMachine(transitioned, on_reset=reset),
            log=log,
        )
