"""OpenAI-compatible transcription over HTTP: ``POST /v1/audio/transcriptions``, ``GET /v1/models``.

What the ``openai`` SDK (and pipecat, LiveKit agents, scripts) call with their
``base_url`` pointed here. An upload (anything libsndfile reads: WAV, FLAC,
OGG, MP3) goes through a session like ``replay``: VAD segmentation,
whisper.cpp, language; nothing is dropped, and the utterances become the
response's segments. Errors come in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with its status codes.

Every step has its budget before it costs anything: the body is counted as it
arrives (chunked or not) and refused with 413 the moment it is over
``openai.max_file_bytes``; it is parsed in memory, never spooled to disk; the
file's header is read before any of it is decoded, and what is over
``openai.max_audio_s``, ``openai.max_channels`` or 192 kHz is refused with 413;
the session's slot is taken before decoding, which then streams a block at a
time into the pipeline; and a client that disconnects while its upload is
transcribed ends its session (``session_ended`` with reason ``disconnected``).

Accepted and ignored, since the service has one model and decodes greedily:
``model`` (any name; ``GET /v1/models`` lists the real one and ``whisper-1``),
``prompt`` and ``temperature`` (checked, not used).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from ..audio.file import AudioDecoder, AudioLimitError, AudioLimits, DecodingSource
from ..errors import AudioSourceError, ConfigError
from ..http_server import READ_TIMEOUT_S
from ..sessions import SessionBridge, SessionLimitError, SessionManager, SessionOptions
from ..settings import Settings
from ..stt.hallucination import compression_ratio as _compression_ratio
from ..transport.schemas import Stream, TranscriptMessage
from .openai_realtime import REALTIME_PATH, RealtimeEndpoint

__all__ = ["openai_routes"]

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
#: The name OpenAI's own clients send most; accepted like the real model's.
ALIAS = "whisper-1"
#: Sample rates past this are refused from the header: decoding costs
#: rate x channels x duration, and 192 kHz is the highest a recording is made at.
MAX_SAMPLE_RATE = 192_000
#: Besides the file, the form's fields and the parts' headers: at most 16
#: fields of at most 64 KiB; the body may be over the file's limit by this much.
_MAX_FIELDS = 16
_MAX_FIELD_BYTES = 65_536
_FORM_OVERHEAD = 65_536
#: hypercorn stops reading a connection that has sent nothing for its read
#: timeout and tells the app ``http.disconnect`` though the client still waits
#: (the response still reaches it). A disconnect this close to that moment is
#: taken for the timeout, not the client going (a reset then is missed).
_TIMEOUT_MARGIN_S = 2.0

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks


class _ApiError(Exception):
    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code

    def response(self) -> JSONResponse:
        kind = {
            401: "authentication_error",
            404: "not_found_error",
            413: "invalid_request_error",
            429: "rate_limit_error",
            503: "server_error",
        }.get(self.status, "invalid_request_error")
        body = {"message": str(self), "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status)


class _NoAnswer(Response):
    """For a client that has gone: nothing is sent (the connection is closed)."""

    def __init__(self) -> None:
        super().__init__(status_code=499)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


class _Form:
    """A multipart/form-data body, parsed as it arrives, in memory, within budgets.

    Starlette's parser spools a file part to a temporary file (no audio may
    reach the disk) and counts nothing until the body has all come. Here the
    file goes into memory and is refused (413) the moment it is over
    ``max_file_bytes``; the fields are few and small, each part's headers
    bounded by python-multipart. One file part, named ``file``.
    """

    def __init__(self, boundary: bytes, max_file_bytes: int) -> None:
        self.fields: dict[str, str] = {}
        self.file: io.BytesIO | None = None
        self.filename = "upload"
        self._max_file_bytes = max_file_bytes
        self._file_complete = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._field: bytearray | None = None  # the field part being read
        self._in_file = False
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise _ApiError(400, f"the request is not a valid form: {exc}") from None

    def finish(self) -> io.BytesIO:
        """The file, from its start; 400 when the body held no whole ``file`` part."""
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise _ApiError(400, f"the request is not a valid form: {exc}") from None
        if self.file is None or not self._file_complete:
            raise _ApiError(400, "a 'file' part is required", param="file")
        self.file.seek(0)
        return self.file

    def _part_begin(self) -> None:
        self._disposition = b""
        self._field = None
        self._in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise _ApiError(400, "the request is not a valid form: a part has no name")
        self._name = _text(options[b"name"])
        if b"filename" not in options:
            if len(self.fields) >= _MAX_FIELDS:
                raise _ApiError(400, f"the form has more than {_MAX_FIELDS} fields")
            self._field = bytearray()
        elif self._name != "file" or self.file is not None:
            raise _ApiError(400, "one file part, named 'file', is expected", param="file")
        else:
            self.file = io.BytesIO()
            self.filename = _text(options[b"filename"]) or "upload"
            self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            assert self.file is not None
            if self.file.tell() + end - start > self._max_file_bytes:
                raise _ApiError(
                    413, f"the file is over {self._max_file_bytes} bytes", code="file_too_large"
                )
            self.file.write(memoryview(data)[start:end])
        elif self._field is not None:
            if len(self._field) + end - start > _MAX_FIELD_BYTES:
                raise _ApiError(400, f"the field {self._name!r} is over {_MAX_FIELD_BYTES} bytes")
            self._field += data[start:end]

    def _part_end(self) -> None:
        if self._in_file:
            self._file_complete = True
        elif self._field is not None:
            self.fields[self._name] = _text(bytes(self._field))


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass(frozen=True, slots=True)
class _Segment:
    start: float
    end: float
    text: str
    no_speech_probability: float | None


def _timestamp(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _srt(segments: list[_Segment]) -> str:
    blocks = [
        f"{n}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for n, s in enumerate(segments, 1)
    ]
    return "\n".join(blocks)


def _vtt(segments: list[_Segment]) -> str:
    blocks = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


class _Transcriptions:
    def __init__(self, settings: Settings, sessions: Callable[[], SessionManager | None]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._max_bytes = settings.openai.max_file_bytes
        #: uploads between their first byte and their response
        self._uploads = 0

    def _manager(self) -> SessionManager:
        manager = self._sessions()
        if manager is None:
            raise _ApiError(503, "the service is starting or stopping", code="unavailable")
        return manager

    async def models(self, request: Request) -> Response:
        manager = self._manager()
        ids = [manager.engines.stt.name, ALIAS]
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "rtap"} for i in ids]
        if "model" in request.path_params:
            wanted = request.path_params["model"]
            if wanted not in ids:
                raise _ApiError(404, f"The model '{wanted}' does not exist", code="model_not_found")
            return JSONResponse(data[ids.index(wanted)])
        return JSONResponse({"object": "list", "data": data})

    async def _form(self, request: Request) -> _Form:
        """The form, read as it streams in: 413 as soon as the body is over its budget.

        Raises ClientDisconnect when the client goes while sending.
        """
        headers = request.headers
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if length is None and not chunked:
            raise _ApiError(411, "a Content-Length header is required")
        budget = self._max_bytes + _FORM_OVERHEAD
        too_big = _ApiError(
            413, f"the upload is over {self._max_bytes} bytes", code="file_too_large"
        )
        if length is not None and (not length.isdigit() or int(length) > budget):
            raise too_big
        content_type = headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise _ApiError(400, "the request must be multipart/form-data")
        boundary = parse_options_header(content_type)[1].get(b"boundary")
        if not boundary:
            raise _ApiError(400, "the request is not a valid form: it has no boundary")
        form = _Form(boundary, self._max_bytes)
        received = 0
        # Counted as it arrives, whatever Content-Length said: with chunked
        # transfer encoding the header is not what limits the body.
        async for chunk in request.stream():
            received += len(chunk)
            if received > budget:
                raise too_big
            form.feed(chunk)
        return form

    def _options(self, fields: dict[str, str], manager: SessionManager) -> tuple[str, str | None]:
        if not fields.get("model"):
            raise _ApiError(400, "you must provide a model parameter", param="model")
        response_format = fields.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise _ApiError(
                400,
                f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
                param="response_format",
            )
        if "temperature" in fields:
            try:
                temperature = float(fields["temperature"])
            except ValueError:
                temperature = -1.0
            if not 0.0 <= temperature <= 1.0:
                raise _ApiError(400, "temperature must be between 0 and 1", param="temperature")
        language = fields.get("language") or None
        problem = manager.language_problem(language)
        if problem is not None:
            raise _ApiError(400, problem, param="language")
        return response_format, language

    async def transcribe(self, request: Request) -> Response:
        manager = self._manager()
        # Counted before the first await, so no number of connections outruns it:
        # the bodies in memory are at most max_concurrent_uploads x max_file_bytes.
        limit = self._settings.openai.max_concurrent_uploads
        if self._uploads >= limit:
            raise _ApiError(429, f"{limit} uploads are being transcribed already", code="busy")
        self._uploads += 1
        try:
            return await self._transcribe(request, manager)
        finally:
            self._uploads -= 1

    async def _transcribe(self, request: Request, manager: SessionManager) -> Response:
        try:
            form = await self._form(request)
        except ClientDisconnect:
            return _NoAnswer()
        file = form.finish()
        received_at = trio.current_time()
        response_format, language = self._options(form.fields, manager)
        audio, limits = self._settings.audio, self._settings.openai
        # The header first, before a slot is taken: what is over the limits
        # costs nothing more. Opening an MP3 may scan it: off the event loop.
        open_decoder = functools.partial(
            AudioDecoder,
            file,
            audio.sample_rate,
            label=form.filename,
            limits=AudioLimits(limits.max_audio_s, limits.max_channels, MAX_SAMPLE_RATE),
        )
        try:
            decoder = await trio.to_thread.run_sync(open_decoder)
        except AudioSourceError as exc:
            raise _file_error(exc) from None
        # The slot is taken before decoding, which then streams into the
        # session a block at a time.
        source = DecodingSource(
            decoder,
            name=f"openai:{form.filename}",
            frame_samples=audio.frame_samples,
            trailing_silence_ms=self._settings.vad.hangover_ms + 200,
        )
        options = SessionOptions(wake_word=False, language=language)
        opening = manager.open_bridge(
            "openai", options, audio=source, streams=(Stream.TRANSCRIPTS,), queue_size=100_000
        )
        try:
            with decoder:
                async with opening as bridge:
                    transcripts = await self._transcripts(bridge, request.receive, received_at)
        except SessionLimitError as exc:
            raise _ApiError(429, str(exc), code="busy") from None
        except ConfigError as exc:
            raise _ApiError(400, exc.reason) from None
        if transcripts is None:
            return _NoAnswer()
        if source.error is not None:
            raise _file_error(source.error)
        if bridge.session.failed:
            raise _ApiError(500, "the transcription failed", code="session_failed")
        return self._render(response_format, transcripts, source.duration_s, language, manager)

    async def _transcripts(
        self, bridge: SessionBridge, receive: Callable[[], Any], received_at: float
    ) -> list[TranscriptMessage] | None:
        """The session's transcripts; None when the client went and the session was ended."""
        transcripts: list[TranscriptMessage] = []
        gone = False

        async def watch() -> None:
            nonlocal gone
            await _disconnected(receive, received_at)
            gone = True
            bridge.abort()  # the session ends as ``disconnected``

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async for item in bridge.messages:
                assert isinstance(item.message, TranscriptMessage)
                transcripts.append(item.message)
            nursery.cancel_scope.cancel()
        return None if gone else transcripts

    def _render(
        self,
        response_format: str,
        transcripts: list[TranscriptMessage],
        duration: float,
        language: str | None,
        manager: SessionManager,
    ) -> Response:
        segments = [
            _Segment(t.audio_start_s, min(t.audio_end_s, duration), t.text, t.no_speech_probability)
            for t in transcripts
        ]
        text = " ".join(s.text for s in segments).strip()
        if response_format == "text":
            return PlainTextResponse(text)
        if response_format == "srt":
            return PlainTextResponse(_srt(segments))
        if response_format == "vtt":
            return PlainTextResponse(_vtt(segments), media_type="text/vtt")
        if response_format == "json":
            return JSONResponse({"text": text})
        spoken = language or next((t.stt_language for t in transcripts if t.stt_language), None)
        spoken = spoken or (transcripts[0].language if transcripts else "en")
        body: dict[str, Any] = {
            "task": "transcribe",
            "language": manager.engines.stt.language_name(spoken),
            "duration": round(duration, 3),
            "text": text,
            "segments": [
                {
                    "id": n,
                    "seek": 0,
                    "start": round(s.start, 3),
                    "end": round(s.end, 3),
                    "text": s.text,
                    "tokens": [],
                    "temperature": 0.0,
                    # whisper.cpp's greedy decoder here keeps no log-probabilities.
                    "avg_logprob": 0.0,
                    "compression_ratio": _compression_ratio(s.text),
                    "no_speech_prob": s.no_speech_probability or 0.0,
                }
                for n, s in enumerate(segments)
            ],
        }
        return JSONResponse(body)


