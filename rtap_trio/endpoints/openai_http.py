"""OpenAI-compatible transcription over HTTP: ``POST /v1/audio/transcriptions``, ``GET /v1/models``.

What the ``openai`` SDK (and pipecat, LiveKit agents, scripts) call with their
``base_url`` pointed here. An upload is decoded (anything libsndfile reads:
WAV, FLAC, OGG, MP3), then goes through a session like ``replay``: VAD
segmentation, whisper.cpp, language; nothing is dropped, and the utterances
become the response's segments. Errors come in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with its status codes.

Accepted and ignored, since the service has one model and decodes greedily:
``model`` (any name; ``GET /v1/models`` lists the real one and ``whisper-1``),
``prompt`` and ``temperature`` (checked, not used).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from ..audio.file import FileSource, decode_audio
from ..errors import AudioSourceError, ConfigError
from ..sessions import SessionLimitError, SessionManager, SessionOptions
from ..settings import Settings
from ..transport.schemas import Stream, TranscriptMessage
from .openai_realtime import REALTIME_PATH, RealtimeEndpoint

__all__ = ["openai_routes"]

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
#: The name OpenAI's own clients send most; accepted like the real model's.
ALIAS = "whisper-1"
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


class _InMemoryParser(MultiPartParser):
    """Starlette's multipart parser, keeping file parts in memory.

    It spools a part over 1 MiB to a temporary file, and no audio may reach
    the disk unless a setting says so. The upload is bounded before parsing
    (the Content-Length against ``openai.max_file_bytes``), so memory is too.
    """

    spool_max_size = 1 << 31


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


def _compression_ratio(text: str) -> float:
    # As openai-whisper computes it: a high ratio means a repetitive (looping) text.
    raw = text.encode()
    return round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0


class _Transcriptions:
    def __init__(self, settings: Settings, sessions: Callable[[], SessionManager | None]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._max_bytes = settings.openai.max_file_bytes

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

    async def _form(self, request: Request) -> tuple[bytes, str, dict[str, str]]:
        length = request.headers.get("content-length")
        if length is None:
            raise _ApiError(411, "a Content-Length header is required")
        if not length.isdigit() or int(length) > self._max_bytes + 65_536:
            raise _ApiError(
                413, f"the upload is over {self._max_bytes} bytes", code="file_too_large"
            )
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise _ApiError(400, "the request must be multipart/form-data")
        parser = _InMemoryParser(
            request.headers, request.stream(), max_files=1, max_fields=16, max_part_size=65_536
        )
        try:
            form = await parser.parse()
        except MultiPartException as exc:  # a malformed multipart body
            raise _ApiError(400, f"the request is not a valid form: {exc.message}") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise _ApiError(400, "a 'file' part is required", param="file")
            data = await upload.read(self._max_bytes + 1)
            if len(data) > self._max_bytes:
                raise _ApiError(
                    413, f"the file is over {self._max_bytes} bytes", code="file_too_large"
                )
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            return data, upload.filename or "upload", fields
        finally:
            await form.close()  # its spooled temporary file

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
        if language is not None:
            stt = manager.engines.stt
            if not _LANGUAGE.match(language) or language not in stt.languages:
                raise _ApiError(
                    400, f"the model {stt.name} cannot transcribe {language!r}", param="language"
                )
        return response_format, language

    async def transcribe(self, request: Request) -> Response:
        manager = self._manager()
        data, filename, fields = await self._form(request)
        response_format, language = self._options(fields, manager)
        audio = self._settings.audio
        try:
            samples = await trio.to_thread.run_sync(decode_audio, data, audio.sample_rate, filename)
        except AudioSourceError as exc:
            raise _ApiError(400, str(exc), param="file", code="invalid_file") from None
        try:
            session = manager.open("openai", SessionOptions(wake_word=False, language=language))
        except SessionLimitError as exc:
            raise _ApiError(429, str(exc), code="busy") from None
        except ConfigError as exc:
            raise _ApiError(400, exc.reason) from None
        source = FileSource.from_samples(
            samples,
            name=f"openai:{filename}",
            frame_samples=audio.frame_samples,
            sample_rate=audio.sample_rate,
            trailing_silence_ms=self._settings.vad.hangover_ms + 200,
        )
        transcripts: list[TranscriptMessage] = []
        subscription = manager.outbox.subscribe(
            f"openai-{session.id}", (Stream.TRANSCRIPTS,), 100_000, session_id=session.id
        )
        with subscription:
            async with trio.open_nursery() as nursery:

                async def collect() -> None:
                    async for item in subscription.receive:
                        assert isinstance(item.message, TranscriptMessage)
                        transcripts.append(item.message)

                nursery.start_soon(collect)
                try:
                    await session.run(source)
                finally:
                    subscription.end()
        if session.failed:
            raise _ApiError(500, "the transcription failed", code="session_failed")
        duration = samples.size / audio.sample_rate
        return self._render(response_format, transcripts, duration, language, manager)

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
