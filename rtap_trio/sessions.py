"""Many sessions over one set of engines: the local source and every network client.

:class:`SessionManager` hands out :class:`Session` objects up to
``sessions.max``; the slot is taken when the session is opened, before any
await, so the cap holds however many clients arrive at once. A session runs in
its caller's task (``await session.run(source)``: the caller sees the task)
under a supervisor of its own, so that a session whose stage keeps crashing
ends alone with a ``session_failed`` event while the service and the other
sessions go on. Shared by every session: the STT backend (which serves their
utterances in the order their speech ended), the language analyzer, the
outbox and the metrics.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio

from .audio.base import AudioSource
from .errors import ConfigError, RestartsExhaustedError, RTAPError, find_error, only_errors
from .pipeline import Engines, PipelineStatistics, SessionPipeline
from .session import PipelineState, SessionContext, SessionStateMachine
from .settings import Settings
from .supervisor import RestartPolicy, Saboteur, Supervisor
from .telemetry import Metrics
from .transport.outbox import Outbox, SessionOutbox
from .transport.schemas import EventType

__all__ = [
    "EndReason",
    "FaultHook",
    "Session",
    "SessionLimitError",
    "SessionManager",
    "SessionOptions",
    "SessionStatistics",
    "new_session_id",
]


#: Awaited before each (re)start of a supervised task: with the session's
#: context and the stage ("frontend", "stt", ...), or with None and the task's
#: name for the service's own tasks ("zmq-events", "websocket"). Raising makes
#: that start a crash, sleeping stalls it, a returned saboteur runs beside the
#: task (see :data:`~rtap_trio.supervisor.StartHook`): tests inject faults with it.
FaultHook = Callable[[SessionContext | None, str], Awaitable[Saboteur | None]]


def new_session_id() -> str:
    """12 hex digits: every id the same length, so that a ZeroMQ topic prefix
    ``transcript.<id>`` matches that session alone."""
    return uuid.uuid4().hex[:12]


class SessionLimitError(RTAPError):
    """``sessions.max`` sessions are running already."""


class EndReason(enum.StrEnum):
    """Why a session ended (the ``reason`` of its ``session_ended`` event)."""

    END_OF_STREAM = "end_of_stream"
    STOP = "stop"
    IDLE_TIMEOUT = "idle_timeout"
    DISCONNECTED = "disconnected"
    PROTOCOL_ERROR = "protocol_error"
    SERVICE_STOPPING = "service_stopping"


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """What a client may choose for its own session; None keeps the settings'."""

    wake_word: bool | None = None
    keywords: tuple[str, ...] | None = None
    language: str | None = None
    #: False: a wake word service, nothing is transcribed
    transcribe: bool = True

    def apply(self, settings: Settings) -> Settings:
        wakeword = settings.wakeword
        update: dict[str, Any] = {}
        if self.wake_word is not None:
            update["enabled"] = self.wake_word
        if self.keywords is not None:
            # The sensitivities were set for the configured keywords.
            update |= {"keywords": list(self.keywords), "keyword_paths": [], "sensitivities": []}
        if not update:
            return settings
        return settings.model_copy(update={"wakeword": wakeword.model_copy(update=update)})


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    session_id: str
    kind: str
    source: str
    state: PipelineState
    started_at: float
    pipeline: PipelineStatistics | None


