"""Telemetry: Prometheus metrics, the /metrics + /health endpoint, JSON logs.

:class:`Metrics` owns its own registry (no process-global state), so several
services can live in one process and tests see only their own numbers.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psutil
import trio
from loguru import logger
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .access import AccessPolicy
from .connections import ConnectionCap
from .http import serve_http
from .settings import TelemetrySettings

__all__ = [
    "FrontEndSteps",
    "HealthReport",
    "Metrics",
    "StepTimes",
    "configure_logging",
    "count_trio_tasks",
    "http_connections",
    "serve_telemetry",
    "telemetry_routes",
]

# Buckets span a 20 ms frame's front-end cost up to a slow CPU transcription.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class StepTimes:
    """Durations of one per-frame step, bucketed as a Prometheus histogram would.

    An observation is a C bisect and a list increment. prometheus_client's
    ``Histogram.observe`` walks its buckets in Python under a lock: with a
    frame every 20 ms the caches are cold each time, and it then cost as much
    as webrtcvad itself. Written from the trio thread only.
    """

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = list(bounds)
        #: Observations per bucket (not cumulative); the last one is +Inf.
        self.counts = [0] * (len(self._bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, +Inf last, as the exposition format wants."""
        labels = [*(repr(float(b)) for b in self._bounds), "+Inf"]
        return list(zip(labels, itertools.accumulate(self.counts), strict=True))


class FrontEndSteps:
    """The front-end's per-frame timings and frame count, rendered at scrape time.

    Exposes ``rtap_frontend_step_seconds{step="vad"|"wakeword"}`` and
    ``rtap_frames_processed_total`` (every frame goes through VAD, so it is the
    VAD step's count): nothing on the 20 ms path but :meth:`StepTimes.observe`.
    """

    def __init__(self, bounds: Sequence[float] = _LATENCY_BUCKETS) -> None:
        self.vad = StepTimes(bounds)
        self.wakeword = StepTimes(bounds)

    def collect(self) -> Iterator[Metric]:
        steps = HistogramMetricFamily(
            "rtap_frontend_step_seconds",
            "Time one front-end step spent on one 20 ms frame.",
            labels=["step"],
        )
        for name, times in (("vad", self.vad), ("wakeword", self.wakeword)):
            steps.add_metric([name], times.buckets(), sum_value=times.total)
        yield steps
        yield CounterMetricFamily(
            "rtap_frames_processed", "Audio frames through the front-end.", value=self.vad.count
        )


