"""The service: loads engines, binds the outputs, runs the pipeline under supervision.

Nesting gives the shutdown order. The outer nursery holds the servers
(telemetry, WebSocket) and the signal watcher; inside it the emitters; inside
those the pipeline. On SIGINT/SIGTERM capture stops, the pipeline drains into
the outbox, the outbox closes, the emitters flush and end, then the servers
are cancelled. A deadline of ``supervisor.shutdown_grace_s`` bounds all of it.
"""

from __future__ import annotations

import ipaddress
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import zmq
from loguru import logger

from .audio import AudioSource, source_from_settings
from .pipeline import Engines, Pipeline
from .session import PipelineState
from .settings import Settings
from .stages.language import LanguageAnalyzer
from .stages.stt import ABORT_WAIT_S, WhisperPool
from .supervisor import RestartPolicy, Supervisor
from .telemetry import Metrics, serve_telemetry
from .transport.outbox import Outbox
from .transport.schemas import EventType, Stream
from .transport.websocket import WebSocketServer
from .transport.zmq import ZmqPublisher

__all__ = ["BoundPorts", "Service", "is_loopback"]


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


#: Time the emitters get, after the pipeline has drained, to send what is queued.
_FLUSH_S = 0.25


@dataclass(slots=True)
class BoundPorts:
    """Ports as bound: differ from the settings when those ask for port 0."""

    zmq_events: int | None = None
    zmq_transcripts: int | None = None
    websocket: int | None = None
    telemetry: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {
            "zmq_events": self.zmq_events,
            "zmq_transcripts": self.zmq_transcripts,
            "websocket": self.websocket,
            "telemetry": self.telemetry,
        }


@dataclass(slots=True)
class _Runtime:
    pipeline: Pipeline | None = None
    started_at: float = field(default_factory=time.time)
    stopping: bool = False


