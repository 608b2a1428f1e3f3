"""Metrics: every ``rtap_*`` Prometheus metric, in a registry of the service's own.

:class:`Metrics` owns its own registry (no process-global state), so several
services can live in one process and tests see only their own numbers. Apart
from the HTTP port that serves them (``http_port.py``) and from logging
(``logs.py``): stages, sessions and servers count into it without knowing who
reads it.
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Iterator, Sequence

import psutil
import trio
from loguru import logger
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

__all__ = ["FrontEndSteps", "Metrics", "StepTimes", "sample_resources_every"]

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
        self.turn_judgements = Counter(
            "rtap_turn_judgements_total",
            "End-of-turn detector answers at pauses, by outcome: complete, incomplete.",
            ["outcome"],
            registry=r,
        )
        self.turn_judgement_time = Histogram(
            "rtap_turn_judgement_seconds",
            "End-of-turn detector: features and inference per question (wall time).",
            buckets=(0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
            registry=r,
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
        # The engines behind stt.fallback (rtap_trio/stt_monitoring.py): which
        # one answered, which failed and why, and how often the fallback did.
        self.stt_engine_requests = Counter(
            "rtap_stt_engine_requests_total",
            "Transcriptions asked of an STT engine (remote, whispercpp), by outcome: ok, failed.",
            ["engine", "outcome"],
            registry=r,
        )
        self.stt_engine_failures = Counter(
            "rtap_stt_engine_failures_total",
            "Failed STT engine requests by reason (connect, timeout, http_503, ...).",
            ["engine", "reason"],
            registry=r,
        )
        self.stt_engine_latency = Histogram(
            "rtap_stt_engine_seconds",
            "Time an STT engine took to answer (or to fail).",
            ["engine"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stt_decoded_again = Counter(
            "rtap_stt_decoded_again_total",
            "Finals whose cheaper first try (stt.whispercpp.audio_ctx_first_floor) looped "
            "and were decoded again in the full-size window.",
            registry=r,
        )
        self.stt_fallbacks = Counter(
            "rtap_stt_fallbacks_total",
            "Utterances the fallback engine answered instead, by reason (circuit_open, ...).",
            ["engine", "reason"],
            registry=r,
        )
        self.stt_circuit_open = Gauge(
            "rtap_stt_circuit_open",
            "1 while an STT engine's circuit is open (every utterance to its fallback).",
            ["engine"],
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


async def sample_resources_every(metrics: Metrics, interval_s: float) -> None:
    """Sample the process's memory and CPU every ``interval_s``, until cancelled."""
    while True:
        metrics.sample_resources()
        await trio.sleep(interval_s)
