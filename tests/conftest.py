"""Session fixtures: the project's own generated speech (scripts/make_speech.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _make_speech() -> ModuleType:
    path = REPO / "scripts" / "make_speech.py"
    spec = importlib.util.spec_from_file_location("make_speech", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_speech"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def speech() -> dict[str, Any]:
    """The generated fixtures' manifest, with ``dir`` set to where they are.

    Generated once into tests/fixtures/ (git-ignored); regenerated only when
    the generator or its tools changed.
    """
    out = REPO / "tests" / "fixtures"
    manifest_path = _make_speech().generate_fixtures(out)
    manifest: dict[str, Any] = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    manifest["dir"] = out
    manifest["by_file"] = {entry["file"]: entry for entry in manifest["fixtures"]}
    return manifest
