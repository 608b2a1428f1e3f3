"""Session fixtures: the project's own generated speech (rtap_trio.devtools.speechgen)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from rtap_trio.devtools import speechgen

REPO = Path(__file__).resolve().parents[1]

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
