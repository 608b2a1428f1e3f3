"""OpenAI Realtime transcription over WebSocket: ``/v1/realtime?intent=transcription``.

What the ``openai`` SDK's ``client.realtime.connect(extra_query={"intent":
"transcription"})`` (and browser or pipecat clients of the Realtime API) talk
to, with their ``base_url`` pointed at the HTTP port. The ``openai`` package's
``types/realtime`` (GA) and ``types/beta/realtime`` are the specification.

Each connection is one session of kind ``openai_realtime`` (``sessions.max``
applies), fed by a :class:`~rtap_trio.audio.network.PushSource`: ``pcm16`` is
16-bit little-endian mono PCM at 24 kHz, resampled to the pipeline's 16 kHz.

* The server speaks first: ``session.created`` (GA), or
  ``transcription_session.created`` for a beta client (``OpenAI-Beta:
  realtime=v1``), with the effective configuration.
* ``session.update`` / ``transcription_session.update`` answer with
  ``session.updated`` / ``transcription_session.updated`` in the shape of the
  request's dialect. Both the GA nesting (``audio.input.format``,
  ``.transcription``, ``.turn_detection``) and the beta flat fields
  (``input_audio_format``, ``input_audio_transcription``, ``turn_detection``)
  are read.
* ``turn_detection`` server_vad (the default): RTAP's own VAD and endpointer
  segment the stream; ``silence_duration_ms`` and ``prefix_padding_ms`` become
  the session's ``vad.hangover_ms`` and ``vad.pre_roll_ms``. Its
  ``speech_start`` / ``speech_end`` events become
  ``input_audio_buffer.speech_started`` / ``speech_stopped`` and
  ``committed``, its transcripts
  ``conversation.item.input_audio_transcription.completed``.
* ``turn_detection: null``: audio accumulates until
  ``input_audio_buffer.commit``; the whole buffer is then one utterance of the
  session (``committed``, then ``completed``), ended by the client
  (:meth:`~rtap_trio.sessions.SessionBridge.end_turn`) rather than the VAD, and
  goes through the same stages as the VAD's: STT, language analysis, ZeroMQ,
  the console, catch-up. ``clear`` empties the buffer.
* Every committed item gets exactly one ``completed`` (an empty transcript
  when RTAP heard no words) or ``...transcription.failed`` (dropped, over the
  STT budget, an engine failure). There are no ``delta`` events: RTAP has no
  partial transcripts.

The connection holds its session's slot from the start (the session bridge
opened with ``start=False``); the session runs from the first
``input_audio_buffer.append``, with the configuration as it is then: from then
on ``turn_detection`` (and, under server_vad, the language) are fixed, and an
update that would change them is refused. A session that never ran gives its
slot back unrun (the service's stop ends it at once). Bad input gets an
``error`` event in the Realtime shape and the connection reads on; a client
silent for ``sessions.idle_timeout_s`` is answered, then closed; a client that
disconnects ends its session at once, transcriptions included.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import json
import uuid
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

import trio
from loguru import logger
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...audio.network import PushedAudio
from ...errors import ConfigError
from ...sessions import (
    EndReason,
    SessionBridge,
    SessionLimitError,
    SessionManager,
    SessionOptions,
)
from ...settings import Settings
from ...transport.schemas import EventMessage, EventType, TranscriptMessage
from .. import client_json

__all__ = ["KIND", "REALTIME_PATH", "RealtimeEndpoint"]

REALTIME_PATH = "/v1/realtime"
KIND = "openai_realtime"

#: pcm16 as the Realtime API defines it: 16-bit little-endian mono at 24 kHz.
PCM16_RATE = 24_000
_BYTES_PER_SAMPLE = 2
#: The API refuses a commit of less than this.
_MIN_COMMIT_MS = 100
#: A manual-mode buffer is one utterance for Whisper, whose window is 30 s:
#: more would be cut off, so it is refused instead.
_MAX_BUFFER_S = 30
_MAX_BUFFER_BYTES = _MAX_BUFFER_S * PCM16_RATE * _BYTES_PER_SAMPLE
#: Server VAD audio goes to the session's source this much at a time (1 s).
_PUSH_BYTES = PCM16_RATE * _BYTES_PER_SAMPLE
#: Whisper reads at most 224 prompt tokens; a longer prompt is refused, not
#: kept and echoed in every session.updated.
_MAX_PROMPT_CHARS = 4096
#: Server VAD timings the session's VAD settings can take (settings.VadSettings).
_SILENCE_MS = (60, 5000)
_PREFIX_MS = (0, 2000)
#: After its session ends, what is queued for the client gets this long to go out.
_FLUSH_S = 2.0
#: One event to a client that reads nothing gets this long before it is given up.
_SEND_S = 5.0
_CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)

# Close codes (RFC 6455, section 7.4.1).
NORMAL, GOING_AWAY, POLICY, INTERNAL_ERROR, TRY_AGAIN = 1000, 1001, 1008, 1011, 1013


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class _ClientError(Exception):
    """A client event the server cannot honour: an ``error`` event, and read on."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str = "invalid_value",
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind


