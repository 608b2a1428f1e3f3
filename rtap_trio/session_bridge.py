"""The session bridge: the one way a network client (and the evaluation) gets a session.

``async with manager.open_bridge(kind, options, audio=...) as bridge``, in the
spirit of trio-websocket's ``open_websocket``, or
:meth:`~rtap_trio.sessions.SessionManager.connect_bridge` with the caller's
nursery (its ``connect_websocket``) where the session outlives one block of
code; the manager's methods are :func:`open_bridge` and :func:`connect_bridge`
here. In this order they check the options (language, wake words) and the
audio format, take the slot, subscribe to the session's messages, then run
the session (or, with ``start=False``, hold the slot until the client has
chosen its options: a stop meanwhile ends it unrun). The
:class:`SessionBridge` they give has the session's messages (``messages``,
ending after the session ends) and takes the client's audio (``push``,
``end_turn``, ``finish``). Whatever happens (the client gone, a bad format, an
engine error, a cancellation) the slot is given back: by the session's own
end, or unrun.

Apart from :mod:`rtap_trio.sessions` (what a session is, and the manager that
caps them) because this is what the protocols see of a session: its audio in,
its messages out, and the order that keeps its slot safe. It knows the
sessions only as types; the manager imports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

import trio

from .audio.base import AudioSource
from .audio.network import PushedAudio, PushSource
from .transport.outbox import Published, Subscription
from .transport.schemas import Stream

if TYPE_CHECKING:
    from .session_options import SessionOptions
    from .sessions import EndReason, Session, SessionManager

__all__ = ["SessionBridge", "connect_bridge", "open_bridge"]


class SessionBridge:
    """A client's session: its messages out, the client's audio in.

    Made by :func:`open_bridge` (or :func:`connect_bridge`), which
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


@contextlib.asynccontextmanager
async def open_bridge(
    manager: SessionManager,
    kind: str,
    options: SessionOptions,
    *,
    session_id: str,
    audio: PushedAudio | AudioSource,
    streams: Iterable[Stream] = (Stream.EVENTS, Stream.TRANSCRIPTS),
    queue_size: int | None = None,
    start: bool = True,
) -> AsyncIterator[SessionBridge]:
    """A session for a client, for the block: see :func:`connect_bridge`.

    When the block ends, a session still running ends at once (as when
    the client is gone): ``await bridge.finish(...)`` first to have the
    rest of what was said. The block's own exception comes out as it was.
    """
    # Raised after the nursery as it was raised, not in an exception group.
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        bridge: SessionBridge | None = None
        try:
            bridge = await connect_bridge(
                manager,
                nursery,
                kind,
                options,
                session_id=session_id,
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
    manager: SessionManager,
    nursery: trio.Nursery,
    kind: str,
    options: SessionOptions,
    *,
    session_id: str,
    audio: PushedAudio | AudioSource,
    streams: Iterable[Stream] = (Stream.EVENTS, Stream.TRANSCRIPTS),
    queue_size: int | None = None,
    start: bool = True,
) -> SessionBridge:
    """A session for a client, running in a task of ``nursery``, named ``session_id``.

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
    source = audio if isinstance(audio, AudioSource) else None
    try:
        manager.check_options(options)  # first, as the protocols always have
        if isinstance(audio, PushedAudio):
            source = PushSource(
                name=f"{kind}:{session_id}",
                sample_rate=audio.sample_rate,
                encoding=audio.encoding,
                channels=audio.channels,
                frame_samples=manager.settings.audio.frame_samples,
                target_rate=manager.settings.audio.sample_rate,
                interactive=audio.interactive,
            )
        assert source is not None
        session = manager.open(kind, options, session_id=session_id)
    except BaseException:
        if source is not None:
            with trio.CancelScope(shield=True):
                await source.aclose()
        raise
    # Subscribed before the session runs: none of its messages is missed.
    subscription = manager.outbox.subscribe(
        f"{kind}-{session_id}",
        streams,
        queue_size or manager.settings.output.websocket_client_queue,
        session_id=session_id,
    )
    bridge = SessionBridge(session, source, subscription, manager)
    if start:
        bridge.start()
    try:
        await nursery.start(bridge._run)
    except BaseException:
        await bridge._close(ran=False)  # nothing, unless its task never began
        raise
    return bridge
