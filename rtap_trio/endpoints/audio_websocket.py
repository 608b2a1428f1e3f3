"""``ws://HOST:PORT/v1/audio``: a session per WebSocket client that streams audio in.

The contract (docs/protocol.md):

1. The client's first message is text JSON ``{"type": "start", "sample_rate": N,
   "encoding": "pcm_s16le" | "pcm_f32le", "channels": 1 | 2}`` with optional
   ``"wake_word": true|false``, ``"keywords": [...]``, ``"language": "en"``,
   ``"prompt": "..."`` (a vocabulary prompt), ``"words": true`` (word times on
   transcripts), ``"task": "transcribe" | "translate"``.
2. The server answers with a ``session_started`` event naming the session, then
   sends that session's own events and transcripts, the same JSON objects as
   on ZeroMQ, nothing from other sessions.
3. The client sends binary messages of raw audio in the announced format, any
   length up to the message size limit; 8 000 to 48 000 Hz is resampled,
   stereo is down-mixed.
4. Text ``{"type": "stop"}`` ends capture: an open utterance is transcribed and
   sent, then a ``session_ended`` event, then the server closes with 1000.

A prompt over the engine's token limit, or a translation on an English-only
model, is refused at the start like any bad option (1008 and why). A prompt or
word times the engine cannot honour are not refused: the ``session_started``
event lists them in ``ignored``.

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

from ..audio.network import AudioFormatError, Encoding, PushedAudio
from ..errors import ConfigError, ModelError, find_error, only_errors, validation_problem
from ..session_bridge import SessionBridge
from ..session_options import SessionOptions
from ..sessions import (
    EndReason,
    Session,
    SessionLimitError,
    SessionManager,
)
from ..settings import Settings
from ..transport.websocket_close import (
    GOING_AWAY,
    INTERNAL_ERROR,
    NORMAL,
    POLICY,
    TRY_AGAIN,
    UNSUPPORTED_DATA,
    close_reason,
)
from . import client_json

__all__ = ["AUDIO_PATH", "AudioWebSocketEndpoint", "StartMessage"]

AUDIO_PATH = "/v1/audio"

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
    # The engine counts the tokens (at most 224 for Whisper); the characters
    # are bounded first so that nothing huge is tokenized.
    prompt: str | None = Field(
        None,
        max_length=4000,
        description="vocabulary prompt: names and jargon the decoder should spell so",
    )
    words: bool | None = Field(None, description="transcripts carry word start/end times")
    task: Literal["transcribe", "translate"] | None = Field(
        None, description="translate: English text (a multilingual model only)"
    )

    def options(self) -> SessionOptions:
        return SessionOptions(
            wake_word=self.wake_word,
            keywords=tuple(self.keywords) if self.keywords is not None else None,
            language=self.language,
            prompt=self.prompt,
            words=self.words,
            task=self.task,
        )

    def audio(self) -> PushedAudio:
        return PushedAudio(self.sample_rate, self.encoding, self.channels)


class _Closed(Exception):
    """End the connection with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


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
                await ws.aclose(code=closed.code, reason=close_reason(closed.reason))

    async def _serve(self, ws: WebSocketConnection) -> None:
        start = None
        with trio.move_on_after(self._idle_s):
            start = _parse_start(await ws.get_message())
        if start is None:
            raise _Closed(NORMAL, f"no start message within {self._idle_s:g} s")
        opening = self._manager.open_bridge("websocket", start.options(), audio=start.audio())
        try:
            async with opening as bridge:
                await self._converse(ws, bridge)
        except SessionLimitError as exc:
            raise _Closed(TRY_AGAIN, str(exc)) from None
        except ConfigError as exc:  # a language the model lacks, an unknown wake word
            raise _Closed(POLICY, exc.reason) from None
        except ModelError as exc:
            raise _Closed(POLICY, str(exc)) from None
        except AudioFormatError as exc:
            raise _Closed(UNSUPPORTED_DATA, str(exc)) from None
        await self._close_after(ws, bridge.session)

    async def _converse(self, ws: WebSocketConnection, bridge: SessionBridge) -> None:
        """The session's messages out (session_started first) while its audio comes in."""
        forwarded = trio.Event()

        async def send_messages() -> None:
            async for item in bridge.messages:
                await ws.send_message(item.payload.decode())
            forwarded.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_messages)
            with bridge.until_ended():
                await self._receive_audio(ws, bridge)
            # What is queued still goes out, within a bound; nothing more comes in.
            with trio.move_on_after(_FLUSH_S):
                await forwarded.wait()
            nursery.cancel_scope.cancel()

    async def _receive_audio(self, ws: WebSocketConnection, bridge: SessionBridge) -> None:
        """Audio into the session until stop or idle timeout (or, cancelled, its end)."""
        session = bridge.session
        while True:
            message: str | bytes | None = None
            with trio.move_on_after(self._idle_s):
                message = await ws.get_message()
            if message is None:
                reason = EndReason.IDLE_TIMEOUT
                break
            if isinstance(message, bytes):
                try:
                    await bridge.push(message)
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
                reason = EndReason.STOP
                break
            session.end_reason = EndReason.PROTOCOL_ERROR
            raise _Closed(POLICY, 'expected binary audio or {"type": "stop"}')
        # The rest of what was said goes through; the session ends after it.
        await bridge.finish(reason)

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