class _End(enum.Enum):
    """Why a connection stops reading its client."""

    DISCONNECTED = "disconnected"
    IDLE = "idle"
    SESSION_ENDED = "session_ended"


@dataclass(frozen=True, slots=True)
class _RealtimeOptions(SessionOptions):
    """Session options plus the client's server VAD timings, applied to its own settings."""

    hangover_ms: int | None = None
    pre_roll_ms: int | None = None
    #: Silero's speech probability threshold (webrtcvad has none to set)
    threshold: float | None = None

    def apply(self, settings: Settings) -> Settings:
        # Explicit base call: zero-argument super() breaks in a slots dataclass.
        settings = SessionOptions.apply(self, settings)
        vad: dict[str, float] = {}
        if self.hangover_ms is not None:
            vad["hangover_ms"] = self.hangover_ms
        if self.pre_roll_ms is not None:
            vad["pre_roll_ms"] = self.pre_roll_ms
        if self.threshold is not None:
            # Silero's own bounds: 0 would call silence speech, 1 nothing.
            vad["silero_threshold"] = min(max(self.threshold, 0.05), 0.95)
        if not vad:
            return settings
        return settings.model_copy(update={"vad": settings.vad.model_copy(update=vad)})


@dataclass(frozen=True, slots=True)
class _TurnDetection:
    silence_duration_ms: int
    prefix_padding_ms: int
    #: Silero's threshold when vad.engine is silero; accepted and echoed for
    #: webrtcvad, which has none
    threshold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
        }


@dataclass(frozen=True, slots=True)
class _Config:
    """A connection's effective session configuration."""

    model: str
    language: str | None
    prompt: str | None
    turn_detection: _TurnDetection | None

    def vad_key(self) -> tuple[object, ...]:
        """What the session's pipeline takes when it starts (and cannot change later)."""
        td = self.turn_detection
        if td is None:
            return (None,)
        return (td.silence_duration_ms, td.prefix_padding_ms, td.threshold, self.language)

    def options(self) -> _RealtimeOptions:
        td = self.turn_detection
        return _RealtimeOptions(
            wake_word=False,
            language=self.language,
            hangover_ms=td.silence_duration_ms if td else None,
            pre_roll_ms=td.prefix_padding_ms if td else None,
            threshold=td.threshold if td else None,
            client_turns=td is None,
        )

    def transcription(self) -> dict[str, Any]:
        return {"model": self.model, "language": self.language, "prompt": self.prompt}

    def ga_session(self, session_id: str) -> dict[str, Any]:
        """The GA ``RealtimeTranscriptionSessionCreateResponse`` shape."""
        td = self.turn_detection
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": PCM16_RATE},
                    "transcription": self.transcription(),
                    "noise_reduction": None,
                    "turn_detection": td.as_dict() if td else None,
                }
            },
            "include": None,
        }

    def beta_session(self, session_id: str) -> dict[str, Any]:
        """The beta ``TranscriptionSession`` shape."""
        td = self.turn_detection
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "input_audio_format": "pcm16",
            "input_audio_transcription": self.transcription(),
            "turn_detection": td.as_dict() if td else None,
            "input_audio_noise_reduction": None,
            "include": None,
            "modalities": ["text"],
            "client_secret": None,
        }


