"""One stream for the agents: ZeroMQ's own XSUB/XPUB proxy in front of several instances.

Several RTAP instances (``rtap@N`` on one host, or several hosts) each publish
their events and transcripts on their own ports. An agent that wants all of
them would connect a SUB to every one and learn of each new instance; behind
``python -m rtap_trio proxy`` it connects once, where a single instance's
agent already connects (6552, 6553), and receives every instance's messages.

Why ZeroMQ's proxy and nothing of our own: ``zmq_proxy_steerable`` (libzmq,
in C, on its own thread) already forwards messages downstream and
subscriptions upstream, deduplicates subscriptions across agents, reconnects
to an instance that restarts and drops at the high-water mark for a slow agent
alone. RTAP's rule is that nothing re-implements what ZeroMQ's proxy already
does, so this module only plans the endpoints, checks them, binds, and starts
and stops one proxy thread per stream. The control socket's ``TERMINATE`` is
the proxy's own clean stop: queued messages are flushed for
:data:`LINGER_MS` and the process exits 0.

Messages pass unchanged: each carries its ``session_id`` (service-level events
carry the instance's service id there); catch-up stays per instance
(docs/protocol.md, "Many instances behind one proxy").
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import zmq

from .errors import ConfigError, PortInUseError, RTAPError
from .settings import OutputSettings
from .settings.instances import INSTANCE_PORT_STEP, MAX_INSTANCE

__all__ = [
    "DEFAULT_BIND_HOST",
    "STREAMS",
    "StreamPlan",
    "ZmqProxy",
    "check_endpoint",
    "describe",
    "instance_endpoints",
    "make_plans",
    "run_proxy",
]

#: The streams an agent subscribes to, in the order their ports come.
STREAMS = ("events", "transcripts")
#: Where the proxy binds by default: loopback, as every RTAP port.
DEFAULT_BIND_HOST = "127.0.0.1"
#: How long, at the stop, messages already queued for an agent may take to go
#: out (as RTAP's own publishers flush for 0.5 s).
LINGER_MS = 500
#: How often the main thread looks at whether a proxy thread died while it
#: waits for a signal.
_POLL_S = 1.0
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def _default_port(stream: str) -> int:
    default = OutputSettings.model_fields[f"zmq_pub_port_{stream}"].default
    assert isinstance(default, int)
    return default


def instance_endpoints(instance: int, host: str) -> dict[str, str]:
    """Where instance ``instance`` (0-99) on ``host`` publishes each stream: every
    port + 10 x N, as ``--instance N`` moves them (settings/instances.py)."""
    if not 0 <= instance <= MAX_INSTANCE:
        raise ConfigError("command line", "--instance", f"{instance}: expected 0 to {MAX_INSTANCE}")
    offset = INSTANCE_PORT_STEP * instance
    return {stream: f"tcp://{host}:{_default_port(stream) + offset}" for stream in STREAMS}


def check_endpoint(option: str, endpoint: str, *, bind: bool = False) -> str:
    """``endpoint`` when it is ``tcp://HOST:PORT`` or ``ipc://PATH``; a
    :class:`ConfigError` naming ``option`` otherwise.

    libzmq itself refuses most bad endpoints, but takes ``tcp://host:99999`` to
    connect and retries it for ever: a typo would be a proxy that never
    forwards. A bind may ask for port 0 (any free port).
    """
    scheme, separator, address = endpoint.partition("://")
    if separator and scheme == "ipc" and address:
        return endpoint
    if separator and scheme == "tcp":
        host, colon, port = address.rpartition(":")
        lowest = 0 if bind else 1
        if colon and host and port.isdigit() and lowest <= int(port) <= 65535:
            return endpoint
    raise ConfigError(
        "command line", option, f"{endpoint!r}: expected tcp://HOST:PORT or ipc://PATH"
    )


_LOCAL_HOSTS = frozenset({"*", "0.0.0.0", "::", "[::]", "localhost", "[::1]", "::1"})


def _local(host: str) -> bool:
    return host in _LOCAL_HOSTS or host.startswith("127.")


def _same_place(upstream: str, bind: str) -> bool:
    """``upstream`` may reach what ``bind`` binds (loopback and wildcards taken as one host)."""
    if upstream == bind:
        return True
    up_scheme, _, up_address = upstream.partition("://")
    bind_scheme, _, bind_address = bind.partition("://")
    if up_scheme != "tcp" or bind_scheme != "tcp":
        return False
    up_host, _, up_port = up_address.rpartition(":")
    bind_host, _, bind_port = bind_address.rpartition(":")
    return up_port == bind_port and (
        up_host == bind_host or (_local(up_host) and _local(bind_host))
    )


def make_plans(upstream: dict[str, list[str]], binds: dict[str, str]) -> list[StreamPlan]:
    """One :class:`StreamPlan` per stream of :data:`STREAMS`, checked.

    Every stream needs an instance to forward from, and none may forward from
    where the proxy itself binds: an XSUB connected to its own XPUB would send
    every message round again, for ever (instance 0 on this host, which binds
    the defaults 6552 and 6553, is the likely slip).
    """
    for stream in STREAMS:
        if not upstream.get(stream):
            raise ConfigError(
                "command line",
                f"--{stream}",
                "no instance to forward from: give --instance N, or --events and"
                " --transcripts endpoints",
            )
    plans: list[StreamPlan] = []
    for stream in STREAMS:
        for endpoint in upstream[stream]:
            for name, bind in binds.items():
                if _same_place(endpoint, bind):
                    raise ConfigError(
                        "command line",
                        f"--{stream}",
                        f"{endpoint} is where the proxy binds (--bind-{name}): it would forward"
                        " its own messages for ever; bind the proxy elsewhere",
                    )
        # The same endpoint twice would deliver each of its messages twice.
        plans.append(StreamPlan(stream, tuple(dict.fromkeys(upstream[stream])), binds[stream]))
    return plans


@dataclass(frozen=True)
class StreamPlan:
    """One stream's proxy: the instances' PUB endpoints it connects an XSUB to,
    and the endpoint its XPUB binds for the agents."""

    name: str
    upstream: tuple[str, ...]
    bind: str


def _why(exc: zmq.ZMQError) -> str:
    """libzmq's reason, without the address pyzmq appends (the line names it already)."""
    return zmq.strerror(exc.errno) if exc.errno is not None else str(exc)