class Service:
    """One RTAP service. ``await service.run()`` until the source ends or a signal."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: AudioSource | None = None,
        session_id: str | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.settings = settings
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.metrics = Metrics()
        self.outbox = Outbox(on_drop=lambda name: self.metrics.messages_dropped.labels(name).inc())
        self.supervisor = Supervisor(
            RestartPolicy.from_settings(settings.supervisor), self._crashed
        )
        self.ports = BoundPorts()
        self._source = source
        self._handle_signals = handle_signals
        self._runtime = _Runtime()
        self._drain_scope = trio.CancelScope()
        self._zmq_context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._publishers: list[tuple[ZmqPublisher, Stream]] = []
        self._servers_scope: trio.CancelScope | None = None
        self._engines: Engines | None = None

    @property
    def pipeline(self) -> Pipeline | None:
        """The running pipeline; None until the service has started."""
        return self._runtime.pipeline

    # ------------------------------------------------------------------ running

    async def run(
        self, *, task_status: trio.TaskStatus[BoundPorts] = trio.TASK_STATUS_IGNORED
    ) -> None:
        log = logger.bind(component="service")
        settings = self.settings
        self._warn_if_exposed(log)
        try:
            async with trio.open_nursery() as servers:
                self._servers_scope = servers.cancel_scope
                if self._handle_signals:
                    servers.start_soon(self._watch_signals)
                if settings.telemetry.enabled:
                    self.ports.telemetry = await servers.start(
                        self.supervisor.supervise_started,
                        "telemetry",
                        lambda task_status: serve_telemetry(
                            settings.telemetry, self.metrics, self.health, task_status=task_status
                        ),
                    )
                websocket = None
                if settings.output.websocket_enabled:
                    websocket = WebSocketServer(
                        settings.output,
                        self.outbox,
                        self.metrics,
                        send_budget_s=settings.pipeline.emit_budget_ms / 1000,
                    )
                    self.ports.websocket = await servers.start(
                        self.supervisor.supervise_started, "websocket", websocket.run
                    )
                publishers = self._bind_zmq()
                engines, source = await self._load(log)
                self._engines = engines
                pipeline = Pipeline(
                    settings,
                    session_id=self.session_id,
                    source=source,
                    engines=engines,
                    outbox=self.outbox,
                    metrics=self.metrics,
                    supervisor=self.supervisor,
                )
                self._runtime.pipeline = pipeline
                async with trio.open_nursery() as emitters:
                    for publisher, stream in publishers:
                        subscription = self.outbox.subscribe(
                            f"zmq-{stream.value}", (stream,), settings.pipeline.output_queue_size
                        )
                        emitters.start_soon(
                            self.supervisor.supervise,
                            f"zmq-{stream.value}",
                            lambda p=publisher, s=subscription: p.run(s),
                        )
                    with self._drain_scope:
                        async with trio.open_nursery() as stages:
                            await stages.start(pipeline.run)
                            self._announce(source, engines, log)
                            task_status.started(self.ports)
                    if self._drain_scope.cancelled_caught:
                        log.warning("shutdown grace period passed; in-flight work was cancelled")
                    # Drained, or cut off at the deadline: tell subscribers, then
                    # give the emitters a moment to flush what is queued.
                    pipeline.session.shutdown("stopped")
                    self.outbox.event(EventType.SERVICE_STOPPING, self.session_id)
                    self.outbox.close()
                    emitters.cancel_scope.deadline = trio.current_time() + _FLUSH_S
                    if websocket is not None:
                        with trio.move_on_after(_FLUSH_S):
                            await websocket.drained()
                        websocket.close()
                servers.cancel_scope.cancel()
        finally:
            # Whatever ended the run (a stop while the models loaded, a fatal
            # error), subscribers such as the --print printer see the end.
            self.outbox.close()
            if self._engines is not None:
                await self._engines.whisper.aclose()
            for publisher, _ in self._publishers:
                publisher.close()
            if self._zmq_context is not None:
                self._zmq_context.term()
        log.info("RTAP stopped")

    def _announce(self, source: AudioSource, engines: Engines, log: Any) -> None:
        self.outbox.event(
            EventType.SERVICE_STARTED,
            self.session_id,
            source=source.name,
            model=engines.whisper.name,
            ports=self.ports.as_dict(),
            profile=self.settings.environment,
        )
        log.info(
            "RTAP running: profile {} source {} model {} ports {}",
            self.settings.environment,
            source.name,
            engines.whisper.name,
            self.ports.as_dict(),
        )

    def _warn_if_exposed(self, log: Any) -> None:
        exposed = sorted(
            {
                address
                for address, enabled in (
                    (self.settings.output.bind_address, self.settings.output.websocket_enabled),
                    (self.settings.output.bind_address, self.settings.output.zmq_enabled),
                    (self.settings.telemetry.bind_address, self.settings.telemetry.enabled),
                )
                if enabled and not is_loopback(address)
            }
        )
        if exposed:
            # Until the service has a token (the browser issue), say it loudly.
            log.warning(
                "listening on {} without authentication: anyone who can reach this "
                "address can read transcripts and stream audio in",
                ", ".join(exposed),
            )

    def stop(self) -> None:
        """Begin a graceful stop: capture ends, in-flight work drains within the grace period."""
        if self._runtime.stopping:
            return
        self._runtime.stopping = True
        # A transcription cut off at the deadline takes up to ABORT_WAIT_S to
        # stop, and the emitters' flush comes after: both fit in the grace period.
        grace = self.settings.supervisor.shutdown_grace_s - _FLUSH_S - ABORT_WAIT_S
        grace = max(grace, 0.0)
        self._drain_scope.deadline = trio.current_time() + grace
        if self._runtime.pipeline is not None:
            self._runtime.pipeline.stop()
        elif self._servers_scope is not None:  # still starting: nothing to drain
            self._servers_scope.cancel()

    # ------------------------------------------------------------------ pieces

    def _bind_zmq(self) -> list[tuple[ZmqPublisher, Stream]]:
        out = self.settings.output
        if not out.zmq_enabled:
            return []
        self._zmq_context = zmq.Context()
        for what, port, stream in (
            ("events", out.zmq_pub_port_events, Stream.EVENTS),
            ("transcripts", out.zmq_pub_port_transcripts, Stream.TRANSCRIPTS),
        ):
            publisher = ZmqPublisher(
                self._zmq_context, what, out.bind_address, port, out.zmq_send_hwm
            )
            self._publishers.append((publisher, stream))
        self.ports.zmq_events = self._publishers[0][0].port
        self.ports.zmq_transcripts = self._publishers[1][0].port
        return self._publishers

    async def _load(self, log: Any) -> tuple[Engines, AudioSource]:
        """Models and the audio source, loaded side by side; any failure ends the start."""
        settings = self.settings
        source = self._source or source_from_settings(settings.audio)
        results: dict[str, Any] = {}

        async def load(name: str, fn: Callable[[], Any]) -> None:
            results[name] = await fn()

        started = time.perf_counter()
        log.info("loading engines and opening the audio source")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load, "whisper", lambda: WhisperPool.load(settings.stt))
            nursery.start_soon(load, "analyzer", lambda: LanguageAnalyzer.load(settings.language))
            nursery.start_soon(load, "source", source.open)
        log.info("engines loaded in {:.2f}s", time.perf_counter() - started)
        return Engines(whisper=results["whisper"], analyzer=results["analyzer"]), source

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
        self.outbox.event(
            EventType.STAGE_ERROR,
            self.session_id,
            stage=task,
            error_type=type(exc).__name__,
            error=str(exc)[:500],
        )
        if self._runtime.pipeline is not None:
            self._runtime.pipeline.session.fault(f"{task} crashed")

    # ------------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        pipeline = self._runtime.pipeline
        tasks = {
            name: {"state": stats.state.value, "starts": stats.starts, "crashes": stats.crashes}
            for name, stats in self.supervisor.statistics().items()
        }
        failed = [name for name, t in tasks.items() if t["state"] == "failed"]
        outbox = self.outbox.statistics()
        state = pipeline.session.state if pipeline else None
        ok = pipeline is not None and not failed and state is not PipelineState.ERROR
        return {
            "status": "ok" if ok else ("starting" if pipeline is None else "degraded"),
            "session_id": self.session_id,
            "state": state.value if state else None,
            "source": pipeline.source.name if pipeline else None,
            "uptime_s": round(time.time() - self._runtime.started_at, 1),
            "ports": self.ports.as_dict(),
            "tasks": tasks,
            "outbox": {"published": outbox.published, "subscribers": outbox.subscribers},
        }
