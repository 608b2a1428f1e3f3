"""``ws://HOST:PORT/v1/audio``: a session per WebSocket client that streams audio in.

The contract (docs/protocol.md):

1. The client's first message is text JSON ``{"type": "start", "sample_rate": N,
   "encoding": "pcm_s16le" | "pcm_f32le", "channels": 1 | 2}`` with optional
   ``"wake_word": true|false``, ``"keywords": [...]``, ``"language": "en"``.
2. The server answers with a ``session_started`` event naming the session, then
   sends that session's own events and transcripts, the same JSON objects as
   on ZeroMQ, nothing from other sessions.
3. The client sends binary messages of raw audio in the announced format, any
   length up to the message size limit; 8 000 to 48 000 Hz is resampled,
   stereo is down-mixed.
4. Text ``{"type": "stop"}`` ends capture: an open utterance is transcribed and
   sent, then a ``session_ended`` event, then the server closes with 1000.

A bad start message or audio that does not fit the format closes with 1003 or
1008 and a reason saying what was wrong; a start beyond ``sessions.max``
closes with 1013; a client silent for ``sessions.idle_timeout_s`` is closed
(what it said is still answered first); a client that disconnects ends its
session at once, aborting its transcription if one is running.
"""

from __future__ import annotations

from typing import Literal

import trio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from trio_websocket import WebSocketConnection

from ..audio.network import AudioFormatError, Encoding, PushSource
from ..errors import ConfigError, ModelError, find_error, only_errors, validation_problem
from ..sessions import EndReason, Session, SessionLimitError, SessionManager, SessionOptions
from ..settings import Settings
from ..stt.base import SttBackend
from ..transport.schemas import Stream
from . import client_json

__all__ = ["AUDIO_PATH", "AudioWebSocketEndpoint", "StartMessage"]

AUDIO_PATH = "/v1/audio"

# Close codes (RFC 6455, section 7.4.1).
NORMAL, GOING_AWAY, UNSUPPORTED_DATA, POLICY, INTERNAL_ERROR, TRY_AGAIN = (
    1000,
    1001,
    1003,
    1008,
    1011,
    1013,
)
#: A close frame's reason must fit in 123 bytes of UTF-8.
_MAX_REASON_BYTES = 123
#: After its session ends, a client's queued messages get this long to go out.
_FLUSH_S = 2.0


