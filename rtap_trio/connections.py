"""Connections and descriptors: each server's connection cap, and the process's limit.

Every TCP connection holds a descriptor, and a process has a fixed number of
them (``RLIMIT_NOFILE``). When they run out, ``accept()`` fails with EMFILE,
and so does everything else that opens one: reading ``/proc`` for the memory
gauge, a model file, a ZeroMQ socket. Measured before this module (issue 16):
10 300 idle connections to Wyoming took every descriptor; the memory sampler
beside the HTTP server failed on ``/proc/self/statm``, the HTTP task crashed
six times and the service stopped.

So every server accepts through a :class:`BoundedListener`:

- at most ``cap`` of its connections are open at once; one over the cap is
  answered at once with a short HTTP 503 (what a WebSocket client reads as a
  refused handshake) and closed once the client has read it, with at most
  :data:`MAX_REFUSING` refused connections still open (the oldest is closed
  first), so a flood costs a bounded number of descriptors and is never
  waited on;
- an ``accept()`` that fails for want of descriptors or memory (EMFILE,
  ENFILE, ENOBUFS, ENOMEM) is waited out with a growing backoff and logged once
  per episode, never raised. (trio's ``serve_listeners`` sleeps on these too,
  but logs each retry at ERROR, ten a second.)

At start :func:`raise_descriptor_limit` lifts the soft limit to the hard one
and :func:`descriptor_budget` says what the caps add up to, so the service can
warn when they do not fit under the limit.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import resource
from dataclasses import dataclass
from pathlib import Path

import trio
from loguru import logger

__all__ = [
    "BoundedListener",
    "ConnectionCap",
    "DescriptorBudget",
    "MAX_REFUSING",
    "RESERVED_DESCRIPTORS",
    "WEBSOCKET_HANDSHAKE_ROOM",
    "descriptor_budget",
    "descriptor_limit",
    "http_refusal",
    "open_descriptors",
    "raise_descriptor_limit",
]

#: accept() errors that mean "no descriptor or buffer now", not "this socket is broken".
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BACKOFF_INITIAL_S = 0.05
_BACKOFF_MAX_S = 1.0
#: Refused connections kept open at once, per server, for their clients to
#: read the 503: a new refusal closes the oldest.
MAX_REFUSING = 8
#: A refused client gets this long to read the refusal and close its side
#: (on loopback a client closes within a millisecond of reading).
_REFUSAL_LINGER_S = 1.0
#: Writing the 503 to a fresh socket, whose send buffer is empty, is immediate.
_REFUSAL_SEND_S = 0.5
#: A saturated server says so in the log at most this often.
_LOG_EVERY_S = 60.0
#: Descriptors kept for everything but the capped servers: the Python runtime
#: and its libraries, model files while they load, the log, the standby's
#: ZeroMQ context and its I/O threads, ALSA, the GPU driver. Measured: 22-23
#: open at idle with --source none (default and pc2 profiles).
RESERVED_DESCRIPTORS = 128
#: Connections on the WebSocket port that have not finished their opening
#: handshake (each is dropped after 5 s) count on top of its client cap.
WEBSOCKET_HANDSHAKE_ROOM = 16


def http_refusal(status: str, message: str, *, json_body: bool = True) -> bytes:
    """A complete HTTP/1.1 response that closes the connection: what an over-cap client reads."""
    if json_body:
        body = json.dumps({"error": {"message": message, "type": "server_error"}}).encode()
        content_type = b"application/json"
    else:
        body = message.encode()
        content_type = b"text/plain; charset=utf-8"
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type.decode()}\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionCap:
    """One server's connection cap and what it holds now: shared by its
    listeners, read by ``/health``."""

    def __init__(self, what: str, cap: int, setting: str) -> None:
        self.what = what
        self.cap = cap
        #: the setting that sets ``cap``, named in the log
        self.setting = setting
        #: connections refused for the cap
        self.refused = 0
        #: accept() calls that failed for want of descriptors (EMFILE, ...)
        self.accept_errors = 0
        self._streams: set[trio.SocketStream] = set()
        self._lingering: collections.deque[trio.CancelScope] = collections.deque()

    def _prune(self) -> None:
        # A closed socket's fileno() is -1, whoever closed it (the server's
        # handler always does): no wrapper stream, so the servers get the
        # trio.SocketStream they expect.
        self._streams = {s for s in self._streams if s.socket.fileno() != -1}

    @property
    def open(self) -> int:
        self._prune()
        return len(self._streams)

    def full(self) -> bool:
        if len(self._streams) < self.cap:
            return False
        self._prune()
        return len(self._streams) >= self.cap

    def add(self, stream: trio.SocketStream) -> None:
        self._streams.add(stream)

    @property
    def refusing(self) -> int:
        """Refused connections still open for their client to read the 503."""
        return len(self._lingering)

    def linger(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        """Keep a refused ``stream`` open until its client closes, for at most
        ``_REFUSAL_LINGER_S``, and at most :data:`MAX_REFUSING` of them: closing
        a socket with unread data resets it, and the client would see a reset
        instead of the 503."""
        if len(self._lingering) >= MAX_REFUSING:
            self._lingering.popleft().cancel()
        scope = trio.CancelScope(deadline=trio.current_time() + _REFUSAL_LINGER_S)
        self._lingering.append(scope)
        nursery.start_soon(self._drain_and_close, stream, scope)

    async def _drain_and_close(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        try:
            with scope:
                while await stream.receive_some(4096):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            with contextlib.suppress(ValueError):  # already let go of as the oldest
                self._lingering.remove(scope)
            await stream.aclose()

    def statistics(self) -> dict[str, int]:
        return {
            "open": self.open,
            "max": self.cap,
            "refused": self.refused,
            "accept_errors": self.accept_errors,
        }


class BoundedListener(trio.abc.Listener[trio.SocketStream]):
    """A :class:`trio.SocketListener` that keeps to a :class:`ConnectionCap`
    and waits out EMFILE; what it refuses it answers with ``refusal``, in
    tasks of the ``refusals`` nursery."""

    def __init__(
        self,
        inner: trio.SocketListener,
        cap: ConnectionCap,
        refusals: trio.Nursery,
        refusal: bytes,
    ) -> None:
        self._inner = inner
        self._cap = cap
        self._refusals = refusals
        self._refusal = refusal
        self._backoff_s = _BACKOFF_INITIAL_S
        self._starved = False
        self._full_logged_at = -_LOG_EVERY_S
        self._log = logger.bind(component=cap.what)

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._inner.socket

    async def accept(self) -> trio.SocketStream:
        cap = self._cap
        while True:
            try:
                stream = await self._inner.accept()
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                await self._wait_out(exc)
                continue
            if self._starved:
                self._log.warning(
                    "accepting again after {} failed accepts", self._cap.accept_errors
                )
                self._starved = False
            self._backoff_s = _BACKOFF_INITIAL_S
            if cap.full():
                await self._refuse(stream)
                continue
            cap.add(stream)
            return stream

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _wait_out(self, exc: OSError) -> None:
        self._cap.accept_errors += 1
        if not self._starved:
            # Once per episode: the backoff below retries every second at most.
            self._log.error(
                "accept failed: {} (limit {}); retrying with backoff until descriptors free up",
                exc.strerror or exc,
                descriptor_limit(),
            )
            self._starved = True
        await trio.sleep(self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, _BACKOFF_MAX_S)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        cap = self._cap
        cap.refused += 1
        now = trio.current_time()
        if now - self._full_logged_at >= _LOG_EVERY_S:
            self._full_logged_at = now
            self._log.warning(
                "{} connections open ({}): refusing new ones ({} refused so far)",
                cap.cap,
                cap.setting,
                cap.refused,
            )
        with trio.move_on_after(_REFUSAL_SEND_S):
            try:
                await stream.send_all(self._refusal)
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        cap.linger(stream, self._refusals)


# --------------------------------------------------------------------------- the process


def descriptor_limit() -> int:
    """The soft ``RLIMIT_NOFILE``: what the process may hold open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 2**31 - 1


