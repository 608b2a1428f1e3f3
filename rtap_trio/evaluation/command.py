"""``python -m rtap_trio eval``: the command line's entry into the evaluation."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..settings import load_settings
from .references import DEFAULT_CORPUS, references_for
from .report import render_markdown, write_report
from .runner import evaluate

__all__ = ["run_eval_command"]


def run_eval_command(
    *,
    path: Path | None,
    references: Path | None,
    profile: str | None,
    settings_dir: Path | None,
    overrides: Mapping[str, Any],
    only: Sequence[str] | None,
    out: Path,
    command: str,
) -> int:
    """``python -m rtap_trio eval``: run, write the reports, print the Markdown."""
    # Imported here, as the pipeline's modules are in the runner: importing the
    # package for its scoring (textmetrics, the tests) need not load telemetry.
    from ..logs import configure_logging

    folder = path if path is not None else DEFAULT_CORPUS
    refs = references_for(folder, references)
    values = {"telemetry.log_level": "WARNING", **overrides}
    log_settings = load_settings(profile, directory=settings_dir, overrides=values).telemetry
    configure_logging(log_settings, "eval")
    report = evaluate(
        folder,
        refs,
        profile=profile,
        settings_dir=settings_dir,
        overrides=values,
        only=only,
        command=command,
    )
    json_path, md_path = write_report(report, out)
    print(render_markdown(report))
    print(f"report: {json_path} and {md_path}", file=sys.stderr)
    return 0
