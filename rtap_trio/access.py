"""Who may connect: the Host check, the bearer token and the browsers' Origin allow-list.

One policy for every server that carries speech or transcripts: the WebSocket
server (watchers and ``/v1/audio``), the console's API and the OpenAI
endpoints on the HTTP port. The Host check (:meth:`AccessPolicy.check_host`)
applies to every route of both ports; the token and the Origin rule
(:meth:`AccessPolicy.check`) only where speech or transcripts pass:
``/health``, ``/metrics`` and the console's static files carry neither, and
probes and scrapers need them.

- A ``Host`` header must name this service (DNS rebinding: a page on
  ``attacker.example`` whose name is then pointed at 127.0.0.1 reads the
  service as its own origin, with no Origin header on simple requests): a
  loopback name or address, the bind address, this machine's host name, a host
  of ``security.allowed_origins`` or of ``security.allowed_hosts``. Bound to
  every interface (0.0.0.0, ::), any IP literal is also this machine's: a
  rebinding page can only send a name it owns, never an address. A request
  without Host (HTTP/1.0, not a browser) passes; ``allowed_hosts: ["*"]``
  turns the check off (a reverse proxy that checks it itself).

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
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from .settings import SecuritySettings, is_loopback

__all__ = ["AccessPolicy", "Refusal", "host_name"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a client was turned away, as an HTTP status and one line."""

    status: int
    reason: str


#: Bind addresses that mean "every interface of this machine".
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})


def host_name(value: str) -> str | None:
    """The host of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``),
    lower case, without brackets, port or final dot; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[1:end], value[end + 1 :]
        if end < 0 or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
    else:
        host, colon, port = value.partition(":")
        if colon and not port.isdigit():  # also a bare IPv6 address: a Host must bracket it
            return None
    host = host.rstrip(".")
    return host or None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class AccessPolicy:
    def __init__(self, settings: SecuritySettings, bind_address: str = "127.0.0.1") -> None:
        """``bind_address``: where the server this policy guards listens."""
        token = settings.token
        self._token = token.get_secret_value().encode() if token is not None else None
        self._origins = frozenset(settings.allowed_origins)
        bind = bind_address.strip("[]").lower()
        self._any_address = bind in _WILDCARDS
        self._any_host = "*" in settings.allowed_hosts
        machine = socket.gethostname().lower()  # the kernel's, no DNS lookup
        origin_hosts = (urlsplit(origin).hostname or "" for origin in settings.allowed_origins)
        self._hosts = frozenset(
            {*settings.allowed_hosts, *origin_hosts, machine, machine.split(".")[0], bind}
            - {"", *_WILDCARDS}
        )

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` (as :func:`host_name` gives it) names this service."""
        if self._any_host or host in self._hosts or is_loopback(host):
            return True
        if host.endswith(".localhost"):  # browsers resolve these to loopback themselves
            return True
        return self._any_address and _is_address(host)

    def check_host(self, headers: Iterable[tuple[bytes, bytes]]) -> Refusal | None:
        """421 unless every ``Host`` header names this service; for every route."""
        for name, value in headers:
            if name.lower() == b"host":
                refusal = self.check_host_value(value.decode("latin-1"))
                if refusal is not None:
                    return refusal
        return None

    def check_host_value(self, value: str | None) -> Refusal | None:
        """:meth:`check_host` for one Host value as sent (None: there was none)."""
        if value is None:
            return None
        host = host_name(value)
        if host is not None and self.host_allowed(host):
            return None
        return Refusal(
            421,
            f"host {value[:80]!r} is not served here: use the service's address or "
            "a name in security.allowed_hosts",
        )

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
