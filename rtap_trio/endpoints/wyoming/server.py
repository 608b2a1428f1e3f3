"""The Wyoming server: its TCP listener, each connection, each audio stream a session.

Wyoming (Home Assistant's voice services) over TCP; the framing of its events
is :mod:`.codec`. RTAP serves:

* ``describe`` -> ``info``: the ASR model with its languages, and the wake words;
* speech to text: ``transcribe {name?, language?, transcript_names?,
  transcript_terms?}``, ``audio-start``,
  ``audio-chunk``..., ``audio-stop`` -> ``transcript {text, language}``, with
  ``voice-started`` / ``voice-stopped {timestamp}`` as the session's VAD hears
  speech start and end; ``transcript_names`` and ``transcript_terms`` (the
  names and terms Home Assistant asks the ASR to favour) become the stream's
  vocabulary prompt (:func:`vocabulary_prompt`), refused with an ``error``
  (``prompt_too_long``) over the engine's 224 tokens;
* wake word: ``detect {names?}``, then audio -> ``detection {name, timestamp}``
  for each wake word, or ``not-detected`` after ``audio-stop``.

Each stream from ``audio-start`` to ``audio-stop`` is one session of kind
``wyoming`` over the shared engines. Audio without a ``transcribe`` or
``detect`` first is transcribed. A malformed header line gets an ``error``
event and the connection reads on from the next line; a header, data or
payload over its limit gets an ``error`` event and the connection is closed
(the stream cannot be trusted after it). Either way the server keeps serving.

Bounds, so that no client holds more than its share: at most
``wyoming.max_connections`` connections (decided before the first await, so a
flood cannot outrun it; beyond it a connection gets an ``error`` and is
closed); a connection silent for ``sessions.idle_timeout_s`` is closed, and so
is one that reads nothing of what is sent to it for ``wyoming.send_timeout_s``.
A stream's format, language and wake words are checked before its session
takes a slot (the session bridge, :meth:`SessionManager.connect_bridge`, does
it), and every way a stream fails gives the slot back. Its audio is never dropped:
Wyoming clients send recordings faster than real time, so the session's
utterances wait for transcription and the client waits on TCP (back-pressure).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from loguru import logger

from ...audio.network import AudioFormatError, PushedAudio
from ...errors import ConfigError, ModelError, PortInUseError
from ...events import Event, SessionFailed, SpeechEnd, SpeechStart, TranscriptPartial, WakeWord
from ...metrics import Metrics
from ...session_bridge import SessionBridge
from ...session_options import SessionOptions
from ...sessions import (
    EndReason,
    SessionLimitError,
    SessionManager,
)
from ...settings import Settings
from ...transport.schemas import TranscriptMessage
from ...wakeword import builtin_keywords
from .codec import EventReader, ProtocolError, WyomingEvent, write_event

__all__ = ["WyomingServer", "vocabulary_prompt"]

_WHISPER_ATTRIBUTION = {"name": "OpenAI", "url": "https://github.com/openai/whisper"}
_PORCUPINE_ATTRIBUTION = {"name": "Picovoice", "url": "https://github.com/Picovoice/porcupine"}
#: at most one "refusing connections" line this often, however many are refused
_REFUSAL_LOG_INTERVAL_S = 60.0


def _ms(offset_s: float) -> int:
    """An offset in the session's stream as Wyoming's timestamps give it: milliseconds."""
    return round(1000 * offset_s)


class _Stream:
    """One audio stream of a connection: a session and what it has said so far."""

    def __init__(self, bridge: SessionBridge, mode: str) -> None:
        self.bridge = bridge
        self.mode = mode
        self.texts: list[str] = []
        self.languages: list[str] = []
        self.detected = False
        #: transcript-start was sent: partials are being streamed
        self.streaming = False
        self.done = trio.Event()


class WyomingServer:
    def __init__(
        self,
        settings: Settings,
        sessions: Callable[[], SessionManager | None],
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._wyoming = settings.wyoming
        self._sessions = sessions
        self._metrics = metrics
        self.port = settings.wyoming.port
        #: connections being served (refused ones not counted)
        self.connections = 0
        #: connections refused at the cap since the last log line about it
        self._refused_unlogged = 0
        self._refusal_logged_at = float("-inf")

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        host = self._settings.output.bind_address
        try:
            listeners = await trio.open_tcp_listeners(self.port, host=host)
        except OSError as exc:
            raise PortInUseError("wyoming", host, self.port, exc.strerror or str(exc)) from None
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        # The cap is checked before the first await: however fast connections
        # arrive, no more than max_connections are ever served at once.
        if self.connections >= self._wyoming.max_connections:
            await self._refuse(stream)
            return
        self.connections += 1
        # One connection's failure is that connection's: never the listener's.
        try:
            with trio.CancelScope() as scope:  # cancelled when the client stops reading
                await _Connection(self, stream, scope).serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as exc:
            self._metrics.errors.labels("wyoming", type(exc).__name__).inc()
            logger.bind(component="wyoming").opt(exception=exc).warning(
                "connection failed: {}", exc
            )
        finally:
            # Counted down before the close: a client that sees the end may connect again.
            self.connections -= 1
            with trio.move_on_after(1):
                await stream.aclose()

    async def _refuse(self, stream: trio.SocketStream) -> None:
        """Over the cap: told in one small event (a fresh socket takes it at
        once; a second at most), then closed."""
        limit = self._wyoming.max_connections
        self._metrics.errors.labels("wyoming", "too_many_connections").inc()
        self._refused_unlogged += 1
        now = trio.current_time()
        if now - self._refusal_logged_at >= _REFUSAL_LOG_INTERVAL_S:
            logger.bind(component="wyoming").warning(
                "{} connections (wyoming.max_connections): refused {} more",
                limit,
                self._refused_unlogged,
            )
            self._refusal_logged_at, self._refused_unlogged = now, 0
        try:
            with trio.move_on_after(1):
                text = f"{limit} connections are open already"
                await write_event(
                    stream, WyomingEvent("error", {"text": text, "code": "too_many_connections"})
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.move_on_after(1):
                await stream.aclose()

    def info(self, manager: SessionManager | None) -> dict[str, Any]:
        from ...version import __version__

        asr_models = []
        if manager is not None:
            stt = manager.engines.stt
            asr_models.append(
                {
                    "name": stt.name,
                    "languages": list(stt.languages),
                    "attribution": _WHISPER_ATTRIBUTION,
                    "installed": True,
                    "description": f"Whisper {stt.name} (whisper.cpp) in RTAP {__version__}",
                    "version": __version__,
                }
            )
        wake_models = [
            {
                "name": keyword,
                "languages": ["en"],
                "attribution": _PORCUPINE_ATTRIBUTION,
                "installed": True,
                "description": f"Porcupine 1.9.5 built-in keyword '{keyword}'",
                "version": "1.9.5",
            }
            for keyword in builtin_keywords()
        ]
        return {
            "asr": [
                {
                    "name": "rtap",
                    "attribution": {"name": "RTAP", "url": "https://github.com/"},
                    "installed": True,
                    "description": "RTAP speech to text: VAD, whisper.cpp, language and sentiment",
                    "version": __version__,
                    "models": asr_models,
                    # Partial transcripts, where the profile makes them (pc2, main_pc).
                    "supports_transcript_streaming": self._settings.stt.partials,
                    # Home Assistant decides where a command ends: RTAP answers at audio-stop.
                    "requires_external_vad": True,
                }
            ],
            "wake": [
                {
                    "name": "rtap-porcupine",
                    "attribution": _PORCUPINE_ATTRIBUTION,
                    "installed": True,
                    "description": "Porcupine 1.9.5 wake words in RTAP",
                    "version": __version__,
                    "models": wake_models,
                }
            ],
        }


class _Connection:
    def __init__(
        self, server: WyomingServer, stream: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        self._server = server
        self._stream = stream
        self._scope = scope
        self._reader = EventReader(stream, server._wyoming)
        self._write_lock = trio.Lock()
        self._settings = server._settings
        self._mode = "asr"
        self._language: str | None = None
        self._prompt: str | None = None
        self._names: tuple[str, ...] | None = None
        self._current: _Stream | None = None
        #: the stream's start was refused (told once): its audio is dropped until audio-stop
        self._refused = False

    async def send(self, type: str, **data: Any) -> None:
        """One event; a client that has not taken it within wyoming.send_timeout_s
        (it reads nothing: every buffer between us is full) is disconnected."""
        with trio.move_on_after(self._server._wyoming.send_timeout_s) as waited:
            async with self._write_lock:
                await write_event(self._stream, WyomingEvent(type, data))
        if waited.cancelled_caught:
            self._server._metrics.errors.labels("wyoming", "send_timeout").inc()
            logger.bind(component="wyoming").info(
                "a client read nothing for {} s: disconnected", self._server._wyoming.send_timeout_s
            )
            self._scope.cancel()  # the whole connection: its session, its reader
            await trio.lowlevel.checkpoint()  # raises Cancelled here

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            try:
                await self._read_events(nursery)
            finally:
                # A stream still open (the client left mid-stream) ends at once:
                # its session ends as ``disconnected`` and gives its slot back.
                nursery.cancel_scope.cancel()

    async def _read_events(self, nursery: trio.Nursery) -> None:
        idle_s = self._settings.sessions.idle_timeout_s
        while True:
            event = None
            with trio.move_on_after(idle_s):
                try:
                    event = await self._reader.read()
                except ProtocolError as exc:
                    self._server._metrics.errors.labels("wyoming", exc.code).inc()
                    await self.send("error", text=str(exc), code=exc.code)
                    if exc.fatal:
                        return
                    continue
                if event is None:
                    return
            if event is None:  # idle: what was said is answered, then goodbye
                if self._current is not None:
                    await self._end_stream()
                return
            try:
                await self._dispatch(event, nursery)
            except ProtocolError as exc:
                self._server._metrics.errors.labels("wyoming", exc.code).inc()
                await self.send("error", text=str(exc), code=exc.code)
                if exc.fatal:
                    return

    async def _dispatch(self, event: WyomingEvent, nursery: trio.Nursery) -> None:
        kind, data = event.type, event.data
        if kind == "describe":
            await self.send("info", **self._server.info(self._server._sessions()))
        elif kind == "ping":
            await self.send("pong", text=data.get("text"))
        elif kind == "transcribe":
            self._mode, self._names = "asr", None
            language = data.get("language")
            self._language = language if isinstance(language, str) and language else None
            self._prompt = vocabulary_prompt(
                data.get("transcript_names"), data.get("transcript_terms")
            )
        elif kind == "detect":
            names = data.get("names")
            self._mode, self._language, self._prompt = "wake", None, None
            self._names = (
                tuple(str(n) for n in names) if isinstance(names, list) and names else None
            )
        elif kind == "audio-start":
            if self._current is not None:
                await self._end_stream()
            await self._start_stream(data, nursery)
        elif kind == "audio-chunk":
            if self._current is None:
                if self._refused:  # its start was refused, and the client told so
                    return
                await self._start_stream(data, nursery)  # audio without a start starts one
            assert self._current is not None
            try:
                await self._current.bridge.push(event.payload)
            except AudioFormatError as exc:
                raise ProtocolError(str(exc), "bad_audio", fatal=True) from None
        elif kind == "audio-stop":
            if self._current is not None:
                await self._end_stream()
            elif self._refused:  # answered at its start
                self._refused = False
            else:
                raise ProtocolError(
                    "audio-stop without audio-start: there is no stream to end",
                    "no_audio_start",
                    fatal=False,
                )
        else:
            raise ProtocolError(f"unsupported event type {kind!r}", "unsupported", fatal=False)

    async def _start_stream(self, data: dict[str, Any], nursery: trio.Nursery) -> None:
        try:
            self._refused = False
            await self._open_stream(data, nursery)
        except ProtocolError as exc:
            # Refused but the connection reads on: the stream's chunks are
            # dropped quietly (one error, not one per chunk) until its audio-stop.
            self._refused = not exc.fatal
            raise

    async def _open_stream(self, data: dict[str, Any], nursery: trio.Nursery) -> None:
        """Everything the client chose is checked before the session takes a slot
        (by the bridge); the connection's nursery runs the session, so however
        the connection ends, the slot is given back."""
        manager = self._server._sessions()
        if manager is None:
            raise ProtocolError("the service is starting", "starting", fatal=False)
        try:
            rate, width, channels = int(data["rate"]), int(data["width"]), int(data["channels"])
        except (KeyError, TypeError, ValueError, OverflowError):  # Overflow: Infinity
            raise ProtocolError(
                "audio needs integer rate, width and channels", "bad_audio", fatal=True
            ) from None
        if width != 2:
            raise ProtocolError("only 16-bit PCM (width 2) is taken", "bad_audio", fatal=True)
        wake = self._mode == "wake"
        options = SessionOptions(
            wake_word=wake,
            keywords=self._names if wake else None,
            language=None if wake else self._language,
            transcribe=not wake,
            prompt=None if wake else self._prompt,
        )
        # A recording sent at once: its utterances wait rather than go.
        audio = PushedAudio(rate, "pcm_s16le", channels, interactive=False)
        try:
            bridge = await manager.connect_bridge(nursery, "wyoming", options, audio=audio)
        except AudioFormatError as exc:
            raise ProtocolError(str(exc), "bad_audio", fatal=True) from None
        except SessionLimitError as exc:
            raise ProtocolError(str(exc), "busy", fatal=False) from None
        except ConfigError as exc:
            # whisper would raise on a language mid-stream; `describe` lists what it knows.
            code = {
                "language": "unsupported_language",
                "keywords": "unknown_wake_word",
                "prompt": "prompt_too_long",
            }
            raise ProtocolError(
                exc.reason, code.get(exc.key_path, "bad_request"), fatal=False
            ) from None
        except ModelError as exc:
            raise ProtocolError(str(exc), "bad_request", fatal=False) from None
        current = _Stream(bridge, self._mode)
        nursery.start_soon(self._forward, current)
        self._current = current

    async def _forward(self, current: _Stream) -> None:
        """The session's events as Wyoming events, as they happen."""
        async for item in current.bridge.messages:
            message = item.message
            if isinstance(message, TranscriptMessage):
                current.texts.append(message.text)
                current.languages.append(message.stt_language or message.language)
            elif item.event is not None:
                await self._forward_event(current, item.event)
        current.done.set()

    async def _forward_event(self, current: _Stream, event: Event) -> None:
        asr = current.mode == "asr"
        match event:
            case WakeWord(keyword=keyword, offset_s=offset_s) if current.mode == "wake":
                current.detected = True
                await self.send("detection", name=keyword, timestamp=_ms(offset_s))
            case SpeechStart(offset_s=offset_s) if asr:
                await self.send("voice-started", timestamp=_ms(offset_s))
            case SpeechEnd(offset_s=offset_s) if asr:
                await self.send("voice-stopped", timestamp=_ms(offset_s))
            case TranscriptPartial(newly_stable=newly) if asr and newly:
                # Wyoming 1.7 streaming: words as they become stable, after a start.
                if not current.streaming:
                    current.streaming = True
                    await self.send("transcript-start", **self._language_data())
                await self.send("transcript-chunk", text=newly + " ")
            case SessionFailed():
                await self.send("error", text="the session failed", code="session_failed")

    def _language_data(self) -> dict[str, Any]:
        return {"language": self._language} if self._language else {}

    async def _end_stream(self) -> None:
        """The stream's end: what was said goes through, then the answer."""
        current, self._current = self._current, None
        assert current is not None
        await current.bridge.finish(EndReason.STOP)
        await current.done.wait()
        if current.mode == "asr":
            text = " ".join(t for t in current.texts if t).strip()
            language = current.languages[0] if current.languages else (self._language or None)
            data: dict[str, Any] = {"text": text}
            if language:
                data["language"] = language
            await self.send("transcript", **data)
            if current.streaming:  # the backwards-compatible transcript, then the end
                await self.send("transcript-stop")
        elif not current.detected:
            await self.send("not-detected")


def vocabulary_prompt(names: object, terms: object) -> str | None:
    """A prompt from a ``transcribe`` event's ``transcript_names`` and
    ``transcript_terms`` (wyoming 1.8: what the ASR should favour, names first);
    None when it has neither. Whisper takes them as text it has just "heard":
    a sentence that lists them, which on our generated rare names did better
    than a bare list (docs/performance.md)."""
    listed = [
        str(item).strip()
        for group in (names, terms)
        if isinstance(group, list)
        for item in group
        if str(item).strip()
    ]
    return f"Names: {', '.join(listed)}." if listed else None
