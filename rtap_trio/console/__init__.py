"""The browser console at ``http://127.0.0.1:8080/``: plain HTML, JS and CSS in the package.

No build step and nothing from a CDN: it works offline. The page watches the
WebSocket server (events, transcripts, levels), polls ``/health``, and streams
the browser's microphone into a ``/v1/audio`` session. Its API is small:

- ``GET /api/config``: where the WebSocket server is and what it needs;
- ``GET /api/transcripts?after_seq=N&limit=M``: the kept transcripts after N
  (what the page missed while it was reconnecting).

Both are under ``/api/``: the access policy applies. The page and its files
are open (they hold nothing), so it can ask for a token when one is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..endpoints.audio_websocket import AUDIO_PATH
from ..errors import validation_problem
from ..settings import Settings
from ..transport.outbox import Outbox
from ..transport.schemas import CatchupRequest

__all__ = ["STATIC_DIR", "console_config", "console_routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The page and its files change with the package: a browser must not keep old ones.
_NO_CACHE = {"cache-control": "no-cache"}


def console_routes(
    config: Callable[[], dict[str, Any]], outbox: Outbox, service_id: str
) -> list[BaseRoute]:
    """``config()`` says what the page needs to connect (ports as bound)."""

    async def index(_: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_NO_CACHE)

    async def api_config(_: Request) -> Response:
        return JSONResponse(config())

    async def api_transcripts(request: Request) -> Response:
        try:
            catchup = CatchupRequest.model_validate(dict(request.query_params))
        except ValidationError as exc:
            return JSONResponse({"error": validation_problem(exc, "query")}, status_code=400)
        reply = outbox.catch_up(catchup, service_id)
        return Response(reply.model_dump_json(), media_type="application/json")

    return [
        Route("/", index, methods=["GET"]),
        Route("/api/config", api_config, methods=["GET"]),
        Route("/api/transcripts", api_transcripts, methods=["GET"]),
        Mount("/console", StaticFiles(directory=STATIC_DIR), name="console"),
    ]


def console_config(
    settings: Settings, service_id: str, websocket_port: int | None
) -> dict[str, Any]:
    """What ``GET /api/config`` tells the page it needs to connect (ports as bound)."""
    return {
        "service_id": service_id,
        "profile": settings.environment,
        "websocket_port": websocket_port,
        "audio_path": AUDIO_PATH,
        "token_required": settings.security.token is not None,
        "heartbeat_interval_s": settings.output.heartbeat_interval_s,
        "sample_rate": 16_000,
        "wake_word": settings.wakeword.enabled,
    }