class StartMessage(BaseModel):
    """The first message of a ``/v1/audio`` client."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["start"]
    sample_rate: int = Field(ge=8_000, le=48_000)
    encoding: Encoding
    channels: Literal[1, 2]
    wake_word: bool | None = None
    keywords: list[str] | None = Field(None, min_length=1, max_length=16)
    language: str | None = Field(None, pattern=r"^[a-z]{2,3}$")

    def options(self) -> SessionOptions:
        return SessionOptions(
            wake_word=self.wake_word,
            keywords=tuple(self.keywords) if self.keywords is not None else None,
            language=self.language,
        )


class _Closed(Exception):
    """End the connection with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _reason(text: str) -> str:
    raw = text.encode()
    if len(raw) <= _MAX_REASON_BYTES:
        return text
    return raw[: _MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


def _parse_start(message: str | bytes) -> StartMessage:
    if isinstance(message, bytes):
        raise _Closed(UNSUPPORTED_DATA, "the first message must be a text start message")
    try:
        data = client_json.loads(message)
    except client_json.ClientJsonError as exc:
        raise _Closed(POLICY, f"bad start message: {exc}") from None
    try:
        return StartMessage.model_validate(data)
    except ValidationError as exc:
        raise _Closed(POLICY, f"bad start message: {validation_problem(exc, 'message')}") from None


def _language_problem(stt: SttBackend, language: str | None) -> str | None:
    """Why the engine cannot transcribe ``language``; None when it can (or none is asked).

    Whisper raises only when the first utterance is decoded, after the
    session has started; docs/protocol.md promises the refusal at start.
    """
    if language is None or language in stt.languages:
        return None
    if stt.english_only:  # as SessionManager.open says it
        return f"the model {stt.name} is English-only; it cannot transcribe {language!r}"
    return f"the model {stt.name} cannot transcribe {language!r}"


class AudioWebSocketEndpoint:
    """Serves ``/v1/audio`` connections as sessions of ``manager``."""

    def __init__(self, settings: Settings, manager: SessionManager) -> None:
        self._settings = settings
        self._manager = manager
        self._idle_s = settings.sessions.idle_timeout_s

    async def __call__(self, ws: WebSocketConnection, client: int) -> None:
        try:
            await self._serve(ws)
        except BaseException as exc:
            closed = find_error(exc, _Closed)
            if closed is None or not only_errors(exc, _Closed):
                raise
            with trio.move_on_after(1.0):
                await ws.aclose(code=closed.code, reason=_reason(closed.reason))

    async def _serve(self, ws: WebSocketConnection) -> None:
        start = None
        with trio.move_on_after(self._idle_s):
            start = _parse_start(await ws.get_message())
        if start is None:
            raise _Closed(NORMAL, f"no start message within {self._idle_s:g} s")
        problem = _language_problem(self._manager.engines.stt, start.language)
        if problem is not None:
            raise _Closed(POLICY, problem)
        try:
            session = self._manager.open("websocket", start.options())
        except SessionLimitError as exc:
            raise _Closed(TRY_AGAIN, str(exc)) from None
        except ConfigError as exc:
            raise _Closed(POLICY, exc.reason) from None
        source = PushSource(
            name=f"websocket:{session.id}",
            sample_rate=start.sample_rate,
            encoding=start.encoding,
            channels=start.channels,
            frame_samples=self._settings.audio.frame_samples,
            target_rate=self._settings.audio.sample_rate,
        )
        # Subscribed before the session starts, so session_started is the first message.
        subscription = self._manager.outbox.subscribe(
            f"audio-{session.id}",
            (Stream.EVENTS, Stream.TRANSCRIPTS),
            self._settings.output.websocket_client_queue,
            session_id=session.id,
        )
        receiving = trio.CancelScope()
        sending = trio.CancelScope()

        async def run_session(*, task_status: trio.TaskStatus[None]) -> None:
            try:
                await session.run(source, task_status=task_status)
            finally:
                # What is queued still goes out, within a bound; nothing more comes in.
                subscription.end()
                sending.deadline = trio.current_time() + _FLUSH_S
                receiving.cancel()

        async def send_messages() -> None:
            with sending:
                async for item in subscription.receive:
                    await ws.send_message(item.payload.decode())

        with subscription:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_messages)
                try:
                    await nursery.start(run_session)
                except (ConfigError, ModelError) as exc:  # an unknown wake word, say
                    raise _Closed(POLICY, str(exc)) from None
                with receiving:
                    await self._receive_audio(ws, session, source)
        await self._close_after(ws, session)

    async def _receive_audio(
        self, ws: WebSocketConnection, session: Session, source: PushSource
    ) -> None:
        """Audio into the session until stop or idle timeout (or, cancelled, its end)."""
        while True:
            message: str | bytes | None = None
            with trio.move_on_after(self._idle_s):
                message = await ws.get_message()
            if message is None:
                session.end_reason = EndReason.IDLE_TIMEOUT
                break
            if isinstance(message, bytes):
                try:
                    await source.push(message)
                except AudioFormatError as exc:
                    session.end_reason = EndReason.PROTOCOL_ERROR
                    raise _Closed(UNSUPPORTED_DATA, str(exc)) from None
                continue
            try:
                data = client_json.loads(message)
            except client_json.ClientJsonError as exc:
                session.end_reason = EndReason.PROTOCOL_ERROR
                raise _Closed(POLICY, f"bad message: {exc}") from None
            if isinstance(data, dict) and data.get("type") == "stop":
                session.end_reason = EndReason.STOP
                break
            session.end_reason = EndReason.PROTOCOL_ERROR
            raise _Closed(POLICY, 'expected binary audio or {"type": "stop"}')
        # The rest of what was said goes through; the session ends after it.
        await source.finish()
        await session.finished.wait()

    async def _close_after(self, ws: WebSocketConnection, session: Session) -> None:
        code, reason = NORMAL, session.end_reason.value
        if session.failed:
            code, reason = INTERNAL_ERROR, "session failed"
        elif session.end_reason is EndReason.SERVICE_STOPPING:
            code = GOING_AWAY
        elif session.end_reason is EndReason.IDLE_TIMEOUT:
            reason = f"idle for {self._idle_s:g} s"
        with trio.move_on_after(1.0):
            await ws.aclose(code=code, reason=reason)
