"""An OpenAI API error: its HTTP status and the ``{"error": {...}}`` body OpenAI's clients read.

Apart from the handlers because every part of the HTTP API raises it (the
form parser, the upload budget, the transcription) and the routes turn it into
the response: one shape, ``{"error": {"message", "type", "param", "code"}}``,
with the ``type`` OpenAI gives each status.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

__all__ = ["ApiError"]

#: OpenAI's error type for each status; any other status is a bad request.
_ERROR_TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class ApiError(Exception):
    """A request refused (or failed) with ``status``: answered in OpenAI's shape."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code

    def response(self) -> JSONResponse:
        kind = _ERROR_TYPES.get(self.status, "invalid_request_error")
        body = {"message": str(self), "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status)
