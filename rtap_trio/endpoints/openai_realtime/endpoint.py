"""The Starlette WebSocket endpoint for ``/v1/realtime``: one :class:`.connection.Connection` each.

Apart from the connection so that the route table (:mod:`..openai_http.routes`)
holds only this small, long-lived object; whatever a connection raises is that
connection's failure alone: counted, logged, and the client closed with 1011.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio
from loguru import logger
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...sessions import SessionManager
from ...settings import Settings
from ...transport.websocket_close import INTERNAL_ERROR
from .connection import KIND, Connection

__all__ = ["REALTIME_PATH", "RealtimeEndpoint"]

REALTIME_PATH = "/v1/realtime"


class RealtimeEndpoint:
    """Serves ``/v1/realtime`` connections; ``sessions`` is None while not serving."""

    def __init__(self, settings: Settings, sessions: Callable[[], SessionManager | None]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.log = logger.bind(component=KIND)

    async def serve(self, websocket: WebSocket) -> None:
        """The Starlette WebSocket endpoint: one connection, start to end."""
        try:
            await Connection(self.settings, self.sessions, websocket).run()
        except Exception as exc:  # one connection's failure is that connection's alone
            manager = self.sessions()
            if manager is not None:
                manager.metrics.errors.labels(KIND, type(exc).__name__).inc()
            self.log.opt(exception=exc).warning("connection failed: {}", exc)
            with trio.move_on_after(1.0):
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # gone already
                    await websocket.close(code=INTERNAL_ERROR, reason="internal error")