@dataclass(slots=True)
class _Item:
    """A committed item: an utterance the VAD ended, or a manual commit."""

    item_id: str
    start_ms: int = 0
    end_ms: int = 0
    #: a manual commit's length, exactly; None: the speech's, from the session
    seconds: float | None = None


def _integer(value: object, param: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise _ClientError(f"'{param}' must be an integer", param=param, code="invalid_type")
    if not low <= int(value) <= high:
        raise _ClientError(f"'{param}' must be between {low} and {high}", param=param)
    return int(value)


def _object(value: object, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _ClientError(f"'{param}' must be an object", param=param, code="invalid_type")
    return value


class _Connection:
    """One client: its session, its configuration and the events both ways."""

    def __init__(self, endpoint: RealtimeEndpoint, ws: WebSocket) -> None:
        self._endpoint = endpoint
        self._ws = ws
        self._settings = endpoint.settings
        self._idle_s = endpoint.settings.sessions.idle_timeout_s
        self._send_lock = trio.Lock()
        self._closed = False
        offered = list(ws.scope.get("subprotocols") or [])
        # Browsers name the protocol "realtime" (with the key and beta flag as
        # further subprotocols); a handshake that does not pick one fails there.
        self._subprotocol = "realtime" if "realtime" in offered else None
        self._beta = (
            "realtime=v1" in ws.headers.get("openai-beta", "")
            or "openai-beta.realtime-v1" in offered
        )
        self._buffer = bytearray()
        self._last_item: str | None = None
        self._speech: _Item | None = None
        #: committed items by the utterance they are, until answered
        self._items: dict[str, _Item] = {}
        #: manual commits whose utterance the session has not ended yet, oldest first
        self._turns: deque[_Item] = deque()
        self._forwarded = trio.Event()
        # Set in run() once the session is open.
        self._manager: SessionManager
        self._bridge: SessionBridge
        self._config: _Config

    # ------------------------------------------------------------ the connection

    async def run(self) -> None:
        await self._ws.accept(subprotocol=self._subprotocol)
        manager = self._endpoint.sessions()
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
        vad = self._settings.vad
        self._config = _Config(
            model=manager.engines.stt.name,
            language=None,
            prompt=None,
            turn_detection=_TurnDetection(vad.hangover_ms, vad.pre_roll_ms),
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

    async def _converse(self) -> _End:
        """Events both ways until the client leaves or goes silent, or the session ends."""
        end = _End.SESSION_ENDED
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._forward)
            created = "transcription_session.created" if self._beta else "session.created"
            await self._send(created, session=self._session_object(beta=self._beta))
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
        await self._error(_ClientError(message, param=param, code=code, kind=kind))
        await self._close(close_code, message)

    async def _receive(self) -> _End:
        """Client events until it leaves or goes silent (or, cancelled, the session ends)."""
        while True:
            message: MutableMapping[str, Any] | None = None
            with trio.move_on_after(self._idle_s):
                message = await self._ws.receive()
            if message is None:
                return _End.IDLE
            if message["type"] == "websocket.disconnect":
                self._closed = True
                return _End.DISCONNECTED
            text = message.get("text")
            try:
                if text is None:
                    raise _ClientError(
                        "binary messages are not taken: send JSON text events",
                        code="invalid_type",
                    )
                await self._dispatch(text)
            except _ClientError as exc:
                await self._error(exc, event_id=self._event_id(text))

    async def _wind_down(self, end: _End) -> None:
        """The session's last words: what was said is answered before the close."""
        # Commits in flight are the session's utterances: they are answered
        # before it ends (a session that never ran ends unrun).
        reason = EndReason.IDLE_TIMEOUT if end is _End.IDLE else EndReason.END_OF_STREAM
        await self._bridge.finish(reason)
        with trio.move_on_after(_FLUSH_S):
            await self._forwarded.wait()
        # Every committed item gets its answer: one the session could not give
        # (it failed) is a failure.
        unanswered = [*self._items.values(), *self._turns]
        self._items.clear()
        self._turns.clear()
        for item in unanswered:
            await self._failed(
                item.item_id,
                "transcription_failed",
                "the session ended before this item was transcribed",
            )

    async def _say_goodbye(self, end: _End) -> None:
        session = self._bridge.session
        if end is _End.IDLE:
            reason = f"idle for {self._idle_s:g} s"
            await self._error(_ClientError(f"no event for {self._idle_s:g} s", code="idle_timeout"))
            await self._close(NORMAL, reason)
        elif session.failed:
            await self._close(INTERNAL_ERROR, "session failed")
        elif session.end_reason is EndReason.SERVICE_STOPPING:
            await self._error(
                _ClientError(
                    "the service is stopping", code="service_stopping", kind="server_error"
                )
            )
            await self._close(GOING_AWAY, EndReason.SERVICE_STOPPING.value)
        else:
            await self._close(NORMAL, session.end_reason.value)

    # --------------------------------------------------------------- the session

    def _start_session(self) -> None:
        """Run the session, with the configuration as it is now (its VAD takes it once)."""
        if self._bridge.started:
            return
        try:
            self._bridge.start(self._config.options())
        except ConfigError as exc:  # checked at session.update: not expected
            raise _ClientError(exc.reason, kind="server_error", code="session_failed") from None

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
            raise _ClientError(f"the event cannot be read: {exc}", code="invalid_json") from None
        if not isinstance(event, dict):
            raise _ClientError("an event must be a JSON object", code="invalid_json")
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
            await self._send("input_audio_buffer.cleared")
        else:
            supported = ", ".join(f"'{name}'" for name in _CLIENT_EVENTS)
            raise _ClientError(
                f"Invalid value: {kind!r}. Supported values are: {supported}.", param="type"
            )

    async def _update(self, event: dict[str, Any], *, beta: bool) -> None:
        session = _object(event.get("session"), "session")
        config = self._updated(session)
        if self._bridge.started and config.vad_key() != self._config.vad_key():
            raise _ClientError(
                "turn_detection (and, with server_vad, the language) cannot change once "
                "audio has been appended: the session's VAD took them when it started",
                param="session.audio.input.turn_detection"
                if "audio" in session
                else "session.turn_detection",
                code="session_update_not_allowed",
            )
        self._config = config
        kind = "transcription_session.updated" if beta else "session.updated"
        await self._send(kind, session=self._session_object(beta=beta))

    def _updated(self, session: dict[str, Any]) -> _Config:
        """The configuration with ``session``'s fields applied; raises on a bad one."""
        config = self._config
        kind = session.get("type")
        if kind not in (None, "transcription"):
            raise _ClientError(
                f"RTAP serves transcription sessions only, not {kind!r}", param="session.type"
            )
        # The beta's flat fields.
        if "input_audio_format" in session:
            fmt = session["input_audio_format"]
            if fmt != "pcm16":
                raise _ClientError(
                    f"input_audio_format {fmt!r} is not taken: only 'pcm16' "
                    "(16-bit PCM, 24 kHz, mono)",
                    param="session.input_audio_format",
                )
        if "input_audio_transcription" in session:
            config = self._transcription(
                config, session["input_audio_transcription"], "session.input_audio_transcription"
            )
        if "turn_detection" in session:
            config = self._turn_detection(
                config, session["turn_detection"], "session.turn_detection"
            )
        # The GA nesting.
        audio = session.get("audio")
        if audio is not None:
            audio_input = _object(audio, "session.audio").get("input")
            if audio_input is not None:
                where = "session.audio.input"
                audio_input = _object(audio_input, where)
                if audio_input.get("format") is not None:
                    self._check_format(_object(audio_input["format"], f"{where}.format"))
                if "transcription" in audio_input:
                    config = self._transcription(
                        config, audio_input["transcription"], f"{where}.transcription"
                    )
                if "turn_detection" in audio_input:
                    config = self._turn_detection(
                        config, audio_input["turn_detection"], f"{where}.turn_detection"
                    )
        return config

    @staticmethod
    def _check_format(fmt: dict[str, Any]) -> None:
        param = "session.audio.input.format"
        kind = fmt.get("type")
        if kind not in (None, "audio/pcm"):
            raise _ClientError(
                f"format {kind!r} is not taken: only 'audio/pcm' at 24000 Hz",
                param=f"{param}.type",
            )
        rate = fmt.get("rate")
        if rate not in (None, PCM16_RATE):
            raise _ClientError(
                f"rate {rate!r} is not taken: audio/pcm is 24000 Hz", param=f"{param}.rate"
            )

    def _transcription(self, config: _Config, value: object, param: str) -> _Config:
        if value is None:  # a transcription session always transcribes: the defaults
            return replace(config, model=self._manager.engines.stt.name, language=None, prompt=None)
        fields = _object(value, param)
        model, language, prompt = config.model, config.language, config.prompt
        if "model" in fields:
            # Any name: the service has one model (as on /v1/audio/transcriptions).
            model = self._string(fields["model"], f"{param}.model") or model
        if "language" in fields:
            language = self._string(fields["language"], f"{param}.language") or None
            problem = self._manager.language_problem(language)
            if problem is not None:
                raise _ClientError(problem, param=f"{param}.language")
        if "prompt" in fields:  # accepted; whisper.cpp here decodes without one
            prompt = self._string(fields["prompt"], f"{param}.prompt") or None
            if prompt is not None and len(prompt) > _MAX_PROMPT_CHARS:
                raise _ClientError(
                    f"'{param}.prompt' is at most {_MAX_PROMPT_CHARS} characters",
                    param=f"{param}.prompt",
                )
        return replace(config, model=model, language=language, prompt=prompt)

    @staticmethod
    def _string(value: object, param: str) -> str | None:
        if value is not None and not isinstance(value, str):
            raise _ClientError(f"'{param}' must be a string", param=param, code="invalid_type")
        return value

    def _turn_detection(self, config: _Config, value: object, param: str) -> _Config:
        if value is None:
            return replace(config, turn_detection=None)
        fields = _object(value, param)
        kind = fields.get("type", "server_vad")
        # semantic_vad is served by the same VAD: its eagerness is not modelled.
        if kind not in ("server_vad", "semantic_vad"):
            raise _ClientError(
                f"turn_detection type {kind!r} is not taken: 'server_vad' or null",
                param=f"{param}.type",
            )
        vad = self._settings.vad
        silence, prefix, threshold = vad.hangover_ms, vad.pre_roll_ms, None
        if fields.get("silence_duration_ms") is not None:
            name = f"{param}.silence_duration_ms"
            silence = _integer(fields["silence_duration_ms"], name, _SILENCE_MS)
        if fields.get("prefix_padding_ms") is not None:
            name = f"{param}.prefix_padding_ms"
            prefix = _integer(fields["prefix_padding_ms"], name, _PREFIX_MS)
        if fields.get("threshold") is not None:
            value = fields["threshold"]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _ClientError(
                    f"'{param}.threshold' must be a number",
                    param=f"{param}.threshold",
                    code="invalid_type",
                )
            if not 0.0 <= value <= 1.0:
                raise _ClientError(
                    f"'{param}.threshold' must be between 0 and 1", param=f"{param}.threshold"
                )
            threshold = float(value)
        return replace(config, turn_detection=_TurnDetection(silence, prefix, threshold))

    async def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise _ClientError(
                "'audio' must be a base64 string", param="audio", code="invalid_type"
            )
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise _ClientError("'audio' is not valid base64", param="audio") from None
        if len(pcm) % _BYTES_PER_SAMPLE:
            raise _ClientError(
                f"{len(pcm)} bytes of audio are not whole samples of pcm16 (2 bytes each)",
                param="audio",
            )
        if not pcm:
            return
        manual = self._config.turn_detection is None
        if manual and len(self._buffer) + len(pcm) > _MAX_BUFFER_BYTES:
            raise _ClientError(
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
            raise _ClientError(
                "with server_vad turn detection RTAP's VAD commits each utterance itself; "
                "set turn_detection to null to commit by hand",
                code="unsupported_with_server_vad",
            )
        held_ms = len(self._buffer) / _BYTES_PER_SAMPLE / PCM16_RATE * 1000
        if held_ms < _MIN_COMMIT_MS:
            raise _ClientError(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{_MIN_COMMIT_MS}ms of audio, but buffer only has {held_ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        item = _Item(_new_id("item"), seconds=held_ms / 1000)
        pcm = bytes(self._buffer)
        self._buffer.clear()
        self._turns.append(item)
        await self._committed(item.item_id)
        # One utterance of the session, ended by the client: through the same
        # stages as the VAD's (STT, language, ZeroMQ, the console, catch-up).
        await self._push(pcm)
        await self._bridge.end_turn(self._config.language)

    # ------------------------------------------------------- the session's events

    async def _forward(self) -> None:
        """The session's events and transcripts as Realtime events, as they happen."""
        async for item in self._bridge.messages:
            message = item.message
            if isinstance(message, TranscriptMessage):
                answered = self._answered(message.utterance_id)
                language = message.stt_language or message.language
                seconds = answered.seconds
                if seconds is None:
                    seconds = max(0.0, message.audio_end_s - message.audio_start_s)
                await self._completed(answered.item_id, message.text, seconds, language)
            elif isinstance(message, EventMessage):
                await self._forward_event(message)
        self._forwarded.set()

    def _answered(self, utterance_id: str | None) -> _Item:
        """The item an utterance's answer is for (no longer waiting for one)."""
        found = self._items.pop(utterance_id or "", None)
        return found or _Item(_new_id("item"))

    async def _forward_event(self, message: EventMessage) -> None:
        offset_ms = round(1000 * float(message.data.get("offset_s", 0.0)))
        kind = message.type
        manual = self._config.turn_detection is None  # fixed once the session runs
        if kind is EventType.SPEECH_END and manual:
            # The client's commit ended this utterance: it was committed then.
            turn = self._turns.popleft() if self._turns else _Item(_new_id("item"))
            self._items[message.utterance_id or ""] = turn
        elif kind is EventType.SPEECH_START and not manual:
            td = self._config.turn_detection
            # The API's start includes the prefix padding, as RTAP's utterance does.
            start_ms = max(0, offset_ms - (td.prefix_padding_ms if td else 0))
            self._speech = _Item(_new_id("item"), start_ms)
            await self._send(
                "input_audio_buffer.speech_started",
                audio_start_ms=start_ms,
                item_id=self._speech.item_id,
            )
        elif kind is EventType.TRANSCRIPT_PARTIAL:
            # Words as they become stable (never retracted): the API's deltas add up.
            newly = str(message.data.get("newly_stable", ""))
            if newly and self._speech is not None:
                await self._send(
                    "conversation.item.input_audio_transcription.delta",
                    item_id=self._speech.item_id,
                    content_index=0,
                    delta=newly + " ",
                )
        elif kind is EventType.SPEECH_END:
            speech, self._speech = self._speech or _Item(_new_id("item"), offset_ms), None
            speech.end_ms = offset_ms
            self._items[message.utterance_id or ""] = speech
            await self._send(
                "input_audio_buffer.speech_stopped", audio_end_ms=offset_ms, item_id=speech.item_id
            )
            await self._committed(speech.item_id)
        elif kind is EventType.UTTERANCE_DISCARDED:
            # Too short, no words, no speech: committed, so answered, with nothing.
            answered = self._answered(message.utterance_id)
            seconds = answered.seconds
            if seconds is None:
                seconds = max(0, answered.end_ms - answered.start_ms) / 1000
            await self._completed(answered.item_id, "", seconds, None)
        elif kind is EventType.UTTERANCE_DROPPED:
            await self._failed(
                self._answered(message.utterance_id).item_id,
                "queue_full",
                "transcription fell behind the speech: this utterance was dropped",
            )
        elif kind is EventType.STT_TIMEOUT:
            budget = message.data.get("budget_ms")
            await self._failed(
                self._answered(message.utterance_id).item_id,
                "stt_timeout",
                f"the transcription took over {budget} ms and was aborted",
            )
        elif kind is EventType.SESSION_FAILED:
            await self._error(
                _ClientError("the session failed", code="session_failed", kind="server_error")
            )

    # -------------------------------------------------------------- server events

    def _session_object(self, *, beta: bool) -> dict[str, Any]:
        session_id = f"sess_{self._bridge.session.id}"
        if beta:
            return self._config.beta_session(session_id)
        return self._config.ga_session(session_id)

    async def _committed(self, item_id: str) -> None:
        previous, self._last_item = self._last_item, item_id
        await self._send("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)

    async def _completed(
        self, item_id: str, text: str, seconds: float, language: str | None
    ) -> None:
        fields: dict[str, Any] = {
            "item_id": item_id,
            "content_index": 0,
            "transcript": text,
            "usage": {"type": "duration", "seconds": round(seconds, 3)},
        }
        if language:
            fields["languages"] = [{"code": language}]
        await self._send("conversation.item.input_audio_transcription.completed", **fields)

    async def _failed(self, item_id: str, code: str, message: str) -> None:
        await self._send(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=0,
            error={"type": "server_error", "code": code, "message": message, "param": None},
        )

    async def _error(self, error: _ClientError, *, event_id: str | None = None) -> None:
        body = {
            "type": error.kind,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": event_id,
        }
        await self._send("error", error=body)

    @staticmethod
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

    async def _send(self, kind: str, **fields: Any) -> None:
        if self._closed:
            return
        text = json.dumps({"type": kind, "event_id": _new_id("event"), **fields})
        async with self._send_lock:
            # A send cancelled half-way would leave half a frame on the socket
            # (the receive loop is cancelled when the session ends, say): a
            # send finishes, unless the client takes nothing for _SEND_S.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _SEND_S) as scope:
                try:
                    await self._ws.send_text(text)
                except (WebSocketDisconnect, RuntimeError):
                    # Gone: the receive loop sees the disconnect and ends the connection.
                    self._closed = True
            if scope.cancelled_caught:
                self._closed = True  # the stream is unusable after half a frame

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        raw = reason.encode()
        if len(raw) > 123:  # a close frame's reason must fit in 123 bytes
            reason = raw[:120].decode(errors="ignore") + "..."
        with trio.move_on_after(1.0):
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # gone already
                await self._ws.close(code=code, reason=reason)


class RealtimeEndpoint:
    """Serves ``/v1/realtime`` connections; ``sessions`` is None while not serving."""

    def __init__(self, settings: Settings, sessions: Callable[[], SessionManager | None]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.log = logger.bind(component=KIND)

    async def serve(self, websocket: WebSocket) -> None:
        """The Starlette WebSocket endpoint: one connection, start to end."""
        try:
            await _Connection(self, websocket).run()
        except Exception as exc:  # one connection's failure is that connection's alone
            manager = self.sessions()
            if manager is not None:
                manager.metrics.errors.labels(KIND, type(exc).__name__).inc()
            self.log.opt(exception=exc).warning("connection failed: {}", exc)
            with trio.move_on_after(1.0):
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # gone already
                    await websocket.close(code=INTERNAL_ERROR, reason="internal error")
