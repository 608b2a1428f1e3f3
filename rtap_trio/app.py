"""The service: loads the shared engines, binds the outputs, runs its sessions.

Nesting gives the shutdown order. The outer nursery holds the servers
(telemetry, WebSocket with its ``/v1/audio`` sessions) and the signal watcher;
inside it the emitters; inside those the local session. On SIGINT/SIGTERM
every session stops capturing and drains into the outbox, the outbox closes,
the emitters flush and end, then the servers are cancelled. A deadline of
``supervisor.shutdown_grace_s`` bounds all of it.

The service ends when its local session's source ends (a replayed file), or
on a signal; with ``--source none`` it serves network sessions until a signal.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
import zmq
from loguru import logger

from .access import AccessPolicy
from .audio import AudioSource, source_from_settings
from .connections import (
    MAX_REFUSING,
    WEBSOCKET_HANDSHAKE_ROOM,
    DescriptorBudget,
    descriptor_budget,
    descriptor_limit,
    open_descriptors,
    raise_descriptor_limit,
)
from .console import console_routes
from .endpoints import AUDIO_PATH, AudioWebSocketEndpoint, WyomingServer, openai_routes
from .errors import PortInUseError, RestartsExhaustedError, find_error
from .health import count_trio_tasks
from .http_port import http_connections, serve_http_port
from .metrics import Metrics
from .pipeline import Engines
from .session import PipelineState
from .sessions import EndReason, FaultHook, Session, SessionManager, new_session_id
from .settings import Settings, is_loopback
from .stages.language import LanguageAnalyzer
from .standby import StandbyRelay
from .stt import ABORT_WAIT_S, load_backend
from .supervisor import RestartPolicy, Supervisor
from .transport.catchup import ZmqCatchup
from .transport.outbox import Outbox
from .transport.schemas import EventType, Stream
from .transport.websocket import WebSocketServer
from .transport.zmq import ZmqPublisher
from .vad import load_vad

__all__ = ["BoundPorts", "Service", "is_loopback"]

_T = TypeVar("_T")


#: Time the emitters get, after the sessions have drained, to send what is queued.
_FLUSH_S = 0.25


@dataclass(slots=True)
class BoundPorts:
    """Ports as bound: differ from the settings when those ask for port 0."""

    zmq_events: int | None = None
    zmq_transcripts: int | None = None
    websocket: int | None = None
    telemetry: int | None = None
    wyoming: int | None = None
    zmq_catchup: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {
            "zmq_events": self.zmq_events,
            "zmq_transcripts": self.zmq_transcripts,
            "zmq_catchup": self.zmq_catchup,
            "websocket": self.websocket,
            "telemetry": self.telemetry,
            "wyoming": self.wyoming,
        }


@dataclass(slots=True)
class _Runtime:
    started_at: float = field(default_factory=time.time)
    stopping: bool = False
    running: bool = False


class Service:
    """One RTAP service. ``await service.run()`` until its local source ends or a signal."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: AudioSource | None = None,
        service_id: str | None = None,
        handle_signals: bool = True,
        fault_hook: FaultHook | None = None,
    ) -> None:
        """``source`` replaces the local source the settings name (tests, replay).

        ``fault_hook`` is awaited as each supervised task (re)starts, the
        service's own and every session's: tests use it to prove recovery
        without touching the engines.
        """
        self.settings = settings
        #: names the service on its own events (service_started, ...) and in logs
        self.service_id = service_id or new_session_id()
        self.metrics = Metrics()
        on_drop = lambda name: self.metrics.messages_dropped.labels(name).inc()  # noqa: E731
        #: what subscribers see: ZeroMQ, WebSocket, the console, catch-up
        self.outbox = Outbox(on_drop=on_drop, history=settings.output.catchup_size)
        # A standby's sessions (and its own events) publish into an outbox of
        # their own; its relay decides what reaches subscribers.
        self._internal = (
            Outbox(on_drop=on_drop, history=1) if settings.standby.enabled else self.outbox
        )
        self._events = self._internal.session(self.service_id)
        #: the standby's relay; None on a primary
        self.standby: StandbyRelay | None = None
        self.supervisor = Supervisor(
            RestartPolicy.from_settings(settings.supervisor),
            self._crashed,
            before_start=(lambda task: fault_hook(None, task)) if fault_hook else None,
        )
        self.ports = BoundPorts()
        #: the sessions; None until the engines are loaded
        self.sessions: SessionManager | None = None
        #: the session on the local source; None with ``--source none``
        self.local_session: Session | None = None
        self._source = source
        self._fault_hook = fault_hook
        self._handle_signals = handle_signals
        self._runtime = _Runtime()
        self._drain_scope = trio.CancelScope()
        self._stopped = trio.Event()
        self._zmq_context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._publishers: list[tuple[ZmqPublisher, Stream]] = []
        self._catchup: ZmqCatchup | None = None
        self._servers_scope: trio.CancelScope | None = None
        self._engines: Engines | None = None
        self._websocket: WebSocketServer | None = None
        self._wyoming: WyomingServer | None = None
        self._http_shutdown = trio.Event()
        self._http_closed = trio.Event()
        #: the HTTP port's open connections against http.max_connections
        self._http_connections = http_connections(settings.http)
        #: a service task that crashed past its restart policy: raised after the drain
        self._failure: RestartsExhaustedError | None = None

    # ------------------------------------------------------------------ running

    async def run(
        self, *, task_status: trio.TaskStatus[BoundPorts] = trio.TASK_STATUS_IGNORED
    ) -> None:
        log = logger.bind(component="service")
        settings = self.settings
        for line in settings.deprecations:
            log.warning(line)
        self._warn_if_exposed(log)
        self.check_descriptors()
        try:
            async with trio.open_nursery() as servers:
                self._servers_scope = servers.cancel_scope
                if self._handle_signals:
                    servers.start_soon(self._watch_signals)
                if settings.http.enabled:
                    routes = console_routes(self._console_config, self.outbox, self.service_id)
                    if settings.openai.enabled:
                        routes += openai_routes(settings, self._serving_sessions)
                    self.ports.telemetry = await servers.start(
                        self._critical,
                        "telemetry",
                        lambda task_status: serve_http_port(
                            settings.http,
                            self.metrics,
                            self.health,
                            routes,
                            resource_interval_s=settings.telemetry.resource_interval_s,
                            policy=AccessPolicy(settings.security, settings.http.bind_address),
                            connections=self._http_connections,
                            shutdown=self._http_shutdown,
                            task_status=task_status,
                        ),
                    )
                websocket = self._websocket = self._websocket_server()
                if websocket is not None:
                    self.ports.websocket = await servers.start(
                        self._critical, "websocket", websocket.run
                    )
                if settings.wyoming.enabled:
                    wyoming = self._wyoming = WyomingServer(
                        settings, self._serving_sessions, self.metrics
                    )
                    self.ports.wyoming = await servers.start(self._critical, "wyoming", wyoming.run)
                publishers = await self._retry_bind("zmq", self._bind_zmq)
                if publishers and settings.output.zmq_catchup_port is not None:
                    catchup = self._catchup = ZmqCatchup(
                        settings.output.bind_address,
                        settings.output.zmq_catchup_port,
                        self.outbox,
                        self.service_id,
                        settings.output,
                    )
                    self.ports.zmq_catchup = await servers.start(
                        self._critical, "zmq-catchup", catchup.run
                    )
                engines, source = await self._load(log)
                self._engines = engines
                sessions = self.sessions = SessionManager(
                    settings,
                    engines=engines,
                    outbox=self._internal,
                    metrics=self.metrics,
                    fault_hook=self._fault_hook,
                )
                async with trio.open_nursery() as emitters:
                    for publisher, stream in publishers:
                        subscription = self.outbox.subscribe(
                            f"zmq-{stream.value}", (stream,), settings.pipeline.output_queue_size
                        )
                        emitters.start_soon(
                            self._critical,
                            f"zmq-{stream.value}",
                            lambda task_status, p=publisher, s=subscription: self._started(
                                task_status, p.run(s)
                            ),
                        )
                    if settings.standby.enabled:
                        self.standby = StandbyRelay(
                            settings.standby,
                            self._zmq(),
                            self._internal,
                            self.outbox,
                            self.metrics,
                            self.service_id,
                        )
                        await emitters.start(self._critical, "standby", self.standby.run)
                    if settings.output.heartbeat_interval_s > 0:
                        emitters.start_soon(self._heartbeat, settings.output.heartbeat_interval_s)
                    with self._drain_scope:
                        async with trio.open_nursery() as local:
                            if source is not None:
                                await local.start(self._run_local, sessions, source)
                            self._announce(source, engines, log)
                            self._runtime.running = True
                            task_status.started(self.ports)
                            await self._stopped.wait()
                            sessions.stop_all(EndReason.SERVICE_STOPPING)
                            await sessions.wait_idle()
                    if self._drain_scope.cancelled_caught:
                        log.warning("shutdown grace period passed; in-flight work was cancelled")
                    # Drained, or cut off at the deadline: tell subscribers, then
                    # give the emitters a moment to flush what is queued.
                    self._events.event(EventType.SERVICE_STOPPING)
                    if self.standby is not None:  # what it relays, then the end
                        self._internal.close()
                        with trio.move_on_after(_FLUSH_S):
                            await self.standby.drained.wait()
                    self.outbox.close()
                    emitters.cancel_scope.deadline = trio.current_time() + _FLUSH_S
                    if websocket is not None:
                        with trio.move_on_after(_FLUSH_S):
                            await websocket.drained()
                        websocket.close()
                    # WebSockets on the HTTP port (OpenAI Realtime) say goodbye
                    # too: hypercorn stops taking connections and lets these end.
                    self._http_shutdown.set()
                    if settings.http.enabled:
                        with trio.move_on_after(_FLUSH_S * 4):
                            await self._http_closed.wait()
                servers.cancel_scope.cancel()
        finally:
            # Whatever ended the run (a stop while the models loaded, a fatal
            # error), subscribers such as the --print printer see the end.
            self.outbox.close()
            if self._engines is not None:
                await self._engines.stt.aclose()
            for publisher, _ in self._publishers:
                publisher.close()
            if self._zmq_context is not None:
                self._zmq_context.term()
        log.info("RTAP stopped")
        if self._failure is not None:
            raise self._failure

    async def _critical(
        self,
        name: str,
        fn: Callable[..., Awaitable[object]],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """A service task under the supervisor; when it crashes past its restart
        policy, the service stops gracefully (sessions drain, what is said is
        published) and then exits with the error, for systemd or podman to
        restart it: the design's "critical errors -> graceful restart"."""
        try:
            await self._retry_bind(
                name, lambda: self.supervisor.supervise_started(name, fn, task_status=task_status)
            )
            if name == "telemetry":  # the HTTP server returns after its graceful shutdown
                self._http_closed.set()
        except RestartsExhaustedError as exc:
            if self._failure is None:
                self._failure = exc
            logger.bind(component="service").critical(
                "{}: stopping gracefully, to be restarted", exc
            )
            self._events.event(EventType.SERVICE_FAILING, task=name, error=str(exc)[:500])
            self.stop()

    async def _retry_bind(self, name: str, start: Callable[[], Awaitable[_T]]) -> _T:
        """``start()``, again with backoff while its port is taken, up to ``bind_retry_s``."""
        policy = self.supervisor.policy
        deadline = trio.current_time() + self.settings.supervisor.bind_retry_s
        attempt = 0
        while True:
            try:
                return await start()
            except Exception as exc:  # a server binds inside its nursery: maybe in a group
                taken = find_error(exc, PortInUseError)
                attempt += 1
                delay = policy.backoff(attempt)
                if taken is None or trio.current_time() + delay > deadline:
                    raise
                logger.bind(component="service").warning("{}: retrying in {:.1f}s", taken, delay)
                await trio.sleep(delay)

    @staticmethod
    async def _started(task_status: trio.TaskStatus[Any], work: Awaitable[object]) -> None:
        task_status.started()
        await work

    async def _run_local(
        self,
        sessions: SessionManager,
        source: AudioSource,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The local source as a session; when it ends (a file was played), so does the service."""
        session = self.local_session = sessions.open("local")
        try:
            await session.run(source, task_status=task_status)
        finally:
            self.stop()

    def _websocket_server(self) -> WebSocketServer | None:
        settings = self.settings
        if not settings.output.websocket_enabled:
            return None
        server = WebSocketServer(
            settings.output,
            self.outbox,
            self.metrics,
            security=settings.security,
            service_id=self.service_id,
            send_budget_s=settings.pipeline.emit_budget_ms / 1000,
        )
        server.route(AUDIO_PATH, self._serve_audio)
        return server

    def _serving_sessions(self) -> SessionManager | None:
        """The session manager while new sessions are taken (not starting, not stopping)."""
        if not self._runtime.running or self._runtime.stopping:
            return None
        return self.sessions

    async def _serve_audio(self, ws: Any, client: int) -> None:
        if self.sessions is None or not self._runtime.running or self._runtime.stopping:
            state = "stopping" if self._runtime.stopping else "starting"
            with trio.move_on_after(1.0):
                await ws.aclose(code=1013, reason=f"the service is {state}")
            return
        await AudioWebSocketEndpoint(self.settings, self.sessions)(ws, client)

    def _announce(self, source: AudioSource | None, engines: Engines, log: Any) -> None:
        name = source.name if source is not None else "none"
        self._events.event(
            EventType.SERVICE_STARTED,
            source=name,
            model=engines.stt.name,
            stt_device=engines.stt.device,
            stt_device_fallback=engines.stt.device_fallback,
            ports=self.ports.as_dict(),
            profile=self.settings.environment,
            local_session_id=self.local_session.id if self.local_session else None,
        )
        log.info(
            "RTAP running: profile {} source {} model {} ports {}",
            self.settings.environment,
            name,
            engines.stt.name,
            self.ports.as_dict(),
        )

    def _warn_if_exposed(self, log: Any) -> None:
        # The WebSocket and HTTP servers check the token (settings refuse an
        # exposed address without one); ZeroMQ and Wyoming have no place for one.
        output = self.settings.output
        unauthenticated = [
            what
            for what, enabled in (
                ("ZeroMQ", output.zmq_enabled),
                ("Wyoming", self.settings.wyoming.enabled),
            )
            if enabled
        ]
        if unauthenticated and not is_loopback(output.bind_address):
            log.warning(
                "{} on {} without authentication (the protocol has none): anyone who can "
                "reach this address can read transcripts{}; firewall it to the hosts that need it",
                " and ".join(unauthenticated),
                output.bind_address,
                " and stream audio in" if self.settings.wyoming.enabled else "",
            )

    def connection_caps(self) -> dict[str, int]:
        """Each enabled server's connection cap, refusals in flight included."""
        settings = self.settings
        caps: dict[str, int] = {}
        if settings.http.enabled:
            caps["http"] = settings.http.max_connections + MAX_REFUSING
        if settings.output.websocket_enabled:
            caps["websocket"] = (
                settings.output.websocket_max_clients + WEBSOCKET_HANDSHAKE_ROOM + MAX_REFUSING
            )
        if settings.wyoming.enabled:
            caps["wyoming"] = settings.wyoming.max_connections
        if settings.output.zmq_enabled:
            zmq_ports = 2 + (settings.output.zmq_catchup_port is not None)
            caps["zmq"] = zmq_ports * (settings.output.zmq_max_connections + MAX_REFUSING)
        return caps

    def check_descriptors(self) -> DescriptorBudget:
        """Lift the soft descriptor limit to the hard one; warn if the caps do
        not fit under it (then a flood ends in EMFILE, which the servers wait
        out, instead of in a refusal). The limit is the process's: the start
        of :meth:`run` calls this."""
        log = logger.bind(component="service")
        before, after = raise_descriptor_limit()
        if after != before:
            log.info("descriptor limit raised from {} to {}", before, after)
        budget = descriptor_budget(self.connection_caps())
        if not budget.fits:
            log.warning(
                "connection caps need {} descriptors ({}) but the limit is {}: lower "
                "the caps or raise the limit (LimitNOFILE, ulimit -n)",
                budget.needed,
                budget.describe(),
                budget.limit,
            )
        return budget

    def _console_config(self) -> dict[str, Any]:
        """What the console page needs to connect: ports as bound."""
        return {
            "service_id": self.service_id,
            "profile": self.settings.environment,
            "websocket_port": self.ports.websocket,
            "audio_path": AUDIO_PATH,
            "token_required": self.settings.security.token is not None,
            "heartbeat_interval_s": self.settings.output.heartbeat_interval_s,
            "sample_rate": 16_000,
            "wake_word": self.settings.wakeword.enabled,
        }

    async def _heartbeat(self, interval_s: float) -> None:
        """A ``heartbeat`` event every ``interval_s`` until the stop begins: a
        subscriber (the standby, an agent, the console) that stops hearing it
        knows the service is gone even when nobody speaks."""
        started = trio.current_time()
        while not self._stopped.is_set():
            sessions = self.sessions.statistics() if self.sessions is not None else []
            self._events.event(
                EventType.HEARTBEAT,
                uptime_s=round(trio.current_time() - started, 1),
                sessions=len(sessions),
                next_seq=self.outbox.statistics().published,
                role="standby" if self.settings.standby.enabled else "primary",
            )
            with trio.move_on_after(interval_s):
                await self._stopped.wait()

    def stop(self) -> None:
        """Begin a graceful stop: capture ends, in-flight work drains within the grace period."""
        if self._runtime.stopping:
            return
        self._runtime.stopping = True
        # A transcription cut off at the deadline takes up to ABORT_WAIT_S to
        # stop, and the emitters' flush comes after: both fit in the grace period.
        grace = self.settings.supervisor.shutdown_grace_s - _FLUSH_S - ABORT_WAIT_S
        self._drain_scope.deadline = trio.current_time() + max(grace, 0.0)
        self._stopped.set()
        if self.sessions is None and self._servers_scope is not None:
            self._servers_scope.cancel()  # still loading: nothing to drain

    # ------------------------------------------------------------------ pieces

    async def _bind_zmq(self) -> list[tuple[ZmqPublisher, Stream]]:
        out = self.settings.output
        if not out.zmq_enabled:
            return []
        await trio.lowlevel.checkpoint()
        for publisher, _ in self._publishers:  # a retry: bind both again
            publisher.close()
        self._publishers = []
        for what, port, stream in (
            ("events", out.zmq_pub_port_events, Stream.EVENTS),
            ("transcripts", out.zmq_pub_port_transcripts, Stream.TRANSCRIPTS),
        ):
            publisher = ZmqPublisher(
                what, out.bind_address, port, out.zmq_send_hwm, out.zmq_max_connections
            )
            self._publishers.append((publisher, stream))
        self.ports.zmq_events = self._publishers[0][0].port
        self.ports.zmq_transcripts = self._publishers[1][0].port
        return self._publishers

    def _zmq(self) -> zmq.Context[zmq.Socket[bytes]]:
        if self._zmq_context is None:
            self._zmq_context = zmq.Context()
        return self._zmq_context

    async def _load(self, log: Any) -> tuple[Engines, AudioSource | None]:
        """Models and the audio source, loaded side by side; any failure ends the start."""
        settings = self.settings
        source = self._source or source_from_settings(settings.audio)
        results: dict[str, Any] = {}

        async def load(name: str, fn: Callable[[], Any]) -> None:
            results[name] = await fn()

        started = time.perf_counter()
        log.info("loading engines and opening the audio source")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load, "stt", lambda: load_backend(settings.stt))
            nursery.start_soon(load, "analyzer", lambda: LanguageAnalyzer.load(settings.language))
            nursery.start_soon(
                load,
                "vad",
                lambda: trio.to_thread.run_sync(load_vad, settings.vad, settings.audio.sample_rate),
            )
            if source is not None:
                nursery.start_soon(source.open)
        log.info("engines loaded in {:.2f}s", time.perf_counter() - started)
        stt = results["stt"]
        self.metrics.stt_device_fallback.set(1 if stt.device_fallback else 0)
        return Engines(stt=stt, analyzer=results["analyzer"], vad=results["vad"]), source

    async def _watch_signals(self) -> None:
        log = logger.bind(component="service")
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self._runtime.stopping:
                    log.info("{} received: stopping", name)
                    self.stop()
                elif self._servers_scope is not None:
                    # A second signal: the user will not wait for the drain.
                    log.warning("{} received again: stopping now", name)
                    self._servers_scope.cancel()

    def _crashed(self, task: str, exc: BaseException) -> None:
        self.metrics.errors.labels(task, type(exc).__name__).inc()
        self.metrics.task_restarts.labels(task).inc()
        self._events.event(
            EventType.STAGE_ERROR, stage=task, error_type=type(exc).__name__, error=str(exc)[:500]
        )

    # ------------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        tasks = {
            name: {"state": stats.state.value, "starts": stats.starts, "crashes": stats.crashes}
            for name, stats in self.supervisor.statistics().items()
        }
        failed = [name for name, t in tasks.items() if t["state"] == "failed"]
        local = self.local_session
        if local is not None:
            failed += [
                name
                for name, stats in local.supervisor.statistics().items()
                if stats.state.value == "failed"
            ]
        degraded = bool(failed) or (local is not None and local.state.state is PipelineState.ERROR)
        sessions = self.sessions.statistics() if self.sessions is not None else []
        by_kind: dict[str, int] = {}
        for session in sessions:
            by_kind[session.kind] = by_kind.get(session.kind, 0) + 1
        outbox = self.outbox.statistics()
        stt = self._engines.stt.statistics() if self._engines is not None else None
        if not self._runtime.running:
            status = "starting"
        elif self._runtime.stopping:
            status = "stopping"
        else:
            status = "degraded" if degraded else "ok"
        return {
            "status": status,
            "service_id": self.service_id,
            "state": local.state.state.value if local else None,
            "source": local.statistics().source if local else "none",
            "uptime_s": round(time.time() - self._runtime.started_at, 1),
            "ports": self.ports.as_dict(),
            "tasks": tasks,
            "failed_tasks": failed,
            "sessions": {
                "active": len(sessions),
                "max": self.settings.sessions.max,
                "by_kind": by_kind,
                "list": [
                    {"session_id": s.session_id, "kind": s.kind, "state": s.state.value}
                    for s in sessions
                ],
            },
            "stt": None
            if stt is None or self._engines is None
            else {
                "model": self._engines.stt.name,
                "device": self._engines.stt.device,
                "device_fallback": self._engines.stt.device_fallback,
                "engines": stt.engines,
                "busy": stt.busy,
                "waiting": stt.waiting,
            },
            "outbox": {"published": outbox.published, "subscribers": outbox.subscribers},
            "standby": None
            if self.standby is None
            else dataclasses.asdict(self.standby.statistics()),
            "runtime": {"trio_tasks": count_trio_tasks(), "threads": threading.active_count()},
            "connections": self._connections_report(),
            "descriptors": {
                "open": open_descriptors(),
                "limit": descriptor_limit(),
                "budget": descriptor_budget(self.connection_caps()).needed,
            },
        }

    def _connections_report(self) -> dict[str, dict[str, int | bool]]:
        """Open connections per server against its cap: ``saturated`` when
        new ones are being refused."""
        caps = []
        if self.settings.http.enabled:
            caps.append(self._http_connections)
        if self._websocket is not None:
            caps.append(self._websocket.connections)
        caps += [publisher.connections for publisher, _ in self._publishers]
        if self._catchup is not None:
            caps.append(self._catchup.connections)
        report: dict[str, dict[str, int | bool]] = {}
        for cap in caps:
            stats: dict[str, int | bool] = dict(cap.statistics())
            stats["saturated"] = cap.open >= cap.cap
            report[cap.what] = stats
        if self._wyoming is not None:
            limit = self.settings.wyoming.max_connections
            open_ = self._wyoming.connections
            report["wyoming"] = {"open": open_, "max": limit, "saturated": open_ >= limit}
        return report
