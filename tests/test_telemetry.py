"""Front-end step timings: rendered at scrape time, bucketed exactly as prometheus_client does."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rtap_trio.metrics import Metrics

BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
# On, between and beyond the bucket bounds (0.0005 ... 10 s), the le edge included.
VALUES = [0.0, 0.0001, 0.0005, 0.00051, 0.003, 0.0099, 0.01, 0.2, 7.0, 11.0, 0.0005]


def _samples(text: bytes, metric: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The series of ``metric`` (step="vad" where there is a step label), by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if not sample.name.startswith(metric) or sample.name.endswith("_created"):
                continue
            if sample.labels.get("step", "vad") != "vad":
                continue
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "step"))
            found[(sample.name, labels)] = sample.value
    return found


def test_step_times_render_as_prometheus_client_histogram_would() -> None:
    metrics = Metrics()
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "rtap_frontend_step_seconds",
        "reference",
        buckets=BOUNDS,
        registry=reference_registry,
    )
    for value in VALUES:
        metrics.frontend_steps.vad.observe(value)
        reference.observe(value)
    ours = _samples(metrics.render(), "rtap_frontend_step_seconds")
    theirs = _samples(generate_latest(reference_registry), "rtap_frontend_step_seconds")
    assert ours == theirs
    assert ours[("rtap_frontend_step_seconds_count", ())] == len(VALUES)


def test_frames_processed_is_the_vad_step_count() -> None:
    metrics = Metrics()
    for _ in range(7):
        metrics.frontend_steps.vad.observe(0.0001)
    metrics.frontend_steps.wakeword.observe(0.0003)
    text = metrics.render().decode()
    assert "rtap_frames_processed_total 7.0" in text
    assert 'rtap_frontend_step_seconds_count{step="wakeword"} 1.0' in text
    assert 'rtap_frontend_step_seconds_bucket{le="0.0005",step="vad"} 7.0' in text
