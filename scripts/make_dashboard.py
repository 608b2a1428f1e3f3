"""Generate the Grafana dashboard for RTAP: ops/monitoring/grafana/rtap-dashboard.json.

    .venv/bin/python scripts/make_dashboard.py           # write it
    .venv/bin/python scripts/make_dashboard.py --check   # exit 1 if the file differs

The dashboard is code: panels are declared here (title, PromQL or LogQL, unit)
and laid out on Grafana's 24-column grid, so a change is a reviewed diff of a
few lines, never a hand edit of 1500 lines of JSON. The tests check that the
committed file is this script's output, and run every PromQL expression in it
against a real Prometheus scraping a real service.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "ops" / "monitoring" / "grafana" / "rtap-dashboard.json"
PROMETHEUS = {"type": "prometheus", "uid": "${prometheus}"}
LOKI = {"type": "loki", "uid": "${loki}"}
SEL = 'job=~"$job", instance=~"$instance"'
#: HAProxy in front of N instances (ops/monitoring/prometheus-instances.yml: job haproxy)
HAPROXY = 'job="haproxy"'


@dataclass(frozen=True)
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (legend, expression)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    description: str = ""
    logs: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def quantile(q: float, metric: str, by: str = "job") -> str:
    return f"histogram_quantile({q}, {summed(f'{metric}_bucket', f'{by}, le')})"


def summed(metric: str, by: str, fn: str = "rate", extra: str = "") -> str:
    """``sum by (by) (fn(metric{job selector, extra}[$__rate_interval]))``."""
    grouped = f"sum by ({by}) " if by else "sum"
    return f"{grouped}({fn}({metric}{{{SEL}{extra}}}[$__rate_interval]))"


def up_share(metric: str) -> str:
    """``metric`` summed over the HAProxy servers that are UP (taking new sessions), per backend."""
    return (
        f"sum by (proxy) ({metric}{{{HAPROXY}}}"
        f' * ignoring (state) haproxy_server_status{{{HAPROXY}, state="UP"}})'
    )


def logql(selector: str, window: str, by: str) -> str:
    return f'sum by ({by}) (count_over_time({{unit=~"rtap-.*"}} | json | {selector} [{window}]))'


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Latency",
        [
            Panel(
                "End of speech to transcript (what a speaker waits)",
                [
                    ("p50 {{job}}", quantile(0.5, "rtap_speech_end_to_emit_seconds")),
                    ("p95 {{job}}", quantile(0.95, "rtap_speech_end_to_emit_seconds")),
                ],
                unit="s",
                description="Hangover included. Alert: p95 over 4 s for 10 min.",
            ),
            Panel(
                "Pipeline overhead (outside STT and the hangover)",
                [("p95 {{job}}", quantile(0.95, "rtap_pipeline_overhead_seconds"))],
                unit="s",
                description="The design's 150 ms p95 (alert). Healthy: 4-10 ms.",
            ),
            Panel(
                "Time per stage, p95",
                [("{{stage}}", quantile(0.95, "rtap_stage_processing_time_seconds", "stage"))],
                unit="s",
            ),
            Panel(
                "Waiting for a free STT engine, p95",
                [("{{kind}}", quantile(0.95, "rtap_stt_queue_wait_seconds", "kind"))],
                unit="s",
            ),
        ],
    ),
    (
        "Sessions and state",
        [
            Panel(
                "Active sessions",
                [("{{kind}} {{job}}", f"sum by (job, kind) (rtap_sessions_active{{{SEL}}})")],
                width=8,
            ),
            Panel(
                "State transitions",
                [
                    (
                        "to {{to_state}}",
                        summed("rtap_state_transitions_total", "to_state"),
                    )
                ],
                unit="ops",
                width=8,
            ),
            Panel(
                "Standby",
                [
                    ("active", f"max(rtap_standby_active{{{SEL}}})"),
                    ("ready", f"max(rtap_standby_ready{{{SEL}}})"),
                    (
                        "primary heartbeat age (s)",
                        f"max(rtap_standby_primary_heartbeat_age_seconds{{{SEL}}})",
                    ),
                ],
                width=8,
            ),
        ],
    ),
    (
        "Throughput",
        [
            Panel(
                "Utterances per minute by outcome",
                [
                    (
                        "{{outcome}}",
                        summed("rtap_utterances_total", "outcome") + " * 60",
                    )
                ],
            ),
            Panel(
                "Audio frames per second",
                [
                    (
                        "{{job}}",
                        summed("rtap_frames_processed_total", "job"),
                    )
                ],
            ),
        ],
    ),
    (
        "Errors and drops",
        [
            Panel(
                "Errors by stage",
                [
                    (
                        "{{stage}} {{error_type}}",
                        summed("rtap_errors_total", "stage, error_type"),
                    )
                ],
                unit="ops",
                width=8,
            ),
            Panel(
                "Dropped: frames, utterances, messages",
                [
                    (
                        "frames {{edge}}",
                        summed("rtap_frames_dropped_total", "edge", "increase"),
                    ),
                    (
                        "utterances",
                        summed("rtap_utterances_total", "", "increase", ', outcome="dropped"'),
                    ),
                    (
                        "messages",
                        summed("rtap_messages_dropped_total", "", "increase"),
                    ),
                ],
                width=8,
            ),
            Panel(
                "Restarts",
                [
                    (
                        "task {{task}}",
                        summed("rtap_task_restarts_total", "task", "increase"),
                    ),
                    (
                        "process {{job}}",
                        f"changes(rtap_start_time_seconds{{{SEL}}}[$__rate_interval])",
                    ),
                ],
                width=8,
            ),
        ],
    ),
    (
        "Resources",
        [
            Panel(
                "Buffer use",
                [("{{buffer}}", f"max by (buffer) (rtap_buffer_utilization_ratio{{{SEL}}})")],
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Memory (RSS)",
                [("{{job}}", f"rtap_memory_rss_bytes{{{SEL}}}")],
                unit="bytes",
                width=8,
            ),
            Panel(
                "CPU, share of its cores",
                [("{{job}}", f"rtap_cpu_percent{{{SEL}}} / rtap_cpu_cores{{{SEL}}}")],
                unit="percent",
                width=8,
            ),
        ],
    ),
    (
        "Instances (N behind HAProxy: one line per instance)",
        [
            Panel(
                "Up",
                [("{{instance}}", f"up{{{SEL}}}")],
                width=8,
                description="1: /metrics answers. Alert RtapInstanceDown: 0 for 1 min (job rtap).",
            ),
            Panel(
                "Active sessions",
                [("{{instance}}", f"sum by (instance) (rtap_sessions_active{{{SEL}}})")],
                width=8,
            ),
            Panel(
                "Transcripts per minute",
                [
                    (
                        "{{instance}}",
                        summed("rtap_utterances_total", "instance", extra=', outcome="transcribed"')
                        + " * 60",
                    )
                ],
                width=8,
            ),
            Panel(
                "End of speech to transcript, p95",
                [("{{instance}}", quantile(0.95, "rtap_speech_end_to_emit_seconds", "instance"))],
                unit="s",
                width=8,
            ),
            Panel(
                "CPU, share of its cores",
                [("{{instance}}", f"rtap_cpu_percent{{{SEL}}} / rtap_cpu_cores{{{SEL}}}")],
                unit="percent",
                width=8,
            ),
            Panel(
                "Memory (RSS)",
                [("{{instance}}", f"rtap_memory_rss_bytes{{{SEL}}}")],
                unit="bytes",
                width=8,
            ),
        ],
    ),
    (
        "Remote STT (stt.engine remote, stt.fallback)",
        [
            Panel(
                "Circuit open",
                [
                    (
                        "{{instance}} {{engine}}",
                        f"max by (instance, engine) (rtap_stt_circuit_open{{{SEL}}})",
                    )
                ],
                width=6,
                description="1: every utterance goes to the local fallback. "
                "Alert RtapSttCircuitOpen: 3 min.",
            ),
            Panel(
                "Fallbacks per minute",
                [
                    (
                        "{{instance}} {{reason}}",
                        summed("rtap_stt_fallbacks_total", "instance, reason") + " * 60",
                    )
                ],
                width=6,
                description="Alert RtapSttFallbacksSustained: some in every 5 min, for 15 min.",
            ),
            Panel(
                "Engine time, p95",
                [
                    (
                        "{{instance}} {{engine}}",
                        quantile(0.95, "rtap_stt_engine_seconds", "instance, engine"),
                    )
                ],
                unit="s",
                width=6,
            ),
            Panel(
                "Engine failures by reason",
                [
                    (
                        "{{instance}} {{engine}} {{reason}}",
                        summed("rtap_stt_engine_failures_total", "instance, engine, reason"),
                    )
                ],
                unit="ops",
                width=6,
            ),
        ],
    ),
    (
        "Balancer (HAProxy)",
        [
            Panel(
                "Sessions per instance",
                [
                    (
                        "{{proxy}} {{server}}",
                        f"sum by (proxy, server) (haproxy_server_current_sessions{{{HAPROXY}}})",
                    )
                ],
                width=8,
                description="HAProxy's current sessions on each server (instance) of each backend.",
            ),
            Panel(
                "Share of the UP instances' maxconn in use",
                [
                    (
                        "{{proxy}}",
                        up_share("haproxy_server_current_sessions")
                        + " / "
                        + up_share("haproxy_server_limit_sessions"),
                    )
                ],
                unit="percentunit",
                width=8,
                description="Alert RtapBalancerSaturated: over 80 % for 5 min. "
                "Empty where the servers have no maxconn.",
            ),
            Panel(
                "Queued connections and instances up",
                [
                    (
                        "queued {{proxy}}",
                        f"sum by (proxy) (haproxy_backend_current_queue{{{HAPROXY}}})",
                    ),
                    (
                        "up {{proxy}}",
                        f"sum by (proxy) (haproxy_backend_active_servers{{{HAPROXY}}})",
                    ),
                ],
                width=8,
                description="Alerts RtapBalancerQueueing (any queue for 1 min) and "
                "RtapBalancerNoInstance (no server UP).",
            ),
            Panel(
                "New sessions per second per instance",
                [
                    (
                        "{{proxy}} {{server}}",
                        f"sum by (proxy, server) (rate(haproxy_server_sessions_total"
                        f"{{{HAPROXY}}}[$__rate_interval]))",
                    )
                ],
                unit="ops",
                width=24,
                description="How evenly leastconn spreads new sessions.",
            ),
        ],
    ),
    (
        "Logs (Loki)",
        [
            Panel(
                "Warnings and errors",
                [("", '{unit=~"rtap-.*"} | json | level=~"WARNING|ERROR|CRITICAL"')],
                kind="logs",
                width=24,
                logs=True,
            ),
            Panel(
                "Transcripts emitted per minute",
                [
                    (
                        "{{unit}}",
                        logql('stage="emit"', "1m", "unit"),
                    )
                ],
                width=12,
                logs=True,
            ),
            Panel(
                "Errors per component",
                [
                    (
                        "{{component}}",
                        logql('level="ERROR"', "5m", "component"),
                    )
                ],
                width=12,
                logs=True,
            ),
        ],
    ),
]


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    ids = iter(range(1, 1000))
    for row_title, row in ROWS:
        panels.append(
            {
                "type": "row",
                "title": row_title,
                "id": next(ids),
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x = 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + 8
            source = LOKI if panel.logs else PROMETHEUS
            panels.append(
                {
                    "type": panel.kind,
                    "title": panel.title,
                    "id": next(ids),
                    "description": panel.description,
                    "datasource": source,
                    "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "options": panel.options,
                    "targets": [
                        {
                            "refId": chr(ord("A") + i),
                            "datasource": source,
                            "expr": expr,
                            "legendFormat": legend,
                        }
                        for i, (legend, expr) in enumerate(panel.targets)
                    ],
                }
            )
            x += panel.width
        y += 8
    return {
        "title": "RTAP",
        "uid": "rtap-main",
        "description": "RTAP on both PCs or N instances behind HAProxy: latency, sessions, "
        "throughput, errors, resources, per instance, remote STT, the balancer, logs.",
        "tags": ["rtap"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                },
                {"name": "loki", "type": "datasource", "query": "loki", "label": "Loki"},
                {
                    "name": "job",
                    "type": "query",
                    "datasource": PROMETHEUS,
                    "query": "label_values(rtap_start_time_seconds, job)",
                    "multi": True,
                    "includeAll": True,
                    "current": {"text": "All", "value": "$__all"},
                },
                {
                    "name": "instance",
                    "type": "query",
                    "datasource": PROMETHEUS,
                    "query": 'label_values(rtap_start_time_seconds{job=~"$job"}, instance)',
                    "multi": True,
                    "includeAll": True,
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": panels,
    }


def promql(board: dict[str, Any]) -> list[str]:
    """Every Prometheus expression in the dashboard, Grafana's variables resolved."""
    exprs = []
    for panel in board["panels"]:
        if panel.get("datasource") != PROMETHEUS:
            continue
        for target in panel["targets"]:
            exprs.append(
                target["expr"]
                .replace("$__rate_interval", "1m")
                .replace('=~"$job"', '=~".+"')
                .replace('=~"$instance"', '=~".+"')
            )
    return exprs


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run scripts/make_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