class _ProxyThread(threading.Thread):
    """One stream's ``zmq_proxy_steerable``, until its control pair says TERMINATE."""

    def __init__(
        self,
        plan: StreamPlan,
        frontend: zmq.Socket[bytes],
        backend: zmq.Socket[bytes],
        control: zmq.Socket[bytes],
    ) -> None:
        super().__init__(name=f"zmq-proxy-{plan.name}", daemon=True)
        self.plan = plan
        self._sockets = (frontend, backend, control)
        #: why the proxy returned on its own, if it did
        self.error: BaseException | None = None

    def run(self) -> None:
        frontend, backend, control = self._sockets
        try:
            zmq.proxy_steerable(frontend, backend, None, control)
        except BaseException as exc:  # the main thread reports it
            self.error = exc


class ZmqProxy:
    """One steerable XSUB/XPUB proxy per stream, each in a thread of its own.

    :meth:`open` connects and binds everything first (so a bad endpoint or a
    taken port fails there, before any thread starts), then starts the proxies
    and returns the bound endpoints; :meth:`stop` sends each proxy
    ``TERMINATE`` and joins it; :meth:`close` frees the sockets.
    """

    def __init__(self, plans: Sequence[StreamPlan]) -> None:
        self._plans = list(plans)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sockets: list[zmq.Socket[bytes]] = []
        #: (the proxy's thread, our end of its control pair)
        self._threads: list[tuple[_ProxyThread, zmq.Socket[bytes]]] = []

    def open(self) -> dict[str, str]:
        """Connect every XSUB, bind every XPUB, start the proxies; the bound endpoints."""
        bound: dict[str, str] = {}
        for index, plan in enumerate(self._plans):
            frontend = self._socket(zmq.XSUB)
            for endpoint in plan.upstream:
                try:
                    frontend.connect(endpoint)
                except zmq.ZMQError as exc:
                    raise ConfigError(
                        "command line", f"--{plan.name}", f"{endpoint}: {_why(exc)}"
                    ) from None
            backend = self._socket(zmq.XPUB)
            backend.setsockopt(zmq.LINGER, LINGER_MS)
            bound[plan.name] = self._bind(backend, plan)
            # The proxy's thread owns one end of the pair; the other sends TERMINATE.
            address = f"inproc://rtap-proxy-control-{index}"
            theirs, ours = self._socket(zmq.PAIR), self._socket(zmq.PAIR)
            theirs.bind(address)
            ours.connect(address)
            self._threads.append((_ProxyThread(plan, frontend, backend, theirs), ours))
        for thread, _ in self._threads:
            thread.start()
        return bound

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        socket = self._context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        self._sockets.append(socket)
        return socket

    @staticmethod
    def _bind(backend: zmq.Socket[bytes], plan: StreamPlan) -> str:
        try:
            backend.bind(plan.bind)
        except zmq.ZMQError as exc:
            host, _, port = plan.bind.partition("://")[2].rpartition(":")
            raise PortInUseError(
                f"zmq proxy {plan.name}",
                host or plan.bind,
                int(port) if port.isdigit() else 0,
                _why(exc),
            ) from None
        endpoint = backend.getsockopt(zmq.LAST_ENDPOINT)
        assert isinstance(endpoint, bytes)
        return endpoint.decode()

    def failed(self) -> _ProxyThread | None:
        """A proxy whose thread ended without being told to."""
        return next((thread for thread, _ in self._threads if not thread.is_alive()), None)

    def stop(self) -> None:
        """TERMINATE every proxy and wait for its thread."""
        for thread, control in self._threads:
            if thread.is_alive():
                control.send(b"TERMINATE")
        for thread, _ in self._threads:
            if thread.ident is not None:  # started: open() may have failed before
                thread.join()
        self._threads.clear()

    def close(self) -> None:
        """Close every socket (the agents' after :data:`LINGER_MS`) and the context."""
        self.stop()
        for socket in self._sockets:
            socket.close()
        self._sockets.clear()
        self._context.term()


