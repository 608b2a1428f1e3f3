"""``POST /v1/audio/transcriptions``, ``POST /v1/audio/translations`` and ``GET /v1/models``:
an upload through a session.

An upload (anything libsndfile reads: WAV, FLAC, OGG, MP3) goes through a
session like ``replay``: VAD segmentation, whisper.cpp, language; nothing is
dropped, and the utterances become the response's segments
(:mod:`.response_formats`).

Every step has its budget before it costs anything: the body is counted as it
arrives (chunked or not) and refused with 413 the moment it is over
``openai.max_file_bytes``; it is parsed in memory, never spooled to disk
(:mod:`.form`); the file's header is read before any of it is decoded, and what
is over ``openai.max_audio_s``, ``openai.max_channels`` or 192 kHz is refused
with 413; the session's slot is taken before decoding, which then streams a
block at a time into the pipeline; and a client that disconnects while its
upload is transcribed ends its session (``session_ended`` with reason
``disconnected``).

``prompt`` primes the decoder (whisper.cpp's initial prompt; over the
engine's 224 tokens it is refused with 400, ``param: "prompt"``), for every
utterance of the upload. ``timestamp_granularities[]=word`` times each word
(``verbose_json`` ``words``; with ``srt``/``vtt`` each word is a cue; with
``json``/``text`` it is refused, as OpenAI does). A translation
(``/v1/audio/translations``) is the same upload with Whisper's translate task:
English text, on a multilingual model only (an English-only one: 400,
``param: "model"``).

Accepted and ignored, since the service has one model and decodes greedily:
``model`` (any name; ``GET /v1/models`` lists the real one and ``whisper-1``)
and ``temperature`` (checked, not used).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import trio
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ...audio.file import AudioDecoder, AudioLimitError, AudioLimits, DecodingSource
from ...errors import AudioSourceError, ConfigError
from ...http_server import READ_TIMEOUT_S
from ...session_bridge import SessionBridge
from ...session_options import SessionOptions
from ...sessions import SessionLimitError, SessionManager
from ...settings import Settings
from ...stt import Task
from ...transport.schemas import Stream, TranscriptMessage
from .api_error import ApiError
from .form import MultipartForm
from .response_formats import RESPONSE_FORMATS, render

__all__ = ["ALIAS", "MAX_SAMPLE_RATE", "Transcriptions"]

#: The name OpenAI's own clients send most; accepted like the real model's.
ALIAS = "whisper-1"
#: Sample rates past this are refused from the header: decoding costs
#: rate x channels x duration, and 192 kHz is the highest a recording is made at.
MAX_SAMPLE_RATE = 192_000
#: The body may be over the file's limit by this much: the form's fields and
#: the parts' headers (:mod:`.form` bounds them).
_FORM_OVERHEAD = 65_536
#: hypercorn stops reading a connection that has sent nothing for its read
#: timeout and tells the app ``http.disconnect`` though the client still waits
#: (the response still reaches it). A disconnect this close to that moment is
#: taken for the timeout, not the client going (a reset then is missed).
_TIMEOUT_MARGIN_S = 2.0


@dataclass(frozen=True, slots=True)
class _Request:
    """What the form asked for."""

    response_format: str
    language: str | None
    prompt: str | None
    words: bool
    task: Task


class _NoAnswer(Response):
    """For a client that has gone: nothing is sent (the connection is closed)."""

    def __init__(self) -> None:
        super().__init__(status_code=499)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


class Transcriptions:
    """The handlers, with the upload budget they share."""

    def __init__(self, settings: Settings, sessions: Callable[[], SessionManager | None]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._max_bytes = settings.openai.max_file_bytes
        #: uploads between their first byte and their response
        self._uploads = 0

    def _manager(self) -> SessionManager:
        manager = self._sessions()
        if manager is None:
            raise ApiError(503, "the service is starting or stopping", code="unavailable")
        return manager

    async def models(self, request: Request) -> Response:
        manager = self._manager()
        ids = [manager.engines.stt.name, ALIAS]
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "rtap"} for i in ids]
        if "model" in request.path_params:
            wanted = request.path_params["model"]
            if wanted not in ids:
                raise ApiError(404, f"The model '{wanted}' does not exist", code="model_not_found")
            return JSONResponse(data[ids.index(wanted)])
        return JSONResponse({"object": "list", "data": data})

    async def _form(self, request: Request) -> MultipartForm:
        """The form, read as it streams in: 413 as soon as the body is over its budget.

        Raises ClientDisconnect when the client goes while sending.
        """
        headers = request.headers
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if length is None and not chunked:
            raise ApiError(411, "a Content-Length header is required")
        budget = self._max_bytes + _FORM_OVERHEAD
        too_big = ApiError(
            413, f"the upload is over {self._max_bytes} bytes", code="file_too_large"
        )
        if length is not None and (not length.isdigit() or int(length) > budget):
            raise too_big
        content_type = headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(400, "the request must be multipart/form-data")
        boundary = parse_options_header(content_type)[1].get(b"boundary")
        if not boundary:
            raise ApiError(400, "the request is not a valid form: it has no boundary")
        form = MultipartForm(boundary, self._max_bytes)
        received = 0
        try:
            # Counted as it arrives, whatever Content-Length said: with chunked
            # transfer encoding the header is not what limits the body.
            async for chunk in request.stream():
                received += len(chunk)
                if received > budget:
                    raise too_big
                form.feed(chunk)
        except BaseException:
            form.close()  # what it took, freed now (see MultipartForm.close)
            raise
        return form

    def _options(self, form: MultipartForm, manager: SessionManager, task: Task) -> _Request:
        fields = form.fields
        if not fields.get("model"):
            raise ApiError(400, "you must provide a model parameter", param="model")
        response_format = fields.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(
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
                raise ApiError(400, "temperature must be between 0 and 1", param="temperature")
        # A translation has no language to ask for: it is detected, the text is English.
        language = (fields.get("language") or None) if task == "transcribe" else None
        problem = manager.language_problem(language)
        if problem is not None:
            raise ApiError(400, problem, param="language")
        problem = manager.task_problem(task)
        if problem is not None:
            raise ApiError(400, problem, param="model", code="unsupported_task")
        prompt = fields.get("prompt") or None
        problem = manager.prompt_problem(prompt)
        if problem is not None:
            raise ApiError(400, problem, param="prompt")
        granularities = form.values.get("timestamp_granularities[]", []) + form.values.get(
            "timestamp_granularities", []
        )
        for granularity in granularities:
            if granularity not in ("word", "segment"):
                raise ApiError(
                    400,
                    "timestamp_granularities must be word or segment",
                    param="timestamp_granularities",
                )
        words = "word" in granularities and task == "transcribe"
        if words and response_format in ("json", "text"):
            raise ApiError(
                400,
                "timestamp_granularities needs response_format verbose_json (or srt, vtt)",
                param="timestamp_granularities",
            )
        return _Request(response_format, language, prompt, words, task)

    async def transcribe(self, request: Request) -> Response:
        return await self._upload(request, "transcribe")

    async def translate(self, request: Request) -> Response:
        return await self._upload(request, "translate")

    async def _upload(self, request: Request, task: Task) -> Response:
        manager = self._manager()
        # Counted before the first await, so no number of connections outruns it:
        # the bodies in memory are at most max_concurrent_uploads x max_file_bytes.
        limit = self._settings.openai.max_concurrent_uploads
        if self._uploads >= limit:
            raise ApiError(429, f"{limit} uploads are being transcribed already", code="busy")
        self._uploads += 1
        try:
            return await self._transcribe(request, manager, task)
        finally:
            self._uploads -= 1

    async def _transcribe(self, request: Request, manager: SessionManager, task: Task) -> Response:
        try:
            form = await self._form(request)
        except ClientDisconnect:
            return _NoAnswer()
        file = form.finish()
        received_at = trio.current_time()
        asked = self._options(form, manager, task)
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
        options = SessionOptions(
            wake_word=False,
            language=asked.language,
            prompt=asked.prompt,
            words=asked.words,
            task=asked.task,
        )
        opening = manager.open_bridge(
            "openai", options, audio=source, streams=(Stream.TRANSCRIPTS,), queue_size=100_000
        )
        try:
            with decoder:
                async with opening as bridge:
                    transcripts = await self._transcripts(bridge, request.receive, received_at)
        except SessionLimitError as exc:
            raise ApiError(429, str(exc), code="busy") from None
        except ConfigError as exc:
            raise ApiError(400, exc.reason) from None
        if transcripts is None:
            return _NoAnswer()
        if source.error is not None:
            raise _file_error(source.error)
        if bridge.session.failed:
            raise ApiError(500, "the transcription failed", code="session_failed")
        response = render(
            asked.response_format,
            transcripts,
            source.duration_s,
            asked.language,
            manager.engines.stt.language_name,
            words=asked.words,
            task=asked.task,
        )
        ignored = manager.ignored_options(options.decoding(self._settings))
        if ignored:  # an engine that cannot: said, not silently dropped
            response.headers["x-rtap-ignored"] = ",".join(ignored)
        return response

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


def _file_error(exc: AudioSourceError) -> ApiError:
    if isinstance(exc, AudioLimitError):
        return ApiError(413, str(exc), param="file", code="audio_too_large")
    return ApiError(400, str(exc), param="file", code="invalid_file")
