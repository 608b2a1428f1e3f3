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

A client (a network protocol, the evaluation) gets its session through the
session bridge, :meth:`SessionManager.open_bridge` or ``connect_bridge``
(:mod:`rtap_trio.session_bridge`).
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import trio
from loguru import logger

from .audio.base import AudioSource
from .audio.network import PushedAudio
from .errors import ConfigError, RestartsExhaustedError, RTAPError, find_error, only_errors
from .events import SessionEnded, SessionFailed, SessionStarted, StageError
from .metrics import Metrics
from .pipeline import Engines, PipelineStatistics, SessionPipeline
from .session_bridge import SessionBridge, connect_bridge, open_bridge
from .session_context import SessionContext, publishing_context
from .session_options import (
    SessionOptions,
    ignored_options,
    language_problem,
    prompt_problem,
    task_problem,
)
from .session_state import PipelineState, SessionStateMachine
from .settings import Settings
from .stt import Decoding
from .supervisor import RestartPolicy, Saboteur, Supervisor
from .transport.outbox import Outbox, SessionOutbox
from .transport.schemas import Stream
from .wakeword import check_keywords

__all__ = [
    "EndReason",
    "FaultHook",
    "Session",
    "SessionLimitError",
    "SessionManager",
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
        self.ctx = publishing_context(session_id, kind, manager.outbox, manager.metrics)
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
        #: where a session opened before its client chose its options waits to
        #: run (:meth:`SessionBridge.start`); a stop cancels the wait
        self.start_wait = trio.CancelScope()

    def _crashed(self, task: str, exc: BaseException) -> None:
        stage = _stage_of(task)  # metrics by stage, not by session
        metrics = self._manager.metrics
        metrics.errors.labels(stage, type(exc).__name__).inc()
        metrics.task_restarts.labels(stage).inc()
        self.outbox.event(
            StageError(stage=stage, task=task, error_type=type(exc).__name__, error=str(exc)[:500])
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
            decoding = self.options.decoding(settings)
            ignored = manager.ignored_options(decoding) if self.options.transcribe else ()
            self.pipeline = SessionPipeline(
                self.ctx,
                settings,
                source=source,
                engines=manager.engines,
                supervisor=self.supervisor,
                language=self.options.language,
                wake_only=not self.options.transcribe,
                client_turns=self.options.client_turns,
                decoding=decoding,
            )
            if self._stop_requested:
                self.pipeline.stop()
            self.outbox.event(
                SessionStarted(
                    kind=self.kind,
                    source=source.name,
                    model=manager.engines.stt.name,
                    wake_word=settings.wakeword.enabled,
                    keywords=tuple(settings.wakeword.keywords) if settings.wakeword.enabled else (),
                    language=self.options.language,
                    ignored=ignored or None,
                )
            )
            if ignored:
                self.log.bind(component="sessions").info(
                    "session {}: the {} engine ignores {}",
                    self.id,
                    manager.engines.stt.name,
                    ", ".join(ignored),
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
                SessionFailed(
                    task=exhausted.task,
                    error_type=type(exhausted.last).__name__,
                    error=str(exhausted)[:500],
                )
            )
            self.log.bind(component="sessions").error("session {} failed: {}", self.id, exhausted)
        finally:
            if started:
                manager.metrics.sessions_active.labels(self.kind).dec()
                if outcome == "ended":
                    self.state.shutdown(self.end_reason.value)
                    lost = self.pipeline.statistics() if self.pipeline else None
                    self.outbox.event(
                        SessionEnded(
                            reason=self.end_reason.value,
                            frames_dropped=lost.frames_dropped if lost else 0,
                            utterances_dropped=lost.utterances_dropped if lost else 0,
                        )
                    )
                    self.log.bind(component="sessions").info(
                        "session {} ended ({})", self.id, self.end_reason.value
                    )
            manager.metrics.sessions.labels(self.kind, outcome).inc()
            manager._release(self)
            self.finished.set()

    def stop(self, reason: EndReason) -> None:
        """End capture; what was said still goes through, then the session ends.

        A session that waits to run (its client has not chosen its options)
        ends without running.
        """
        if self._stop_requested:
            return
        self._stop_requested = True
        self.end_reason = reason
        self.start_wait.cancel()
        if self.pipeline is not None:
            self.pipeline.stop()

    def end_at_pause(self, reason: EndReason) -> None:
        """Stop at the next pause between utterances (a draining service): what
        was said is answered, nothing is cut in two. A session not yet running
        stops at once."""
        if self._stop_requested:
            return
        if self.pipeline is None:
            self.stop(reason)
            return
        self.pipeline.frontend.end_at_pause(lambda: self.stop(reason))

    @property
    def streaming(self) -> bool:
        """Its client streams for as long as it likes (a microphone, a
        ``/v1/audio`` or Realtime client), rather than sending one recording
        and waiting for its answer (an upload, a Wyoming request)."""
        return self.pipeline is None or self.pipeline.source.interactive

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def discard(self) -> None:
        """Give the slot back without running: the client left, or the session
        was stopped, before it ran. No event: it never started."""
        self._manager.metrics.sessions.labels(self.kind, "ended").inc()
        self._manager._release(self)
        self.finished.set()

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

    def language_problem(self, language: str | None) -> str | None:
        """Why the STT engine cannot transcribe ``language`` (session_options.py)."""
        return language_problem(self.engines.stt, language)

    def prompt_problem(self, prompt: str | None) -> str | None:
        """Why the STT engine refuses ``prompt`` (session_options.py)."""
        return prompt_problem(self.engines.stt, prompt)

    def task_problem(self, task: str | None) -> str | None:
        """Why the STT engine cannot do ``task`` (session_options.py)."""
        return task_problem(self.engines.stt, task)

    def ignored_options(self, decoding: Decoding) -> tuple[str, ...]:
        """The options the STT engine ignores (session_options.py)."""
        return ignored_options(self.engines.stt, decoding)

    def check_options(self, options: SessionOptions) -> None:
        """Raises ConfigError for options the engines cannot honour: a language
        the model lacks (key ``language``), a wake word Porcupine lacks
        (``keywords``), a prompt over the engine's limit (``prompt``), a
        translation on a model that cannot (``task``)."""
        problem = self.language_problem(options.language)
        if problem is not None:
            raise ConfigError("session", "language", problem)
        problem = self.prompt_problem(options.decoding(self.settings).prompt)
        if problem is not None:
            raise ConfigError("session", "prompt", problem)
        problem = self.task_problem(options.task)
        if problem is not None:
            raise ConfigError("session", "task", problem)
        if options.keywords is not None and options.apply(self.settings).wakeword.enabled:
            check_keywords(options.keywords, "session", "keywords")

    def open(
        self,
        kind: str,
        options: SessionOptions | None = None,
        *,
        session_id: str | None = None,
    ) -> Session:
        """Take a slot for a new session (synchronously: the cap holds under concurrency).

        Raises ConfigError for options the engines cannot honour (checked
        first), SessionLimitError at ``sessions.max``. The caller runs it
        (``Session.run`` gives the slot back); network clients use
        :meth:`open_bridge`.
        """
        options = options or SessionOptions()
        self.check_options(options)
        if len(self._sessions) >= self.settings.sessions.max:
            self.metrics.sessions.labels(kind, "refused").inc()
            raise SessionLimitError(f"{self.settings.sessions.max} sessions are running already")
        session = Session(self, kind, options, session_id or new_session_id())
        self._sessions[session.id] = session
        self._idle = trio.Event()
        return session

    def open_bridge(
        self,
        kind: str,
        options: SessionOptions | None = None,
        *,
        audio: PushedAudio | AudioSource,
        streams: Iterable[Stream] = (Stream.EVENTS, Stream.TRANSCRIPTS),
        queue_size: int | None = None,
        start: bool = True,
    ) -> AbstractAsyncContextManager[SessionBridge]:
        """A session for a client, for the ``async with`` block: see
        :func:`rtap_trio.session_bridge.open_bridge`."""
        return open_bridge(
            self,
            kind,
            options or SessionOptions(),
            session_id=new_session_id(),
            audio=audio,
            streams=streams,
            queue_size=queue_size,
            start=start,
        )

    async def connect_bridge(
        self,
        nursery: trio.Nursery,
        kind: str,
        options: SessionOptions | None = None,
        *,
        audio: PushedAudio | AudioSource,
        streams: Iterable[Stream] = (Stream.EVENTS, Stream.TRANSCRIPTS),
        queue_size: int | None = None,
        start: bool = True,
    ) -> SessionBridge:
        """A session for a client, running in a task of ``nursery``: see
        :func:`rtap_trio.session_bridge.connect_bridge`."""
        return await connect_bridge(
            self,
            nursery,
            kind,
            options or SessionOptions(),
            session_id=new_session_id(),
            audio=audio,
            streams=streams,
            queue_size=queue_size,
            start=start,
        )

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

    async def drain(self, limit_s: float, *, besides: Session | None = None) -> None:
        """The clients' sessions (all but ``besides``, the local one) end by
        themselves: a stream at its next pause (its client moves to another
        instance with nothing cut), an upload or a Wyoming request when
        answered; for at most ``limit_s``, after which the caller stops them."""
        clients = [session for session in self if session is not besides]
        if not clients or limit_s <= 0:
            return
        log = logger.bind(component="service")
        log.info("draining: {} sessions, for up to {:g} s", len(clients), limit_s)
        started = trio.current_time()
        with trio.move_on_after(limit_s) as waited:
            for session in clients:
                if session.streaming:
                    session.end_at_pause(EndReason.SERVICE_STOPPING)
            for session in clients:
                await session.finished.wait()
        left = sum(not session.finished.is_set() for session in clients)
        if waited.cancelled_caught:
            log.warning("drained for {:g} s: {} sessions still running are stopped", limit_s, left)
        else:
            log.info("drained in {:.2f} s", trio.current_time() - started)

    async def wait_idle(self) -> None:
        """Until no session runs."""
        await self._idle.wait()

    def statistics(self) -> list[SessionStatistics]:
        return [session.statistics() for session in self]