class Session:
    """One session: open it from the manager, then ``await run(source)`` once."""

    def __init__(
        self,
        manager: SessionManager,
        kind: str,
        options: SessionOptions,
        session_id: str,
    ) -> None:
        self.id = session_id
        self.kind = kind
        self.options = options
        self._manager = manager
        self.ctx = SessionContext.create(session_id, kind, manager.outbox, manager.metrics)
        self.outbox: SessionOutbox = self.ctx.outbox
        self.state: SessionStateMachine = self.ctx.state
        self.log = self.ctx.log
        hook = manager.fault_hook
        self.supervisor = Supervisor(
            RestartPolicy.from_settings(manager.settings.supervisor),
            self._crashed,
            before_start=(lambda task: hook(self.ctx, _stage_of(task))) if hook else None,
        )
        self.pipeline: SessionPipeline | None = None
        self.started_at = time.time()
        self.end_reason = EndReason.END_OF_STREAM
        self.finished = trio.Event()
        #: its stages crashed more than the restart policy allows
        self.failed = False
        self._stop_requested = False

    def _crashed(self, task: str, exc: BaseException) -> None:
        stage = _stage_of(task)  # metrics by stage, not by session
        metrics = self._manager.metrics
        metrics.errors.labels(stage, type(exc).__name__).inc()
        metrics.task_restarts.labels(stage).inc()
        self.outbox.event(
            EventType.STAGE_ERROR,
            stage=stage,
            task=task,
            error_type=type(exc).__name__,
            error=str(exc)[:500],
        )
        self.state.fault(f"{task} crashed")

    async def run(
        self, source: AudioSource, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the session on ``source`` until it ends, is stopped or fails.

        Reports started once its stages run. A start that cannot be set up
        (an unknown wake word) raises ConfigError or ModelError before that;
        a session whose stage exhausts its restart policy ends with a
        ``session_failed`` event and returns. Cancelling ends it at once
        (``session_ended`` with reason ``disconnected``).
        """
        manager = self._manager
        outcome = "ended"
        started = False
        try:
            settings = self.options.apply(manager.settings)
            self.pipeline = SessionPipeline(
                self.ctx,
                settings,
                source=source,
                engines=manager.engines,
                supervisor=self.supervisor,
                language=self.options.language,
                wake_only=not self.options.transcribe,
            )
            if self._stop_requested:
                self.pipeline.stop()
            self.outbox.event(
                EventType.SESSION_STARTED,
                kind=self.kind,
                source=source.name,
                model=manager.engines.stt.name,
                wake_word=settings.wakeword.enabled,
                keywords=list(settings.wakeword.keywords) if settings.wakeword.enabled else [],
                language=self.options.language,
            )
            started = True
            manager.metrics.sessions_active.labels(self.kind).inc()
            self.log.bind(component="sessions").info(
                "session {} started ({}, {})", self.id, self.kind, source.name
            )
            await self.pipeline.run(task_status=task_status)
        except BaseException as exc:
            if only_errors(exc, trio.Cancelled):  # maybe inside the stages' exception group
                if self.end_reason is EndReason.END_OF_STREAM:
                    self.end_reason = EndReason.DISCONNECTED
                raise
            exhausted = find_error(exc, RestartsExhaustedError)
            if exhausted is None or not started:
                outcome = "refused" if not started else "failed"
                raise
            outcome = "failed"
            self.failed = True
            self.outbox.event(
                EventType.SESSION_FAILED,
                task=exhausted.task,
                error_type=type(exhausted.last).__name__,
                error=str(exhausted)[:500],
            )
            self.log.bind(component="sessions").error("session {} failed: {}", self.id, exhausted)
        finally:
            if started:
                manager.metrics.sessions_active.labels(self.kind).dec()
                if outcome == "ended":
                    self.state.shutdown(self.end_reason.value)
                    lost = self.pipeline.statistics() if self.pipeline else None
                    self.outbox.event(
                        EventType.SESSION_ENDED,
                        reason=self.end_reason.value,
                        frames_dropped=lost.frames_dropped if lost else 0,
                        utterances_dropped=lost.utterances_dropped if lost else 0,
                    )
                    self.log.bind(component="sessions").info(
                        "session {} ended ({})", self.id, self.end_reason.value
                    )
            manager.metrics.sessions.labels(self.kind, outcome).inc()
            manager._release(self)
            self.finished.set()

    def stop(self, reason: EndReason) -> None:
        """End capture; what was said still goes through, then the session ends."""
        if self._stop_requested:
            return
        self._stop_requested = True
        self.end_reason = reason
        if self.pipeline is not None:
            self.pipeline.stop()

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            session_id=self.id,
            kind=self.kind,
            source=self.pipeline.source.name if self.pipeline else "",
            state=self.state.state,
            started_at=self.started_at,
            pipeline=self.pipeline.statistics() if self.pipeline else None,
        )


def _stage_of(task: str) -> str:
    """``<session>/stt-0`` -> ``stt``: what a task does, whichever session it serves."""
    return task.rsplit("/", 1)[-1].split("-", 1)[0]


class SessionManager:
    def __init__(
        self,
        settings: Settings,
        *,
        engines: Engines,
        outbox: Outbox,
        metrics: Metrics,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.settings = settings
        self.engines = engines
        self.outbox = outbox
        self.metrics = metrics
        self.fault_hook = fault_hook
        self._sessions: dict[str, Session] = {}
        self._idle = trio.Event()
        self._idle.set()

    def open(
        self,
        kind: str,
        options: SessionOptions | None = None,
        *,
        session_id: str | None = None,
    ) -> Session:
        """Take a slot for a new session (synchronously: the cap holds under concurrency).

        Raises SessionLimitError at ``sessions.max``, ConfigError for options
        the engines cannot honour (a language an English-only model lacks).
        """
        options = options or SessionOptions()
        if len(self._sessions) >= self.settings.sessions.max:
            self.metrics.sessions.labels(kind, "refused").inc()
            raise SessionLimitError(f"{self.settings.sessions.max} sessions are running already")
        if options.language not in (None, "en") and self.engines.stt.english_only:
            raise ConfigError(
                "session",
                "language",
                f"the model {self.engines.stt.name} is English-only; "
                f"it cannot transcribe {options.language!r}",
            )
        session = Session(self, kind, options, session_id or new_session_id())
        self._sessions[session.id] = session
        self._idle = trio.Event()
        return session

    def _release(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        if not self._sessions:
            self._idle.set()

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def stop_all(self, reason: EndReason) -> None:
        for session in self:
            session.stop(reason)

    async def wait_idle(self) -> None:
        """Until no session runs."""
        await self._idle.wait()

    def statistics(self) -> list[SessionStatistics]:
        return [session.statistics() for session in self]
