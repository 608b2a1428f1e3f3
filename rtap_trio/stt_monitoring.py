"""What the STT engines tell the service, published: ``stt_fallback`` and
``stt_remote_restored`` on the service's events, the ``rtap_stt_engine_*``,
``rtap_stt_fallbacks_total`` and ``rtap_stt_circuit_open`` metrics.

The engines (``rtap_trio.stt``) may not import events or the outbox, so they
speak to an :class:`~rtap_trio.stt.observer.EngineObserver`; this is the one
the service hands them once they are loaded (:func:`watch_engines`).
"""

from __future__ import annotations

from collections.abc import Iterable

from .events import SttFallback, SttRemoteRestored
from .metrics import Metrics
from .stt import SttEngine
from .stt.observer import CircuitClosed, CircuitOpened, Observable
from .transport.outbox import SessionOutbox

__all__ = ["PublishingObserver", "watch_engines"]


class PublishingObserver:
    """Counts every request and publishes every switch, as the service's own events."""

    def __init__(self, events: SessionOutbox, metrics: Metrics) -> None:
        self._events = events
        self._metrics = metrics

    def answered(self, engine: str, seconds: float) -> None:
        self._metrics.stt_engine_requests.labels(engine, "ok").inc()
        self._metrics.stt_engine_latency.labels(engine).observe(seconds)

    def failed(self, engine: str, reason: str, seconds: float) -> None:
        self._metrics.stt_engine_requests.labels(engine, "failed").inc()
        self._metrics.stt_engine_failures.labels(engine, reason).inc()
        self._metrics.stt_engine_latency.labels(engine).observe(seconds)

    def fell_back(self, engine: str, reason: str) -> None:
        self._metrics.stt_fallbacks.labels(engine, reason).inc()

    def circuit_opened(self, opened: CircuitOpened) -> None:
        self._metrics.stt_circuit_open.labels(opened.engine).set(1)
        self._events.event(
            SttFallback(
                engine=opened.engine,
                fallback=opened.fallback,
                reason=opened.reason,
                failures=opened.failures,
                retry_in_s=round(opened.retry_in_s, 3),
            )
        )

    def circuit_closed(self, closed: CircuitClosed) -> None:
        self._metrics.stt_circuit_open.labels(closed.engine).set(0)
        self._events.event(
            SttRemoteRestored(
                engine=closed.engine, down_s=round(closed.down_s, 3), fallbacks=closed.fallbacks
            )
        )


def watch_engines(engines: Iterable[SttEngine], events: SessionOutbox, metrics: Metrics) -> None:
    """Hand every engine that has something to tell an observer publishing it."""
    observer = PublishingObserver(events, metrics)
    for engine in engines:
        if isinstance(engine, Observable):
            engine.observe(observer)