def open_descriptors() -> int | None:
    """Descriptors the process holds now; None when none is left to look (EMFILE)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir used
    except OSError:
        return None


def raise_descriptor_limit() -> tuple[int, int]:
    """Lift the soft descriptor limit to the hard one (shells and containers
    often start at 1024 under a hard limit far above); returns (before, after).

    The limit belongs to the process, not to one service: this is for the
    process's start, where the command runs it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel refuses more than fs.nr_open
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            return soft, soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft, soft
        return soft, target
    return soft, soft


@dataclass(frozen=True, slots=True)
class DescriptorBudget:
    """What the servers' caps and the reserve add up to, against the limit."""

    parts: dict[str, int]
    limit: int

    @property
    def needed(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.needed <= self.limit

    def describe(self) -> str:
        terms = " + ".join(f"{name} {count}" for name, count in self.parts.items())
        return f"{terms} = {self.needed}"


def descriptor_budget(caps: dict[str, int], limit: int | None = None) -> DescriptorBudget:
    """``caps`` (server name: its connection cap, refusals in flight included)
    plus :data:`RESERVED_DESCRIPTORS`, against ``limit`` (default: the process's)."""
    parts = {**caps, "reserve": RESERVED_DESCRIPTORS}
    return DescriptorBudget(parts, descriptor_limit() if limit is None else limit)