class Metrics:
    """Every RTAP metric, named ``rtap_*``, in one private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pipeline_latency = Histogram(
            "rtap_pipeline_latency_seconds",
            "End of speech detected to transcript emitted (hangover excluded).",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.speech_end_to_emit = Histogram(
            "rtap_speech_end_to_emit_seconds",
            "End of the last voiced frame to transcript emitted, hangover included: "
            "what a speaker waits.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pipeline_overhead = Histogram(
            "rtap_pipeline_overhead_seconds",
            "What the pipeline adds outside the hangover, the STT queue and STT itself "
            "(preprocess, language, hand-offs, emit).",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.start_time = Gauge(
            "rtap_start_time_seconds", "When this service process started (Unix time).", registry=r
        )
        self.start_time.set_to_current_time()
        self.stt_queue_wait = Histogram(
            "rtap_stt_queue_wait_seconds",
            "Time an utterance waited for a free STT engine.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sessions_active = Gauge(
            "rtap_sessions_active", "Sessions running now.", ["kind"], registry=r
        )
        self.sessions = Counter(
            "rtap_sessions_total",
            "Sessions by how they ended (or were refused).",
            ["kind", "outcome"],
            registry=r,
        )
        self.frontend_steps = FrontEndSteps()
        r.register(self.frontend_steps)
        self.frames_dropped = Counter(
            "rtap_frames_dropped_total", "Frames dropped on a full channel.", ["edge"], registry=r
        )
        self.messages_dropped = Counter(
            "rtap_messages_dropped_total",
            "Messages dropped for a slow subscriber.",
            ["subscriber"],
            registry=r,
        )
        self.stage_time = Histogram(
            "rtap_stage_processing_time_seconds",
            "Time one stage spent on one item.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.budget_exceeded = Counter(
            "rtap_stage_budget_exceeded_total",
            "Items on which a stage overran its latency budget.",
            ["stage"],
            registry=r,
        )
        self.buffer_utilization = Gauge(
            "rtap_buffer_utilization_ratio", "Fill of a buffer or channel.", ["buffer"], registry=r
        )
        self.errors = Counter(
            "rtap_errors_total", "Errors by stage and kind.", ["stage", "error_type"], registry=r
        )
        self.state_transitions = Counter(
            "rtap_state_transitions_total",
            "Pipeline state machine transitions.",
            ["from_state", "to_state"],
            registry=r,
        )
        self.early_transcriptions = Counter(
            "rtap_early_transcriptions_total",
            "Early (speculative) transcriptions by outcome: done, used, skipped, cancelled.",
            ["outcome"],
            registry=r,
        )
        self.partial_transcripts = Counter(
            "rtap_partial_transcripts_total", "Partial transcripts published.", registry=r
        )
        self.state_resets = Counter(
            "rtap_state_resets_total",
            "Session state machines reset to IDLE after a transition they forbid.",
            registry=r,
        )
        self.task_restarts = Counter(
            "rtap_task_restarts_total", "Supervised task restarts.", ["task"], registry=r
        )
        self.utterances = Counter(
            "rtap_utterances_total",
            "Utterances by session kind and outcome.",
            ["kind", "outcome"],
            registry=r,
        )
        self.stt_device_fallback = Gauge(
            "rtap_stt_device_fallback",
            "1 when STT runs on another device than the settings ask (no GPU: the CPU).",
            registry=r,
        )
        self.standby_active = Gauge(
            "rtap_standby_active",
            "A standby: 1 while it publishes (the primary is gone), 0 while it follows.",
            registry=r,
        )
        self.standby_ready = Gauge(
            "rtap_standby_ready",
            "A standby: 1 when it could take over now (engines loaded, following or active).",
            registry=r,
        )
        self.standby_heartbeat_age = Gauge(
            "rtap_standby_primary_heartbeat_age_seconds",
            "A standby: time since the primary's last heartbeat.",
            registry=r,
        )
        self.standby_switches = Counter(
            "rtap_standby_switches_total",
            "A standby's switches: takeover (went active), handback (primary back).",
            ["switch"],
            registry=r,
        )
        self.standby_transcripts = Counter(
            "rtap_standby_transcripts_total",
            "A standby's own transcripts by fate: matched (the primary published it), "
            "expired (the primary chose not to), published (by the standby).",
            ["outcome"],
            registry=r,
        )
        self.websocket_clients = Gauge(
            "rtap_websocket_clients", "Connected WebSocket clients.", registry=r
        )
        self.memory_rss = Gauge("rtap_memory_rss_bytes", "Resident set size.", registry=r)
        self.cpu_percent = Gauge(
            "rtap_cpu_percent", "Process CPU use, percent of one core.", registry=r
        )
        self.cpu_cores = Gauge(
            "rtap_cpu_cores", "CPU cores this process may run on (its affinity).", registry=r
        )
        self.cpu_cores.set(len(os.sched_getaffinity(0)))
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # primes the counter: the first reading is 0
        self._sampling_failed = False

    def sample_resources(self, *, cpu: bool = True) -> None:
        # psutil reads /proc through a descriptor. With none left (a flood of
        # connections: EMFILE) this raised, and the sampler took the HTTP
        # server down with it, six times, until the service stopped (issue
        # 16): now the reading is skipped, said once, and the gauges keep
        # their last value.
        try:
            self.memory_rss.set(self._process.memory_info().rss)
            if cpu:  # CPU percent is averaged since the last call: sample on a steady beat
                self.cpu_percent.set(self._process.cpu_percent(None))
        except OSError as exc:
            if not self._sampling_failed:
                logger.bind(component="telemetry").warning(
                    "resource sampling skipped: {}", exc.strerror or exc
                )
            self._sampling_failed = True
            return
        self._sampling_failed = False

    def render(self) -> bytes:
        return generate_latest(self.registry)


HealthReport = Callable[[], dict[str, Any]]


def telemetry_routes(metrics: Metrics, health: HealthReport) -> list[BaseRoute]:
    """``GET /metrics`` (Prometheus) and ``GET /health`` (JSON, 503 unless ok); HEAD too."""

    async def metrics_page(request: Request) -> Response:
        metrics.sample_resources(cpu=False)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def health_page(request: Request) -> Response:
        report = health()
        return JSONResponse(report, status_code=200 if report.get("status") == "ok" else 503)

    return [Route("/metrics", metrics_page), Route("/health", health_page)]


async def serve_telemetry(
    settings: TelemetrySettings,
    metrics: Metrics,
    health: HealthReport,
    routes: Sequence[BaseRoute] = (),
    *,
    policy: AccessPolicy | None = None,
    connections: ConnectionCap | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics``, ``/health`` and ``routes`` over HTTP; reports the bound port.

    Also samples the process's memory and CPU every ``resource_interval_s``.
    At most ``settings.max_connections`` connections are open (``connections``
    counts them). Returns once ``shutdown`` is set and open connections have finished.
    """
    if connections is None:
        connections = http_connections(settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sample_resources, metrics, settings.resource_interval_s)
        await serve_http(
            "telemetry",
            settings.bind_address,
            settings.port,
            [*telemetry_routes(metrics, health), *routes],
            policy=policy,
            connections=connections,
            shutdown=shutdown,
            task_status=task_status,
        )
        nursery.cancel_scope.cancel()  # the server has finished: so has the sampling


