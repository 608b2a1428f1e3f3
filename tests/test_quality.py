"""The code base stays ruff- and mypy-clean and keeps its layers: checked with
the suite, so CI enforces it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .support import REPO

PATHS = ["rtap_trio", "tests", "scripts"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_ruff_lint() -> None:
    result = run("ruff", "check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict() -> None:
    result = run("mypy", "rtap_trio")
    assert result.returncode == 0, result.stdout + result.stderr


def test_layers_hold() -> None:
    # import-linter's contracts in pyproject.toml ([tool.importlinter]): the
    # core never imports the edges, stages never import endpoints, engines
    # never import stages (docs/architecture.md).
    lint_imports = Path(sys.executable).with_name("lint-imports")
    # This checkout's package, whichever one the virtualenv has installed.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout
