"""What one WebSocket message may cost on the HTTP server (hypercorn): ``/v1/realtime``.

*No permessage-deflate.* Hypercorn (0.18) offers it to every client that
asks, with no setting to refuse it (pgjones/hypercorn#307), and wsproto
inflates each read of a compressed frame whole before hypercorn counts the
message against its size limit: a 500 KiB frame that inflates to 512 MiB of
text raised the service's peak RSS by 190 MB, a 1 MiB one that inflates to
1 GiB by 600 MB, and what was inflated past the limit stayed buffered. RTAP's
clients are on a LAN or loopback, where compression saves nothing worth that:
the handshake agrees no extension, so a compressed frame is a protocol error
wsproto never inflates. (``/v1/audio``, on trio-websocket, negotiates none.)

*Messages up to 4 MiB*, not hypercorn's 16 MiB: a 15 MiB Realtime ``append``
raised the service's peak RSS by 124 MB while it was parsed and decoded; one
of 4 MiB costs 15 MB (measured on the service). 4 MiB is 87 s of pcm16 at
24 kHz in one event, twice what the largest manual buffer (30 s) takes.

The handshake class is a module global of hypercorn's, looked up for each
connection: :func:`limit_websockets` replaces it (idempotently) for every
hypercorn server in the process; there is no per-server hook.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable

from hypercorn.config import Config
from hypercorn.protocol import ws_stream
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event

__all__ = ["MAX_MESSAGE_BYTES", "limit_websockets"]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class _ClosingConnection(Connection):
    """wsproto's connection, whose protocol errors get a close frame from hypercorn.

    A frame wsproto cannot parse (a compressed one, say) comes out as a
    CloseConnection with its code (1002) while the state stays OPEN; hypercorn
    answers a close only in REMOTE_CLOSING, so it dropped the TCP connection
    without one and the client saw 1006. Reported as REMOTE_CLOSING, the
    client gets the close frame with the code and wsproto's reason.
    """

    def __init__(self) -> None:
        self._failed = False  # before wsproto's __init__, which reads the state
        super().__init__(ConnectionType.SERVER)

    @property
    def state(self) -> ConnectionState:
        state = super().state
        if self._failed and state is ConnectionState.OPEN:
            return ConnectionState.REMOTE_CLOSING
        return state

    def events(self) -> Generator[Event, None, None]:
        for event in super().events():
            if isinstance(event, CloseConnection) and super().state is ConnectionState.OPEN:
                self._failed = True  # a close frame from the client moves the state itself
            yield event


class _NoExtensionsHandshake(ws_stream.Handshake):
    """Hypercorn's handshake, answering as if the client had offered no extension."""

    def accept(
        self, subprotocol: str | None, additional_headers: Iterable[tuple[bytes, bytes]]
    ) -> tuple[int, list[tuple[bytes, bytes]], Connection]:
        # No Sec-WebSocket-Extensions in the answer and wsproto's
        # PerMessageDeflate never enabled: an RSV1 frame fails to parse (1002).
        self.extensions = None
        status, headers, _ = super().accept(subprotocol, additional_headers)
        return status, headers, _ClosingConnection()


def limit_websockets(config: Config) -> None:
    """Bound the WebSocket messages of the servers ``config`` (and every other) runs."""
    config.websocket_max_message_size = MAX_MESSAGE_BYTES
    ws_stream.Handshake = _NoExtensionsHandshake  # type: ignore[misc]
