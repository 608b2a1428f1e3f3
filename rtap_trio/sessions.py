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

**The session bridge** is the one way a network client (and the evaluation)
gets a session: ``async with manager.open_bridge(kind, options, audio=...) as
bridge``, in the spirit of trio-websocket's ``open_websocket``, or
:meth:`SessionManager.connect_bridge` with the caller's nursery (its
``connect_websocket``) where the session outlives one block of code. In this
order it checks the options (language, wake words) and the audio format,
takes the slot, subscribes to the session's messages, then runs the session
(or, with ``start=False``, holds the slot until the client has chosen its
options: a stop meanwhile ends it unrun). The :class:`SessionBridge` it gives
has the session's messages (``messages``, ending after the session ends) and
takes the client's audio (``push``, ``end_turn``, ``finish``). Whatever
happens (the client gone, a bad format, an engine error, a cancellation) the
slot is given back: by the session's own end, or unrun.
"""

from __future__ import annotations

import contextlib
import enum
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import trio

from .audio.base import AudioSource
from .audio.network import PushedAudio, PushSource
from .errors import ConfigError, RestartsExhaustedError, RTAPError, find_error, only_errors
from .metrics import Metrics
from .pipeline import Engines, PipelineStatistics, SessionPipeline
from .session import PipelineState, SessionContext, SessionStateMachine
from .settings import Settings
from .stages.wakeword import check_keywords
from .supervisor import RestartPolicy, Saboteur, Supervisor
from .transport.outbox import Outbox, Published, SessionOutbox, Subscription
from .transport.schemas import EventType, Stream

__all__ = [
    "EndReason",
    "FaultHook",
    "Session",
    "SessionBridge",
    "SessionLimitError",
    "SessionManager",
    "SessionOptions",
    "SessionStatistics",
    "new_session_id",
]

#: a language code as whisper names them ("en", "haw"); anything else is refused unread
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


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
    #: the client ends each utterance itself (a Realtime manual commit), not the VAD
    client_turns: bool = False

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
        #: where a session opened before its client chose its options waits to
        #: run (:meth:`SessionBridge.start`); a stop cancels the wait
        self.start_wait = trio.CancelScope()

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
                client_turns=self.options.client_turns,
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


class SessionBridge:
    """A client's session: its messages out, the client's audio in.

    Made by :meth:`SessionManager.open_bridge` (or ``connect_bridge``), which
    runs the session in a task of its nursery and gives the slot back whatever
    happens.
    """

    def __init__(
        self,
        session: Session,
        source: AudioSource,
        subscription: Subscription,
        manager: SessionManager,
    ) -> None:
        self.session = session
        self.source = source
        self._subscription = subscription
        self._manager = manager
        #: the session may run: at once, or once its client has chosen its options
        self._go = trio.Event()
        #: the session's task: cancelled, the session ends at once
        self._scope = trio.CancelScope()
        self._until_ended: list[trio.CancelScope] = []
        self._ended = False

    @property
    def messages(self) -> trio.MemoryReceiveChannel[Published]:
        """The session's messages of the streams asked for, from before its
        ``session_started`` on; the channel ends after the session has ended
        (run or not) and what is queued has been read."""
        return self._subscription.receive

    @property
    def started(self) -> bool:
        """The session runs, or ran (it was not opened to wait, or was started)."""
        return self._go.is_set()

    def start(self, options: SessionOptions | None = None) -> None:
        """Run a session opened with ``start=False``, with ``options`` if given.

        Raises ConfigError for options the engines cannot honour; the session
        then still waits. Starting a started session does nothing.
        """
        if self._go.is_set():
            return
        if options is not None:
            self._manager.check_options(options)
            self.session.options = options
        self._go.set()

    def until_ended(self) -> trio.CancelScope:
        """A cancel scope cancelled when the session ends (or at once, if it has):
        the client's reading runs in it, so that a session that ends on its own
        (the service stops, a stage fails) stops the reading."""
        scope = trio.CancelScope()
        if self._ended:
            scope.cancel()
        else:
            self._until_ended.append(scope)
        return scope

    async def push(self, data: bytes) -> None:
        """Audio in the announced format; waits while the pipeline is behind.

        Raises AudioFormatError for what is not whole samples. Audio for a
        session that has ended goes nowhere: its end is in ``messages``. A
        session opened to wait takes audio once started.
        """
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await self._pushed().push(data)

    async def end_turn(self, language: str | None = None) -> None:
        """The client ended its turn: what it pushed since its last one is an
        utterance of the session (for ``client_turns``), in ``language``
        (None: detected), through every stage as the VAD's are."""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await self._pushed().end_turn(language)

    async def finish(self, reason: EndReason) -> None:
        """No more audio: what was said goes through, then the session ends
        (with ``reason``, unless it is stopping for another); returns then.

        A session that has not started ends without running.
        """
        session = self.session
        if not (session.stop_requested or session.finished.is_set()):
            session.end_reason = reason
        if not self._go.is_set():
            session.stop(reason)
        elif isinstance(self.source, PushSource):
            # A session ending on its own (the service stops) has closed its source.
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                await self.source.finish()
        await session.finished.wait()

    def abort(self) -> None:
        """End the session at once (the client is gone): ``session_ended``
        with reason ``disconnected`` unless another was set, its work aborted."""
        self._scope.cancel()

    def _pushed(self) -> PushSource:
        if not isinstance(self.source, PushSource):
            raise TypeError(f"{self.source.name} is not a source a client pushes audio into")
        return self.source

    async def _run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """The session's task: it waits to start if asked to, runs, and always
        gives the slot back (by the session's own end, or unrun)."""
        session = self.session
        ran = False
        try:
            with self._scope:
                if not self._go.is_set():
                    task_status.started()
                    with session.start_wait:  # a stop cancels the wait
                        await self._go.wait()
                    if session.stop_requested:  # stopped before it ran: it never will
                        return
                    task_status = trio.TASK_STATUS_IGNORED
                ran = True
                await session.run(self.source, task_status=task_status)
        finally:
            await self._close(ran=ran)

    async def _close(self, *, ran: bool) -> None:
        """The session's end, run or not (once): the messages end after what is
        queued, the reading stops, an unrun session gives its slot back."""
        if self._ended:
            return
        self._ended = True
        self._subscription.end()
        for scope in self._until_ended:
            scope.cancel()
        if not ran:
            self.session.discard()
        # Closed whatever happened: a session that ran has closed it already
        # (closing twice is harmless), one that never ran or failed to start has not.
        with trio.CancelScope(shield=True):
            await self.source.aclose()


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
        """Why the STT engine cannot transcribe ``language``; None when it can
        (or none is asked). Whisper would raise only at the first utterance."""
        if language is None:
            return None
        stt = self.engines.stt
        if stt.english_only and language != "en":
            return f"the model {stt.name} is English-only; it cannot transcribe {language[:40]!r}"
        if not _LANGUAGE.match(language) or language not in stt.languages:
            return f"the model {stt.name} cannot transcribe {language[:40]!r}"
        return None

    def check_options(self, options: SessionOptions) -> None:
        """Raises ConfigError for options the engines cannot honour: a language
        the model lacks (key ``language``), a wake word Porcupine lacks (``keywords``)."""
        problem = self.language_problem(options.language)
        if problem is not None:
            raise ConfigError("session", "language", problem)
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

    @contextlib.asynccontextmanager
    async def open_bridge(
        self,
        kind: str,
        options: SessionOptions | None = None,
        *,
        audio: PushedAudio | AudioSource,
        streams: Iterable[Stream] = (Stream.EVENTS, Stream.TRANSCRIPTS),
        queue_size: int | None = None,
        start: bool = True,
    ) -> AsyncIterator[SessionBridge]:
        """A session for a client, for the block: see :meth:`connect_bridge`.

        When the block ends, a session still running ends at once (as when
        the client is gone): ``await bridge.finish(...)`` first to have the
        rest of what was said. The block's own exception comes out as it was.
        """
        # Raised after the nursery as it was raised, not in an exception group.
        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            bridge: SessionBridge | None = None
            try:
                bridge = await self.connect_bridge(
                    nursery,
                    kind,
                    options,
                    audio=audio,
                    streams=streams,
                    queue_size=queue_size,
                    start=start,
                )
                yield bridge
            except BaseException as exc:
                failure = exc
            finally:
                if bridge is not None:
                    bridge.abort()
        if bridge is not None:
            bridge._subscription.close()  # nobody reads it after the block
        if failure is not None:
            raise failure

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
        """A session for a client, running in a task of ``nursery``.

        ``audio``: what the client will push (a :class:`PushSource` is made
        for it), or a source of the caller's, which the bridge closes.
        ``streams``: which of the session's messages ``bridge.messages``
        carries (at most ``queue_size``, by default
        ``output.websocket_client_queue``, wait to be read; older ones go).
        ``start=False``: the slot is held, the session waits for
        :meth:`SessionBridge.start`.

        Before the slot is taken: ConfigError (options), AudioFormatError
        (``audio``); then SessionLimitError; at the session's start (an
        engine that cannot be set up) ConfigError or ModelError, the slot
        already given back. Cancelling the nursery ends the session.
        """
        options = options or SessionOptions()
        session_id = new_session_id()
        source = audio if isinstance(audio, AudioSource) else None
        try:
            self.check_options(options)  # first, as the protocols always have
            if isinstance(audio, PushedAudio):
                source = PushSource(
                    name=f"{kind}:{session_id}",
                    sample_rate=audio.sample_rate,
                    encoding=audio.encoding,
                    channels=audio.channels,
                    frame_samples=self.settings.audio.frame_samples,
                    target_rate=self.settings.audio.sample_rate,
                    interactive=audio.interactive,
                )
            assert source is not None
            session = self.open(kind, options, session_id=session_id)
        except BaseException:
            if source is not None:
                with trio.CancelScope(shield=True):
                    await source.aclose()
            raise
        # Subscribed before the session runs: none of its messages is missed.
        subscription = self.outbox.subscribe(
            f"{kind}-{session_id}",
            streams,
            queue_size or self.settings.output.websocket_client_queue,
            session_id=session_id,
        )
        bridge = SessionBridge(session, source, subscription, self)
        if start:
            bridge.start()
        try:
            await nursery.start(bridge._run)
        except BaseException:
            await bridge._close(ran=False)  # nothing, unless its task never began
            raise
        return bridge

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
