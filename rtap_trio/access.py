"""Who may connect: the bearer token and the browsers' Origin allow-list.

One policy for every server that carries speech or transcripts: the WebSocket
server (watchers and ``/v1/audio``), the console's API and the OpenAI
endpoints on the HTTP port. ``/health``, ``/metrics`` and the console's static
files stay open: they carry neither, and probes and scrapers need them.

- A token, when ``security.token`` is set, is required from every client,
  loopback ones too: ``Authorization: Bearer <token>`` or, for browsers (which
  cannot set headers on a WebSocket), ``?token=<token>``. It is compared in
  constant time. Settings refuse a non-loopback address without one.
- An ``Origin`` header (only browsers send one) must be a loopback origin or
  one listed in ``security.allowed_origins``, token or not: otherwise any web
  page a user opens could read their transcripts through their browser, and a
  DNS-rebinding page reach a service bound to 127.0.0.1.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from .settings import SecuritySettings, is_loopback

__all__ = ["AccessPolicy", "Refusal"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a client was turned away, as an HTTP status and one line."""

    status: int
    reason: str


class AccessPolicy:
    def __init__(self, settings: SecuritySettings) -> None:
        token = settings.token
        self._token = token.get_secret_value().encode() if token is not None else None
        self._origins = frozenset(settings.allowed_origins)

    @property
    def token_required(self) -> bool:
        return self._token is not None

    def origin_allowed(self, origin: str) -> bool:
        origin = origin.lower()
        if origin in self._origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")

    def check(self, headers: Iterable[tuple[bytes, bytes]], query: str) -> Refusal | None:
        """None if the request may go on; ``headers`` as on the wire (name, value)."""
        origin: str | None = None
        authorization: str | None = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"origin":
                origin = value.decode("latin-1")
            elif lowered == b"authorization":
                authorization = value.decode("latin-1")
        # "null" is what a sandboxed frame or a file:// page sends: a browser, not allowed.
        if origin is not None and not self.origin_allowed(origin):
            return Refusal(403, f"origin {origin[:80]} is not allowed")
        if self._token is None:
            return None
        offered: str | None = None
        if authorization is not None:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() == "bearer":
                offered = credentials.strip()
        if offered is None:
            offered = parse_qs(query).get("token", [None])[0]
        if offered is None:
            return Refusal(401, "a bearer token is required")
        if not hmac.compare_digest(offered.encode(), self._token):
            return Refusal(401, "wrong token")
        return None