def http_connections(settings: TelemetrySettings) -> ConnectionCap:
    """The HTTP server's connection cap, for :func:`serve_telemetry` and ``/health``."""
    return ConnectionCap("http", settings.max_connections, "telemetry.max_connections")


async def _sample_resources(metrics: Metrics, interval_s: float) -> None:
    while True:
        metrics.sample_resources()
        await trio.sleep(interval_s)


def count_trio_tasks() -> int:
    """Every task of the running trio run: a leak (a session's task left behind) shows here."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    root = trio.lowlevel.current_root_task()
    return count(root) if root is not None else 0


def configure_logging(settings: TelemetrySettings, session_id: str) -> None:
    """Send loguru's records to stderr as one JSON object per line (or plain text).

    Loguru's logger is process-wide by design; this replaces its sinks.
    """
    logger.remove()
    pid = os.getpid()

    def json_sink(message: Any) -> None:
        record = message.record
        extra = record["extra"]
        entry: dict[str, Any] = {
            "timestamp": record["time"].isoformat(),
            "level": record["level"].name,
            "message": record["message"],
            "component": extra.get("component", record["name"]),
            "session_id": extra.get("session_id", session_id),
            "pid": pid,
        }
        for key in ("stage", "latency_ms", "utterance_id", "state"):
            if key in extra:
                entry[key] = extra[key]
        for key, value in extra.items():
            if key not in entry and key not in ("component",):
                entry[key] = value
        if record["exception"] is not None:
            exc_type, exc_value, _ = record["exception"]
            entry["error"] = f"{getattr(exc_type, '__name__', exc_type)}: {exc_value}"
        sys.stderr.write(json.dumps(entry, default=str) + "\n")

    if settings.log_format == "json":
        logger.add(json_sink, level=settings.log_level, backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=settings.log_level,
            format="{time:HH:mm:ss.SSS} {level:<7} {extra[component]:<10} {message}",
            backtrace=False,
            diagnose=False,
        )
    logger.configure(extra={"component": "rtap", "session_id": session_id})
    _route_stdlib_logging(settings.log_level)


class _ToLoguru(logging.Handler):
    """Hands records of the standard library's logging (and of ``warnings``) to loguru.

    Libraries and the model converter log through ``logging``, and numpy
    warns through ``warnings``: without this they print plain text between
    the JSON lines.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        component = "warnings" if record.name == "py.warnings" else record.name
        logger.bind(component=component).opt(exception=record.exc_info).log(
            level, record.getMessage().strip()
        )


def _route_stdlib_logging(level: str) -> None:
    root = logging.getLogger()
    root.handlers = [_ToLoguru()]
    # The same threshold as loguru's, so that nothing is formatted for nothing.
    levels = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO}
    root.setLevel(levels.get(level, logging.INFO if level == "SUCCESS" else logging.WARNING))
    logging.captureWarnings(True)


def now() -> float:
    """The clock every latency figure uses: monotonic, comparable across threads."""
    return time.perf_counter()