def run_proxy(
    plans: Sequence[StreamPlan],
    *,
    ready: Callable[[dict[str, str]], None] | None = None,
    signals: Iterable[signal.Signals] = _STOP_SIGNALS,
) -> int:
    """Run the proxies until SIGINT or SIGTERM; 0 on such a stop.

    The stop signals are blocked in this thread before ZeroMQ starts its
    threads (which inherit the mask), then taken synchronously: no handler
    runs inside a blocking libzmq call, and the stop is the proxies' own
    ``TERMINATE``. ``ready`` is told the bound endpoints once they serve.
    """
    wanted = set(signals)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    proxy = ZmqProxy(plans)
    try:
        bound = proxy.open()
        if ready is not None:
            ready(bound)
        while signal.sigtimedwait(wanted, _POLL_S) is None:
            dead = proxy.failed()
            if dead is not None:
                why = dead.error or "it returned without being told to"
                raise RTAPError(f"zmq proxy {dead.plan.name} stopped: {why}")
        return 0
    finally:
        proxy.close()
        # A second signal during the stop is taken here, not by the default
        # action once unblocked: the stop it asks for is under way.
        while signal.sigtimedwait(wanted, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def describe(bound: dict[str, str], plans: Sequence[StreamPlan]) -> str:
    """The line printed once the proxies serve: where each stream is, from where."""
    return json.dumps(
        {plan.name: {"bound": bound[plan.name], "upstream": list(plan.upstream)} for plan in plans}
    )