async def _disconnected(receive: Callable[[], Any], received_at: float) -> None:
    """Returns when the client has gone (its connection closed or reset).

    The body has all been read, so the next ASGI message is ``http.disconnect``.
    """
    while True:
        message: MutableMapping[str, Any] = await receive()
        if message["type"] != "http.disconnect":
            continue
        if trio.current_time() - received_at < READ_TIMEOUT_S - _TIMEOUT_MARGIN_S:
            return
        # hypercorn's read timeout, not the client: it no longer reads the
        # connection, so nothing more can be told; the response still goes out.
        await trio.sleep_forever()


def _file_error(exc: AudioSourceError) -> _ApiError:
    if isinstance(exc, AudioLimitError):
        return _ApiError(413, str(exc), param="file", code="audio_too_large")
    return _ApiError(400, str(exc), param="file", code="invalid_file")


def _guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def run(request: Request) -> Response:
        try:
            response: Response = await handler(request)
        except _ApiError as error:
            return error.response()
        return response

    return run


def openai_routes(
    settings: Settings, sessions: Callable[[], SessionManager | None]
) -> list[BaseRoute]:
    """The routes, for the service's HTTP server; ``sessions`` is None while not serving.

    With the Realtime API's transcription WebSocket (``openai_realtime``).
    """
    api = _Transcriptions(settings, sessions)
    return [
        Route("/v1/audio/transcriptions", _guarded(api.transcribe), methods=["POST"]),
        Route("/v1/models", _guarded(api.models), methods=["GET"]),
        Route("/v1/models/{model}", _guarded(api.models), methods=["GET"]),
        WebSocketRoute(REALTIME_PATH, RealtimeEndpoint(settings, sessions).serve),
    ]
