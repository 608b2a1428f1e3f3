"""How RTAP's WebSocket doors close a connection: the codes and a reason that fits the frame.

One place for what ``/v1/audio``, ``/v1/realtime`` and the watchers' server
each defined for themselves: the close codes they use (RFC 6455, section
7.4.1) and the rule for a close reason, which must fit a control frame's 123
bytes of UTF-8 (a longer one is cut at a character boundary and ends in
``...``). Plain ints, not an enum: they go to trio-websocket and to ASGI as
they are.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "GOING_AWAY",
    "INTERNAL_ERROR",
    "MAX_REASON_BYTES",
    "NORMAL",
    "POLICY",
    "TRY_AGAIN",
    "UNSUPPORTED_DATA",
    "close_reason",
]

#: The client's session ended as it should (stop, idle, end of stream).
NORMAL: Final = 1000
#: The service is stopping.
GOING_AWAY: Final = 1001
#: A message of a kind the door does not take (binary where text is expected).
UNSUPPORTED_DATA: Final = 1003
#: A message the door cannot honour (a bad start, a bad subscribe request).
POLICY: Final = 1008
#: The server failed (the session failed, or the connection's handler).
INTERNAL_ERROR: Final = 1011
#: Busy or too slow: the client may try again later.
TRY_AGAIN: Final = 1013

#: A close frame's payload is at most 125 bytes: the code's two, then the reason.
MAX_REASON_BYTES: Final = 123


def close_reason(text: str) -> str:
    """``text`` as a close reason: whole if it fits, else cut to fit and ending in ``...``."""
    raw = text.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return text
    return raw[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."
