"""The OpenAI-compatible routes on the service's HTTP port, errors answered in OpenAI's shape.

The table of what path goes to which handler: transcriptions, translations and models
(:mod:`.transcriptions`) and the Realtime API's transcription WebSocket
(:mod:`..openai_realtime`). An :class:`~.api_error.ApiError` a handler raises
becomes its response here, so no handler builds an error response itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from ...sessions import SessionManager
from ...settings import Settings
from ..openai_realtime import REALTIME_PATH, RealtimeEndpoint
from .api_error import ApiError
from .transcriptions import Transcriptions

__all__ = ["openai_routes"]


def _guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def run(request: Request) -> Response:
        try:
            response: Response = await handler(request)
        except ApiError as error:
            refused = error.response()
            if request.method != "GET":
                # The body may be unread (a 413 is answered from Content-Length), and
                # then the server closes the connection after the response: said in
                # the response, so a client does not send its next request into that
                # close (the openai SDK did, as "Server disconnected", under load).
                refused.headers["connection"] = "close"
            return refused
        return response

    return run


def openai_routes(
    settings: Settings, sessions: Callable[[], SessionManager | None]
) -> list[BaseRoute]:
    """The routes, for the service's HTTP server; ``sessions`` is None while not serving.

    With the Realtime API's transcription WebSocket (``openai_realtime``).
    """
    api = Transcriptions(settings, sessions)
    return [
        Route("/v1/audio/transcriptions", _guarded(api.transcribe), methods=["POST"]),
        Route("/v1/audio/translations", _guarded(api.translate), methods=["POST"]),
        Route("/v1/models", _guarded(api.models), methods=["GET"]),
        Route("/v1/models/{model}", _guarded(api.models), methods=["GET"]),
        WebSocketRoute(REALTIME_PATH, RealtimeEndpoint(settings, sessions).serve),
    ]
