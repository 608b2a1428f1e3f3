"""A Realtime client's WebSocket: server events out, one at a time and bounded, and the close.

Apart from the connection's logic because sending has its own rules: every
event is one JSON text frame with its ``type`` and a fresh ``event_id``; sends
never interleave (a lock) and a send is never cancelled half-way (half a frame
would break the stream), unless the client takes nothing for ``_SEND_S``; a
client gone makes every later send and close a no-op. The close's reason is
cut to fit its frame (:mod:`rtap_trio.transport.websocket_close`).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import MutableMapping
from typing import Any

import trio
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...transport.websocket_close import close_reason
from .client_error import ClientError

__all__ = ["ClientSocket", "new_id"]

#: One event to a client that reads nothing gets this long before it is given up.
_SEND_S = 5.0


def new_id(prefix: str) -> str:
    """An id in the API's style: ``item_...``, ``event_...``."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class ClientSocket:
    """Server events to one client, and what it sends; ``closed`` once it is gone or closed."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._send_lock = trio.Lock()
        self.closed = False

    async def receive(self) -> MutableMapping[str, Any]:
        """The client's next ASGI message; a ``websocket.disconnect`` marks it gone."""
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            self.closed = True
        return message

    async def send(self, kind: str, **fields: Any) -> None:
        if self.closed:
            return
        text = json.dumps({"type": kind, "event_id": new_id("event"), **fields})
        async with self._send_lock:
            # A send cancelled half-way would leave half a frame on the socket
            # (the receive loop is cancelled when the session ends, say): a
            # send finishes, unless the client takes nothing for _SEND_S.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _SEND_S) as scope:
                try:
                    await self._ws.send_text(text)
                except (WebSocketDisconnect, RuntimeError):
                    # Gone: the receive loop sees the disconnect and ends the connection.
                    self.closed = True
            if scope.cancelled_caught:
                self.closed = True  # the stream is unusable after half a frame

    async def error(self, error: ClientError, *, event_id: str | None = None) -> None:
        """The ``error`` event; ``event_id``: the client's event it is about."""
        body = {
            "type": error.kind,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": event_id,
        }
        await self.send("error", error=body)

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with trio.move_on_after(1.0):
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # gone already
                await self._ws.close(code=code, reason=close_reason(reason))
