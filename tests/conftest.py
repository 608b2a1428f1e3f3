"""Session fixtures: the project's own generated speech (rtap_trio.devtools.speechgen)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from rtap_trio.devtools import speechgen

from .support import ENGINES, STT_BUDGET_MS, WHISPER_THREADS

REPO = Path(__file__).resolve().parents[1]

# The services the tests start as child processes read these from the environment.
os.environ.setdefault("RTAP_STT__WHISPERCPP__N_THREADS", str(WHISPER_THREADS))
os.environ.setdefault("RTAP_STT__BUDGET_MS", str(STT_BUDGET_MS))

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


#: The files that take longest (seconds on this 2-core machine, serial, 2026-12-02), run
#: first: with two workers the run ends when the last file does, so the long ones
#: must not come last. Every other file keeps its place after them.
_LONGEST_FIRST = (
    "test_bench.py",  # 105: the quick bench, every section
    "test_soak.py",  # 67: 40 s of hostile soak at real-time pace
    "test_failover.py",  # 44: two services, a kill and a restart at real-time pace
    "test_evaluation.py",  # 40
    "test_service_e2e.py",  # 60
    "test_openai.py",  # 45
    "test_whisper_features.py",  # 48: two services (tiny.en, base), 18 uploads
    "test_stt_engine.py",  # 45
    "test_console.py",  # 45
    "test_catchup_bounds.py",  # 30
    "test_upload_bounds.py",  # 30
    "test_cli_errors.py",  # 30
    "test_fuzz.py",  # 30
    "test_session_bridge.py",  # 30
    "test_sessions.py",  # 30
    "test_wyoming_bounds.py",  # 25
    "test_speculative.py",  # 25
    "test_remote_stt.py",  # 6-23: a remote RTAP killed and started again
)


def pytest_sessionfinish() -> None:
    """Free the engines lent to the tests' in-process services (support.ENGINES)."""
    trio.run(ENGINES.aclose)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
