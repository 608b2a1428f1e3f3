"""Accuracy on recordings with reference transcripts: ``python -m rtap_trio eval``.

Three measurements per folder of recordings: word error rate of the full
pipeline against the bare engine on whole files, wake word detection and false
accepts, and language-ID accuracy. One concept per module:

* :mod:`.references`: what each recording should yield (``eval/*.json`` or a
  generated fixtures ``manifest.json``);
* :mod:`.scoring`: Whisper's normalisers, word errors split into S, D and I,
  keywords matched in order;
* :mod:`.runner`: each file through a session and through the bare engine,
  Porcupine over the whole file, the report assembled;
* :mod:`.report`: the summary figures, the Markdown page, the files written;
* :mod:`.command`: the ``eval`` command.
"""

from __future__ import annotations

from .command import run_eval_command
from .references import (
    DEFAULT_CORPUS,
    DEFAULT_REFERENCES,
    Reference,
    ReferenceSet,
    load_references,
    references_for,
)
from .report import render_markdown, write_report
from .runner import evaluate, evaluate_async
from .scoring import ErrorCounts, align, match_keywords, normalise, word_errors

__all__ = [
    "DEFAULT_CORPUS",
    "DEFAULT_REFERENCES",
    "ErrorCounts",
    "Reference",
    "ReferenceSet",
    "align",
    "evaluate",
    "evaluate_async",
    "load_references",
    "match_keywords",
    "normalise",
    "references_for",
    "render_markdown",
    "run_eval_command",
    "word_errors",
    "write_report",
]
