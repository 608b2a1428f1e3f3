"""A client event the Realtime server cannot honour, as the ``error`` event will tell it.

Its own module because every part of the endpoint raises it: the session
update's models (:mod:`.session_update`), the client events
(:mod:`.connection`) and the lifecycle's refusals; :mod:`.client_socket` sends
it in the Realtime shape, ``{"type", "code", "message", "param", "event_id"}``.
"""

from __future__ import annotations

__all__ = ["ClientError"]


class ClientError(Exception):
    """A client event the server cannot honour: an ``error`` event, and read on."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str = "invalid_value",
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind
