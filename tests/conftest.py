"""Session fixtures: the project's own generated speech (rtap_trio.speechgen)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rtap_trio import speechgen

REPO = Path(__file__).resolve().parents[1]


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
