"""The HTTP side of the remote engine: one utterance, one
``POST {url}/audio/transcriptions``, over connections kept alive.

httpx's :class:`~httpx.AsyncClient` runs on trio through anyio and keeps its
connections open between requests: over loopback a new connection costs
~0.3 ms more, over a LAN a round trip, and with TLS a handshake, for every
utterance. Timeouts are not httpx's: the caller's cancel scope (the pool's
budget, the fallback's request limit) ends a request, and cancelling closes
its connection at once, so the remote sees the client go (RTAP's own server
then stops the upload's session). Only connecting has a limit of its own,
:data:`CONNECT_TIMEOUT_S`, so that one unreachable URL of several does not
take the whole request's time.

The response is ``verbose_json``: its ``language`` is the one heard (a name,
"english", in OpenAI's API) and its segments carry Whisper's no-speech
probability, which the STT stage's discard rule reads.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ...settings import RemoteSttSettings
from ..engine import EngineResult
from ..failure import EngineFailed

__all__ = ["CONNECT_TIMEOUT_S", "KEEPALIVE_S", "RemoteClient", "parse_transcription"]

#: How long an idle connection is kept for the next utterance: under the
#: servers' own keep-alive timeout (RTAP's hypercorn and uvicorn close idle
#: connections after 5 s), so this side drops it first and never sends a request
#: on a connection the server is closing. A session's partials (every 500 ms) and
#: a conversation's turns reuse it; a new one costs a round trip.
KEEPALIVE_S = 4.0

#: Connecting to a URL: over a LAN it takes a round trip (under a millisecond
#: here over loopback); a host that does not answer would otherwise hold the
#: request until its limit, though the next URL might answer.
CONNECT_TIMEOUT_S = 1.0


class RemoteClient:
    """Requests to ``stt.remote.urls``, taken in turn; shared by a pool's remote engines."""

    def __init__(
        self, settings: RemoteSttSettings, language_code: Callable[[str], str | None]
    ) -> None:
        self._urls = tuple(settings.urls)
        self._model = settings.model
        self._language_code = language_code
        self._turn = itertools.count()
        token = settings.token.get_secret_value() if settings.token else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_keepalive_connections=16, keepalive_expiry=KEEPALIVE_S),
            trust_env=False,
        )
        self._closed = False

    @property
    def urls(self) -> tuple[str, ...]:
        return self._urls

    def _order(self) -> list[str]:
        """Every URL once, starting with the next one in turn (round robin)."""
        first = next(self._turn) % len(self._urls)
        return [*self._urls[first:], *self._urls[:first]]

    async def transcribe(self, wav: bytes, language: str | None) -> EngineResult:
        """The first answer of the URLs in turn; :class:`EngineFailed` (the last
        URL's reason) when none answers."""
        failure: EngineFailed | None = None
        for url in self._order():
            for _ in range(2):
                try:
                    return await self._post(url, wav, language)
                except EngineFailed as exc:
                    failure = exc
                # A connection lost before any answer ("transport") may be a kept-alive
                # one the server closed as it was reused: once more, on a new one
                # (transcription is idempotent). Anything else: the next URL.
                if failure.reason != "transport":
                    break
        assert failure is not None
        raise failure

    async def _post(self, url: str, wav: bytes, language: str | None) -> EngineResult:
        form = {"model": self._model, "response_format": "verbose_json"}
        if language:
            form["language"] = language
        files = {"file": ("utterance.wav", wav, "audio/wav")}
        try:
            response = await self._http.post(f"{url}/audio/transcriptions", data=form, files=files)
        except httpx.ConnectError as exc:
            raise EngineFailed("connect", f"{url}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise EngineFailed("connect_timeout", f"{url}: {exc}") from exc
        except httpx.TransportError as exc:  # reset, closed mid-answer, protocol errors
            raise EngineFailed("transport", f"{url}: {type(exc).__name__} {exc}") from exc
        if response.status_code != 200:
            raise EngineFailed(
                f"http_{response.status_code}", f"{url}: {response.text[:200].strip()}"
            )
        try:
            body = response.json()
        except json.JSONDecodeError as exc:
            raise EngineFailed("bad_response", f"{url}: not JSON") from exc
        return parse_transcription(body, language, self._language_code)

    async def models(self, url: str) -> list[str]:
        """The model ids ``GET {url}/models`` lists (a start-up check)."""
        response = await self._http.get(f"{url}/models")
        response.raise_for_status()
        return [str(m.get("id")) for m in response.json().get("data", [])]

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._http.aclose()


def parse_transcription(
    body: Any, asked: str | None, language_code: Callable[[str], str | None]
) -> EngineResult:
    """An OpenAI ``verbose_json`` (or plain ``json``) transcription as an engine's result."""
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise EngineFailed("bad_response", "no text in the answer")
    heard = body.get("language")
    language = asked or (language_code(heard) if isinstance(heard, str) and heard else None)
    segments: Sequence[Any] = body.get("segments") or ()
    no_speech = [
        float(s["no_speech_prob"])
        for s in segments
        if isinstance(s, dict) and isinstance(s.get("no_speech_prob"), int | float)
    ]
    return EngineResult(
        text=body["text"].strip(),
        language=language or "",
        language_probability=None,
        # The utterance is speech if any of its segments is: the least likely
        # silence of them is the utterance's.
        no_speech_probability=min(no_speech) if no_speech else None,
        engine="remote",
    )
