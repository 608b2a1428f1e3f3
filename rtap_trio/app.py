"""The service: loads the shared engines, binds the outputs, runs its sessions.

Nesting gives the shutdown order. The outer nursery holds the servers (the
HTTP port, WebSocket with its ``/v1/audio`` sessions, Wyoming, ZeroMQ
catch-up) and the signal watcher; inside it the emitters; inside those the
local session. On SIGINT/SIGTERM the service first drains its clients: it
takes no new session and ``/health`` says ``draining`` (503, so a balancer
sends new clients elsewhere), each stream ends at its next pause (its client
reconnects, through the balancer, to another instance) and each upload
finishes, for at most ``sessions.drain_timeout_s``. Then every session stops
capturing and drains into the outbox, the outbox closes, the emitters flush
and end, then the servers are cancelled. A deadline of
``supervisor.shutdown_grace_s`` bounds that part.

The service ends when its local session's source ends (a replayed file), or
on a signal; with ``--source none`` it serves network sessions until a signal.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from loguru import logger

from .access import AccessPolicy
from .audio import AudioSource, source_from_settings
from .bound_ports import BoundPorts
from .connections import ConnectionCap, DescriptorBudget
from .console import console_config, console_routes
from .critical_tasks import CriticalTasks
from .endpoints import WyomingServer, openai_routes
from .engine_loading import SttOpener, load_engines
from .errors import ConfigError, RestartsExhaustedError
from .events import ServiceFailing, ServiceStopping, StageError
from .health import (
    connections_report,
    descriptors_report,
    failed_tasks,
    runtime_report,
    service_status,
    sessions_report,
    stt_report,
    tasks_report,
)
from .http_port import http_connections, serve_http_port
from .metrics import Metrics
from .pipeline import Engines
from .service_events import announce_start, send_heartbeats
from .session_state import PipelineState
from .sessions import EndReason, FaultHook, Session, SessionManager, new_session_id
from .settings import Settings, is_loopback
from .signals import watch_signals
from .standby import StandbyRelay
from .startup_checks import check_descriptors, connection_caps, warn_if_unauthenticated
from .stt import ABORT_WAIT_S, SttPool, open_engines
from .stt_monitoring import watch_engines
from .supervisor import RestartPolicy, Supervisor
from .transport.catchup import ZmqCatchup
from .transport.outbox import Outbox
from .transport.schemas import Stream
from .transport.websocket import WebSocketServer
from .transport.zmq import ZmqPublisher
from .websocket_port import websocket_port
from .zmq_outputs import ZmqOutputs

__all__ = ["BoundPorts", "Service", "is_loopback"]

#: Time the emitters get, after the sessions have drained, to send what is queued.
_FLUSH_S = 0.25


@dataclass(slots=True)
class _Runtime:
    started_at: float = field(default_factory=time.time)
    stopping: bool = False
    running: bool = False
    #: stopping, and waiting for the clients' sessions to end (sessions.drain_timeout_s)
    draining: bool = False


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
        open_stt: SttOpener = open_engines,
    ) -> None:
        """``source`` replaces the local source the settings name (tests, replay).

        ``open_stt`` replaces how the STT engines are opened: tests and benches
        that start many services in one process lend them engines loaded once
        (:class:`rtap_trio.testing.EngineLender`; a base model's load and
        warm-up is 3.3 s of CPU).

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
        self._tasks = CriticalTasks(
            self.supervisor, settings.supervisor.bind_retry_s, self._exhausted
        )
        self.ports = BoundPorts()
        #: the sessions; None until the engines are loaded
        self.sessions: SessionManager | None = None
        #: the session on the local source; None with ``--source none``
        self.local_session: Session | None = None
        self._source = source
        self._fault_hook = fault_hook
        self._open_stt = open_stt
        self._handle_signals = handle_signals
        self._runtime = _Runtime()
        self._drain_scope = trio.CancelScope()
        self._stopped = trio.Event()
        self._zmq = ZmqOutputs(settings.output)
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
        warn_if_unauthenticated(settings)
        self.check_descriptors()
        try:
            async with trio.open_nursery() as servers:
                self._servers_scope = servers.cancel_scope
                if self._handle_signals:
                    servers.start_soon(
                        watch_signals, lambda: self._runtime.stopping, self.stop, self._stop_now
                    )
                publishers = await self._start_servers(servers)
                engines, source = await self._load()
                self._engines = engines
                sessions = self.sessions = SessionManager(
                    settings,
                    engines=engines,
                    outbox=self._internal,
                    metrics=self.metrics,
                    fault_hook=self._fault_hook,
                )
                # The default prompt is every session's unless it brings its own:
                # one the engine cannot take stops the start, not every session.
                problem = sessions.prompt_problem(settings.stt.prompt)
                if problem is not None:
                    raise ConfigError("settings", "stt.prompt", problem)
                async with trio.open_nursery() as emitters:
                    await self._start_emitters(emitters, publishers)
                    with self._drain_scope:
                        async with trio.open_nursery() as local:
                            if source is not None:
                                await local.start(self._run_local, sessions, source)
                            announce_start(
                                self._events,
                                source,
                                engines.stt,
                                self.ports.as_dict(),
                                settings.environment,
                                self.local_session,
                            )
                            self._runtime.running = True
                            task_status.started(self.ports)
                            await self._stopped.wait()
                            await self._drain(sessions)
                            self._drain_scope.deadline = trio.current_time() + self._grace_s()
                            sessions.stop_all(EndReason.SERVICE_STOPPING)
                            await sessions.wait_idle()
                    if self._drain_scope.cancelled_caught:
                        log.warning("shutdown grace period passed; in-flight work was cancelled")
                    await self._flush(emitters)
                servers.cancel_scope.cancel()
        finally:
            # Whatever ended the run (a stop while the models loaded, a fatal
            # error), subscribers such as the --print printer see the end.
            self.outbox.close()
            if self._engines is not None:
                await self._engines.stt.aclose()
            self._zmq.close()
        log.info("RTAP stopped")
        if self._failure is not None:
            raise self._failure

    async def _start_servers(self, servers: trio.Nursery) -> list[tuple[ZmqPublisher, Stream]]:
        """The HTTP port, the WebSocket, Wyoming and ZeroMQ servers, each bound
        (its port in ``self.ports``) before the next; returns the publishers."""
        settings = self.settings
        if settings.http.enabled:
            console = lambda: console_config(settings, self.service_id, self.ports.websocket)  # noqa: E731
            routes = console_routes(console, self.outbox, self.service_id)
            if settings.openai.enabled:
                routes += openai_routes(settings, self._serving_sessions)
            # Named "telemetry" (task, ports, errors) as before it served more.
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
        websocket = self._websocket = websocket_port(
            settings,
            self.outbox,
            self.metrics,
            self.service_id,
            self._serving_sessions,
            lambda: self._runtime.stopping,
        )
        if websocket is not None:
            self.ports.websocket = await servers.start(self._critical, "websocket", websocket.run)
        if settings.wyoming.enabled:
            wyoming = self._wyoming = WyomingServer(settings, self._serving_sessions, self.metrics)
            self.ports.wyoming = await servers.start(self._critical, "wyoming", wyoming.run)
        publishers = await self._tasks.retry_bind("zmq", self._bind_zmq)
        if publishers and settings.output.zmq_catchup_port is not None:
            catchup = self._catchup = ZmqCatchup(
                settings.output.bind_address,
                settings.output.zmq_catchup_port,
                self.outbox,
                self.service_id,
                settings.output,
            )
            self.ports.zmq_catchup = await servers.start(self._critical, "zmq-catchup", catchup.run)
        return publishers

    async def _start_emitters(
        self, emitters: trio.Nursery, publishers: list[tuple[ZmqPublisher, Stream]]
    ) -> None:
        """What carries the outbox out: the ZeroMQ publishers, the standby's
        relay, the heartbeat."""
        settings = self.settings
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
                self._zmq.context(),
                self._internal,
                self.outbox,
                self.metrics,
                self.service_id,
            )
            await emitters.start(self._critical, "standby", self.standby.run)
        if settings.output.heartbeat_interval_s > 0:
            emitters.start_soon(
                lambda: send_heartbeats(
                    self._events,
                    self.outbox,
                    settings.output.heartbeat_interval_s,
                    self._stopped,
                    sessions=lambda: (
                        len(self.sessions.statistics()) if self.sessions is not None else 0
                    ),
                    role="standby" if settings.standby.enabled else "primary",
                )
            )

    async def _flush(self, emitters: trio.Nursery) -> None:
        """Drained, or cut off at the deadline: tell subscribers, then give the
        emitters and the WebSockets a moment to send what is queued."""
        self._events.event(ServiceStopping())
        if self.standby is not None:  # what it relays, then the end
            self._internal.close()
            with trio.move_on_after(_FLUSH_S):
                await self.standby.drained.wait()
        self.outbox.close()
        emitters.cancel_scope.deadline = trio.current_time() + _FLUSH_S
        if self._websocket is not None:
            with trio.move_on_after(_FLUSH_S):
                await self._websocket.drained()
            self._websocket.close()
        # WebSockets on the HTTP port (OpenAI Realtime) say goodbye
        # too: hypercorn stops taking connections and lets these end.
        self._http_shutdown.set()
        if self.settings.http.enabled:
            with trio.move_on_after(_FLUSH_S * 4):
                await self._http_closed.wait()

    async def _critical(
        self,
        name: str,
        fn: Callable[..., Awaitable[object]],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """A service task under the supervisor (critical_tasks.py)."""
        finished = await self._tasks.run(name, fn, task_status=task_status)
        if finished and name == "telemetry":  # the HTTP server returns after its graceful shutdown
            self._http_closed.set()

    def _exhausted(self, name: str, exc: RestartsExhaustedError) -> None:
        """A task crashed past its restart policy: the service stops gracefully
        (sessions drain, what is said is published) and then exits with the
        error, for systemd or podman to restart it."""
        if self._failure is None:
            self._failure = exc
        logger.bind(component="service").critical("{}: stopping gracefully, to be restarted", exc)
        self._events.event(ServiceFailing(task=name, error=str(exc)[:500]))
        self.stop()

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

    def _serving_sessions(self) -> SessionManager | None:
        """The session manager while new sessions are taken (not starting, not stopping)."""
        if not self._runtime.running or self._runtime.stopping:
            return None
        return self.sessions

    def connection_caps(self) -> dict[str, int]:
        """Each enabled server's connection cap, refusals in flight included."""
        return connection_caps(self.settings)

    def check_descriptors(self) -> DescriptorBudget:
        """Lift the soft descriptor limit and check the caps fit under it
        (startup_checks.py); the start of :meth:`run` calls this."""
        return check_descriptors(self.settings)

    def stop(self) -> None:
        """Begin a graceful stop: the clients' sessions end at a pause (or
        finish) within ``sessions.drain_timeout_s``; then capture ends and
        in-flight work drains within the grace period."""
        if self._runtime.stopping:
            return
        self._runtime.stopping = True
        self._stopped.set()
        if self.sessions is None and self._servers_scope is not None:
            self._servers_scope.cancel()  # still loading: nothing to drain

    def _grace_s(self) -> float:
        # A transcription cut off at the deadline takes up to ABORT_WAIT_S to
        # stop, and the emitters' flush comes after: both fit in the grace period.
        grace = self.settings.supervisor.shutdown_grace_s - _FLUSH_S - ABORT_WAIT_S
        return max(grace, 0.0)

    async def _drain(self, sessions: SessionManager) -> None:
        """The clients' sessions end by themselves (SessionManager.drain); /health
        says ``draining`` meanwhile."""
        self._runtime.draining = True
        try:
            await sessions.drain(self.settings.sessions.drain_timeout_s, besides=self.local_session)
        finally:
            self._runtime.draining = False

    # ------------------------------------------------------------------ pieces

    async def _bind_zmq(self) -> list[tuple[ZmqPublisher, Stream]]:
        publishers = await self._zmq.bind()
        self.ports.zmq_events = self._zmq.port(Stream.EVENTS)
        self.ports.zmq_transcripts = self._zmq.port(Stream.TRANSCRIPTS)
        return publishers

    async def _load(self) -> tuple[Engines, AudioSource | None]:
        """Models and the audio source, loaded side by side; any failure ends the start."""
        source = self._source or source_from_settings(self.settings.audio)
        engines = await load_engines(self.settings, source, self._open_stt)
        self.metrics.stt_device_fallback.set(1 if engines.stt.device_fallback else 0)
        if isinstance(engines.stt, SttPool):  # stt_fallback, stt_remote_restored, metrics
            watch_engines(engines.stt.engines, self._events, self.metrics)
        return engines, source

    def _stop_now(self) -> None:
        if self._servers_scope is not None:
            self._servers_scope.cancel()

    def _crashed(self, task: str, exc: BaseException) -> None:
        self.metrics.errors.labels(task, type(exc).__name__).inc()
        self.metrics.task_restarts.labels(task).inc()
        self._events.event(
            StageError(stage=task, error_type=type(exc).__name__, error=str(exc)[:500])
        )

    # ------------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` reports (its parts are built in health.py)."""
        local = self.local_session
        failed = failed_tasks(self.supervisor.statistics())
        if local is not None:
            failed += failed_tasks(local.supervisor.statistics())
        degraded = bool(failed) or (local is not None and local.state.state is PipelineState.ERROR)
        runtime = self._runtime
        outbox = self.outbox.statistics()
        return {
            "status": service_status(runtime.running, runtime.draining, runtime.stopping, degraded),
            "service_id": self.service_id,
            "state": local.state.state.value if local else None,
            "source": local.statistics().source if local else "none",
            "uptime_s": round(time.time() - self._runtime.started_at, 1),
            "ports": self.ports.as_dict(),
            "tasks": tasks_report(self.supervisor.statistics()),
            "failed_tasks": failed,
            "sessions": sessions_report(
                self.sessions.statistics() if self.sessions is not None else [],
                self.settings.sessions.max,
            ),
            "stt": stt_report(self._engines.stt if self._engines is not None else None),
            "outbox": {"published": outbox.published, "subscribers": outbox.subscribers},
            "standby": None
            if self.standby is None
            else dataclasses.asdict(self.standby.statistics()),
            "runtime": runtime_report(),
            "connections": connections_report(self._connection_caps(), self._wyoming_connections()),
            "descriptors": descriptors_report(self.connection_caps()),
        }

    def _connection_caps(self) -> list[ConnectionCap]:
        """Each running server's open connections against its cap (Wyoming's apart)."""
        caps = [self._http_connections] if self.settings.http.enabled else []
        if self._websocket is not None:
            caps.append(self._websocket.connections)
        caps += self._zmq.connections()
        if self._catchup is not None:
            caps.append(self._catchup.connections)
        return caps

    def _wyoming_connections(self) -> tuple[int, int] | None:
        if self._wyoming is None:
            return None
        return self._wyoming.connections, self.settings.wyoming.max_connections
