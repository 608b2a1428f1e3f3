"""One Realtime client, start to end: its session through the bridge, and the events it sends.

The lifecycle: the socket is accepted, the session's slot taken (the bridge
opened with ``start=False``), ``session.created`` sent; the session runs from
the first ``input_audio_buffer.append`` with the configuration as it is then;
the connection reads until the client leaves, goes silent or the session
ends, then has what was said answered and closes with the code that says why.
The client's events (``session.update``, ``input_audio_buffer.append`` /
``commit`` / ``clear``) are handled here; what they may hold is
:mod:`.session_update`, what the session says back is :mod:`.events`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Callable, MutableMapping
from typing import Any

import trio
from starlette.websockets import WebSocket

from ...audio.network import PushedAudio
from ...errors import ConfigError
from ...session_bridge import SessionBridge
from ...sessions import EndReason, SessionLimitError, SessionManager
from ...settings import Settings
from ...transport.websocket_close import GOING_AWAY, INTERNAL_ERROR, NORMAL, POLICY, TRY_AGAIN
from .. import client_json
from .client_error import ClientError
from .client_socket import ClientSocket
from .config import PCM16_RATE, SessionConfig, TurnDetection
from .events import RealtimeEvents
from .session_update import updated_config

__all__ = ["KIND", "Connection"]

#: The kind of the sessions this endpoint opens.
KIND = "openai_realtime"

_BYTES_PER_SAMPLE = 2
#: The API refuses a commit of less than this.
_MIN_COMMIT_MS = 100
#: A manual-mode buffer is one utterance for Whisper, whose window is 30 s:
#: more would be cut off, so it is refused instead.
_MAX_BUFFER_S = 30
_MAX_BUFFER_BYTES = _MAX_BUFFER_S * PCM16_RATE * _BYTES_PER_SAMPLE
#: Server VAD audio goes to the session's source this much at a time (1 s).
_PUSH_BYTES = PCM16_RATE * _BYTES_PER_SAMPLE
#: After its session ends, what is queued for the client gets this long to go out.
_FLUSH_S = 2.0
_CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)


class _End(enum.Enum):
    """Why a connection stops reading its client."""

    DISCONNECTED = "disconnected"
    IDLE = "idle"
    SESSION_ENDED = "session_ended"


class Connection:
    """One client: its session, its configuration and the events both ways."""

    def __init__(
        self,
        settings: Settings,
        sessions: Callable[[], SessionManager | None],
        ws: WebSocket,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._ws = ws
        self._socket = ClientSocket(ws)
        self._idle_s = settings.sessions.idle_timeout_s
        offered = list(ws.scope.get("subprotocols") or [])
        # Browsers name the protocol "realtime" (with the key and beta flag as
        # further subprotocols); a handshake that does not pick one fails there.
        self._subprotocol = "realtime" if "realtime" in offered else None
        self._beta = (
            "realtime=v1" in ws.headers.get("openai-beta", "")
            or "openai-beta.realtime-v1" in offered
        )
        self._buffer = bytearray()
        self._events = RealtimeEvents(self._socket, lambda: self._config)
        # Set in run() once the session is open.
        self._manager: SessionManager
        self._bridge: SessionBridge
        self._config: SessionConfig

    # ------------------------------------------------------------ the connection

    async def run(self) -> None:
        await self._ws.accept(subprotocol=self._subprotocol)
        manager = self._sessions()
        if manager is None:
            await self._refuse("the service is starting or stopping", "unavailable", TRY_AGAIN)
            return
        intent = self._ws.query_params.get("intent")
        if intent not in (None, "transcription"):
            await self._refuse(
                f"RTAP serves transcription sessions only (intent=transcription), not {intent!r}",
                "invalid_value",
                POLICY,
                param="intent",
            )
            return
        self._manager = manager
        self._config = SessionConfig(
            model=manager.engines.stt.name,
            language=None,
            prompt=None,
            turn_detection=self._default_turn_detection(),
        )
        # The slot now; the session runs once the client has chosen its options.
        pcm16 = PushedAudio(PCM16_RATE, "pcm_s16le", 1)
        opening = manager.open_bridge(KIND, self._config.options(), audio=pcm16, start=False)
        try:
            async with opening as bridge:
                self._bridge = bridge
                end = await self._converse()
        except SessionLimitError as exc:
            await self._refuse(str(exc), "busy", TRY_AGAIN, kind="rate_limit_error")
            return
        if end is not _End.DISCONNECTED:
            await self._say_goodbye(end)

    def _default_turn_detection(self) -> TurnDetection:
        """Server VAD with the service's own timings."""
        vad = self._settings.vad
        return TurnDetection(vad.hangover_ms, vad.pre_roll_ms)

    async def _converse(self) -> _End:
        """Events both ways until the client leaves or goes silent, or the session ends."""
        end = _End.SESSION_ENDED
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._events.forward, self._bridge.messages)
            created = "transcription_session.created" if self._beta else "session.created"
            await self._socket.send(created, session=self._session_object(beta=self._beta))
            with self._bridge.until_ended():
                end = await self._receive()
            if end is not _End.DISCONNECTED:
                await self._wind_down(end)
            # What is left (a transcription for a client that left) goes now.
            nursery.cancel_scope.cancel()
        return end

    async def _refuse(
        self,
        message: str,
        code: str,
        close_code: int,
        *,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        await self._socket.error(ClientError(message, param=param, code=code, kind=kind))
        await self._socket.close(close_code, message)

    async def _receive(self) -> _End:
        """Client events until it leaves or goes silent (or, cancelled, the session ends)."""
        while True:
            message: MutableMapping[str, Any] | None = None
            with trio.move_on_after(self._idle_s):
                message = await self._socket.receive()
            if message is None:
                return _End.IDLE
            if message["type"] == "websocket.disconnect":
                return _End.DISCONNECTED
            text = message.get("text")
            try:
                if text is None:
                    raise ClientError(
                        "binary messages are not taken: send JSON text events",
                        code="invalid_type",
                    )
                await self._dispatch(text)
            except ClientError as exc:
                await self._socket.error(exc, event_id=_event_id(text))

    async def _wind_down(self, end: _End) -> None:
        """The session's last words: what was said is answered before the close."""
        # Commits in flight are the session's utterances: they are answered
        # before it ends (a session that never ran ends unrun).
        reason = EndReason.IDLE_TIMEOUT if end is _End.IDLE else EndReason.END_OF_STREAM
        await self._bridge.finish(reason)
        with trio.move_on_after(_FLUSH_S):
            await self._events.forwarded.wait()
        # Every committed item gets its answer: one the session could not give
        # (it failed) is a failure.
        await self._events.fail_unanswered()

    async def _say_goodbye(self, end: _End) -> None:
        session = self._bridge.session
        if end is _End.IDLE:
            reason = f"idle for {self._idle_s:g} s"
            await self._socket.error(
                ClientError(f"no event for {self._idle_s:g} s", code="idle_timeout")
            )
            await self._socket.close(NORMAL, reason)
        elif session.failed:
            await self._socket.close(INTERNAL_ERROR, "session failed")
        elif session.end_reason is EndReason.SERVICE_STOPPING:
            await self._socket.error(
                ClientError("the service is stopping", code="service_stopping", kind="server_error")
            )
            await self._socket.close(GOING_AWAY, EndReason.SERVICE_STOPPING.value)
        else:
            await self._socket.close(NORMAL, session.end_reason.value)

    def _session_object(self, *, beta: bool) -> dict[str, Any]:
        session_id = f"sess_{self._bridge.session.id}"
        if beta:
            return self._config.beta_session(session_id)
        return self._config.ga_session(session_id)

    # --------------------------------------------------------------- the session

    def _start_session(self) -> None:
        """Run the session, with the configuration as it is now (its VAD takes it once)."""
        if self._bridge.started:
            return
        try:
            self._bridge.start(self._config.options())
        except ConfigError as exc:  # checked at session.update: not expected
            raise ClientError(exc.reason, kind="server_error", code="session_failed") from None

    async def _push(self, pcm: bytes) -> None:
        # A second at a time: the source converts what it is given whole, so a
        # 4 MiB event (87 s) would cost its float copies at once.
        for start in range(0, len(pcm), _PUSH_BYTES):
            await self._bridge.push(pcm[start : start + _PUSH_BYTES])

    # ------------------------------------------------------------- client events

    async def _dispatch(self, text: str) -> None:
        try:
            event = client_json.loads(text)
        except client_json.ClientJsonError as exc:
            raise ClientError(f"the event cannot be read: {exc}", code="invalid_json") from None
        if not isinstance(event, dict):
            raise ClientError("an event must be a JSON object", code="invalid_json")
        kind = event.get("type")
        if kind in ("session.update", "transcription_session.update"):
            await self._update(event, beta=kind == "transcription_session.update")
        elif kind == "input_audio_buffer.append":
            await self._append(event)
        elif kind == "input_audio_buffer.commit":
            await self._commit()
        elif kind == "input_audio_buffer.clear":
            # Under server_vad speech the VAD has heard is its own: it is still
            # committed when it ends. The buffer here is the manual one.
            self._buffer.clear()
            await self._socket.send("input_audio_buffer.cleared")
        else:
            supported = ", ".join(f"'{name}'" for name in _CLIENT_EVENTS)
            raise ClientError(
                f"Invalid value: {kind!r}. Supported values are: {supported}.", param="type"
            )

    async def _update(self, event: dict[str, Any], *, beta: bool) -> None:
        session = event.get("session")
        config = updated_config(
            self._config,
            session,
            default_model=self._manager.engines.stt.name,
            default_turn_detection=self._default_turn_detection(),
            language_problem=self._manager.language_problem,
            prompt_problem=self._manager.prompt_problem,
        )
        if self._bridge.started and config.vad_key() != self._config.vad_key():
            in_audio = isinstance(session, dict) and "audio" in session
            raise ClientError(
                "turn_detection (and, with server_vad, the language) cannot change once "
                "audio has been appended: the session's VAD took them when it started",
                param="session.audio.input.turn_detection"
                if in_audio
                else "session.turn_detection",
                code="session_update_not_allowed",
            )
        if self._bridge.started and config.prompt != self._config.prompt:
            in_audio = isinstance(session, dict) and "audio" in session
            raise ClientError(
                "the prompt cannot change once audio has been appended: the session's "
                "transcriptions took it when it started",
                param="session.audio.input.transcription.prompt"
                if in_audio
                else "session.input_audio_transcription.prompt",
                code="session_update_not_allowed",
            )
        self._config = config
        kind = "transcription_session.updated" if beta else "session.updated"
        await self._socket.send(kind, session=self._session_object(beta=beta))

    async def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ClientError("'audio' must be a base64 string", param="audio", code="invalid_type")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("'audio' is not valid base64", param="audio") from None
        if len(pcm) % _BYTES_PER_SAMPLE:
            raise ClientError(
                f"{len(pcm)} bytes of audio are not whole samples of pcm16 (2 bytes each)",
                param="audio",
            )
        if not pcm:
            return
        manual = self._config.turn_detection is None
        if manual and len(self._buffer) + len(pcm) > _MAX_BUFFER_BYTES:
            raise ClientError(
                f"the input audio buffer holds at most {_MAX_BUFFER_S} s: commit it first",
                param="audio",
                code="input_audio_buffer_full",
            )
        self._start_session()
        if manual:
            self._buffer += pcm
            return
        # A session that is ending (the service stops) takes no more audio; its
        # end closes the connection.
        await self._push(pcm)

    async def _commit(self) -> None:
        if self._config.turn_detection is not None:
            raise ClientError(
                "with server_vad turn detection RTAP's VAD commits each utterance itself; "
                "set turn_detection to null to commit by hand",
                code="unsupported_with_server_vad",
            )
        held_ms = len(self._buffer) / _BYTES_PER_SAMPLE / PCM16_RATE * 1000
        if held_ms < _MIN_COMMIT_MS:
            raise ClientError(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{_MIN_COMMIT_MS}ms of audio, but buffer only has {held_ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        pcm = bytes(self._buffer)
        self._buffer.clear()
        await self._events.manual_commit(held_ms / 1000)
        # One utterance of the session, ended by the client: through the same
        # stages as the VAD's (STT, language, ZeroMQ, the console, catch-up).
        await self._push(pcm)
        await self._bridge.end_turn(self._config.language)


def _event_id(text: str | None) -> str | None:
    """The client's ``event_id``, for the error about its event."""
    if text is None:
        return None
    try:
        # Numbers as their text: an event refused for one still has its id.
        event = json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    event_id = event.get("event_id") if isinstance(event, dict) else None
    return event_id if isinstance(event_id, str) else None
