"""The WebSocket port (``output.websocket_port``): watchers, and ``/v1/audio`` sessions.

The server (transport/websocket.py) serves watchers; this module adds the
``/v1/audio`` route, which takes a session only while the service serves:
starting or stopping, a client is closed with 1013 ("try again later") and
told which. Apart from the composition root like ``http_port.py``: what one
port serves, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from .endpoints import AUDIO_PATH, AudioWebSocketEndpoint
from .metrics import Metrics
from .sessions import SessionManager
from .settings import Settings
from .transport.outbox import Outbox
from .transport.websocket import WebSocketServer
from .transport.websocket_close import TRY_AGAIN

__all__ = ["websocket_port"]


def websocket_port(
    settings: Settings,
    outbox: Outbox,
    metrics: Metrics,
    service_id: str,
    serving: Callable[[], SessionManager | None],
    stopping: Callable[[], bool],
) -> WebSocketServer | None:
    """The WebSocket server with its ``/v1/audio`` route; None when it is off.

    ``serving()`` is the session manager while new sessions are taken, else None."""
    if not settings.output.websocket_enabled:
        return None
    server = WebSocketServer(
        settings.output,
        outbox,
        metrics,
        security=settings.security,
        service_id=service_id,
        send_budget_s=settings.pipeline.emit_budget_ms / 1000,
    )

    async def serve_audio(ws: Any, client: int) -> None:
        sessions = serving()
        if sessions is None:
            state = "stopping" if stopping() else "starting"
            with trio.move_on_after(1.0):
                await ws.aclose(code=TRY_AGAIN, reason=f"the service is {state}")
            return
        await AudioWebSocketEndpoint(settings, sessions)(ws, client)

    server.route(AUDIO_PATH, serve_audio)
    return server
