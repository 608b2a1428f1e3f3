"""Session fixtures: the project's own generated speech (rtap_trio.devtools.speechgen)."""

from __future__ import annotations

import compileall
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from rtap_trio.devtools import speechgen

from . import forkserver
from .support import ENGINES, STT_BUDGET_MS, WHISPER_THREADS

REPO = Path(__file__).resolve().parents[1]

# The tests' own modules keep pytest's rewritten bytecode (git-ignored
# __pycache__) even where PYTHONDONTWRITEBYTECODE is set (containers, CI): each
# test worker collects every file, 5.2 CPU-s with nothing cached, 2.8 with it.
sys.dont_write_bytecode = False

# The services the tests start as child processes read these from the environment
# (the thread count: pytest_configure, where it is known whether tests run here).
os.environ.setdefault("RTAP_STT__BUDGET_MS", str(STT_BUDGET_MS))
# The in-process services run as `python -m rtap_trio` does (rtap_trio/__main__.py):
# numpy's BLAS on one thread. The controller imported numpy already; the test
# workers it starts inherit this before they import it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# No warm-up transcription before a test's service says it runs: it is 3.1 s of
# CPU for base's 30 s window (a service start: 4.3 s of CPU to ready with it,
# 1.2 s without) and 0.5 s for tiny.en, and the suite starts about 80 services.
# The first utterance pays a little more instead, and no test times it.
# test_cli_service.py runs the demo with it, as a user does.
os.environ.setdefault("RTAP_STT__WARMUP", "false")

# CI runs the same property examples every time; `just fuzz` runs many more, at random.
_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
hypothesis_settings.register_profile(
    "ci", max_examples=150, derandomize=True, deadline=None, suppress_health_check=_QUIET
)
hypothesis_settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=_QUIET
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def speech() -> dict[str, Any]:
    """The generated fixtures' manifest, with ``dir`` set to where they are.

    Generated once into tests/fixtures/ (git-ignored); regenerated only when
    the generator or its tools changed.
    """
    out = REPO / "tests" / "fixtures"
    manifest_path = speechgen.generate_fixtures(out)
    manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["dir"] = out
    manifest["by_file"] = {entry["file"]: entry for entry in manifest["fixtures"]}
    return manifest


#: Seconds each file takes (2026-12-03, this 2-core machine, a three-worker run:
#: the times each file takes as the suite runs, its workers sharing the cores).
#: Files run longest first,
#: so that with several workers the run does not end on one long file while the
#: other workers have nothing left (--dist loadfile hands out whole files, in this
#: order). A file not listed, new or short, counts as UNLISTED_S: a new long drill
#: still starts early, a short file costs little wherever it runs.
_SECONDS = {
    "test_balancer.py": 95,  # three RTAP processes and haproxy, twice; a drain
    "test_soak.py": 44,  # two sessions a client (~26 s) beside attacks, 14 s to settle
    "test_bench.py": 65,  # the quick bench, two halves at once
    "test_stt_engine.py": 100,  # base on three languages, both ways
    "test_failover.py": 48,  # two services, a kill and a restart at real-time pace
    "test_console.py": 43,  # four services and a real Chromium
    "test_service_e2e.py": 41,
    "test_hallucination.py": 18,  # 15 s and 30 s of music through base
    "test_speculative.py": 34,
    "test_cli_errors.py": 42,
    "test_whisper_features.py": 34,  # two services (tiny.en, base), 18 uploads
    "test_sessions.py": 22,
    "test_cli_service.py": 20,  # the default profile's demo at real-time pace
    "test_whisper_models.py": 18,
    "test_evaluation.py": 48,
    "test_openai.py": 33,
    "test_session_bridge.py": 17,
    "test_remote_stt.py": 23,  # a remote RTAP killed and started again
    "test_wyoming_bounds.py": 18,
    "test_recovery.py": 21,
    "test_catchup_bounds.py": 24,
    "test_monitoring.py": 28,  # a real Prometheus, a service and haproxy
    "test_zmq_proxy.py": 5,  # two services and the proxy process
    "test_upload_bounds.py": 11,
    "test_fixtures_speech.py": 9,
    "test_model_cache.py": 10,
    "test_wyoming.py": 6,
    "test_fuzz.py": 25,
    "test_turn.py": 17,
    "test_capture_alsa.py": 12,
    "test_websocket_bounds.py": 8,
    "test_descriptor_bounds.py": 10,
    "test_demo.py": 6,
    # mypy strict: 4 s on a warm cache, 24-27 s from a fresh clone (CI's case),
    # where at 9 it ran last and its worker ended the run 5-8 s after the others.
    "test_quality.py": 27,
    "test_watchers.py": 7,
    "test_openai_realtime.py": 5,
    "test_catchup.py": 5,
    "test_reliability.py": 5,
}
UNLISTED_S = 30


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject.toml): two test workers more than the cores, at most 8.

    A fifth of the suite's time is spent waiting on clocks (speech at real-time
    pace, drills, services starting), not computing: with one worker per core
    the 2-core machine was 82 % busy (425 s, 697 CPU-s); with three, 94 %
    (316 s, 595 CPU-s). Once the services were forked (forkserver.py) the
    waiting was a larger share: three workers 301-302 s, four 284 s (535-542
    CPU-s, 2026-12-03). At most 8: each worker holds its own engines.
    """
    return min((len(os.sched_getaffinity(0)) or 1) + 2, 8)


def pytest_configure(config: pytest.Config) -> None:
    """Bring the package's bytecode up to date once, before the workers start.

    The tests start about 90 Python processes; where PYTHONDONTWRITEBYTECODE is
    set (containers, CI) each would compile the package again, 0.2 s of CPU a
    start (scripts/setup.sh compiles it too; this catches files edited since).
    """
    if not hasattr(config, "workerinput"):  # the controller, or a run without workers
        compileall.compile_dir(REPO / "rtap_trio", quiet=2)
    # The test services' whisper.cpp threads (support.WHISPER_THREADS), set where
    # tests run: in each worker, or here without workers. Not in a controller
    # with workers: they inherit its environment, and its count (two: it has no
    # worker count) kept theirs from being set, so every child service of the
    # suite ran whisper.cpp on two spinning threads beside two other workers
    # (libgomp's spin-wait alone was 8 % of the suite's CPU, perf, 2026-12-03).
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        os.environ.setdefault("RTAP_STT__WHISPERCPP__N_THREADS", str(WHISPER_THREADS))


def pytest_sessionfinish() -> None:
    """Free the engines lent to the tests' in-process services (support.ENGINES),
    and stop this process's fork server (forkserver.py) with its services."""
    trio.run(ENGINES.aclose)
    forkserver.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A stable sort: a file's tests keep their order, files of equal time theirs.
    items.sort(key=lambda item: -_SECONDS.get(item.path.name, UNLISTED_S))
