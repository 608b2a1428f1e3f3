"""The evaluation's report: its summary figures, the Markdown page, the files written.

The report itself is a plain JSON-able dict (built by
:func:`rtap_trio.evaluation.runner.evaluate_async`); this module reads it and
never runs anything, so a saved ``eval-*.json`` renders again the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .scoring import ErrorCounts, round_or_none

__all__ = ["render_markdown", "summary", "write_report"]


def summary(files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Corpus figures from the per-file results: WER, wake word, language ID."""
    scored = [f for f in files if f["wer"]["applicable"]]
    pipeline, bare = ErrorCounts(), ErrorCounts()
    for f in scored:
        pipeline += ErrorCounts(**_counts(f["wer"]["pipeline"]))
        bare += ErrorCounts(**_counts(f["wer"]["bare"]))
    wake_files = [f for f in files if f["wake"]["expected"]]
    expected = sum(len(f["wake"]["expected"]) for f in wake_files)
    hits = sum(f["wake"]["hits"] for f in wake_files)
    fa_wake = sum(f["wake"]["false_accepts"] for f in wake_files)
    fa_other = sum(f["wake"]["false_accepts"] for f in files if not f["wake"]["expected"])
    hours = sum(f["duration_s"] for f in files) / 3600
    lid = [f["language_id"] for f in files if f["language_id"]["applicable"]]
    correct = sum(1 for item in lid if item["correct"])
    return {
        "wer": {
            "files": len(scored),
            "not_applicable": [f["file"] for f in files if not f["wer"]["applicable"]],
            "pipeline": pipeline.as_dict(),
            "bare": bare.as_dict(),
        },
        "wake_word": {
            "files_with_wake_words": len(wake_files),
            "expected": expected,
            "detected": hits,
            "detection_rate": round_or_none(hits / expected) if expected else None,
            "false_accepts": fa_wake + fa_other,
            "false_accepts_in_wake_word_files": fa_wake,
            "false_accepts_in_other_files": fa_other,
            "hours_listened": round(hours, 5),
            "false_accepts_per_hour": round_or_none((fa_wake + fa_other) / hours, 2)
            if hours
            else None,
        },
        "language_id": {
            "files": len(lid),
            "correct": correct,
            "accuracy": round_or_none(correct / len(lid)) if lid else None,
        },
    }


def _counts(data: Mapping[str, Any]) -> dict[str, int]:
    keys = ("substitutions", "deletions", "insertions", "reference_words")
    return {key: int(data[key]) for key in keys}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _cell(text: str, limit: int = 70) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _wer_cell(counts: Mapping[str, Any]) -> str:
    rate = _pct(counts["wer"]) if counts["wer"] is not None else f"{counts['errors']} err"
    return f"{rate} ({counts['substitutions']}S/{counts['deletions']}D/{counts['insertions']}I)"


def _flat(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A settings section's keys with their values, a nested section's as ``section.key``."""
    items: list[tuple[str, Any]] = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            items += _flat(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def render_markdown(report: Mapping[str, Any]) -> str:
    model = report["model"]
    figures = report["summary"]
    machine = report["machine"]
    lines = [
        f"# RTAP evaluation: {model['name']} ({report['profile']} profile)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; rtap {report['rtap_version']}"
        + (f" at {report['git_commit']}" if report["git_commit"] else ""),
        f"- machine: {machine['cpu_model']} ({machine['cores']} CPUs), {machine['platform']}, "
        f"Python {machine['python']}, pywhispercpp {machine['pywhispercpp']}",
        f"- model: {model['name']} ({model['file']}), {model['device']}, "
        f"{model['n_threads']} threads, language {model['language']}",
        "- stt settings: "
        + ", ".join(
            f"{k}={v}" for k, v in _flat(report["stt_settings"]) if not k.endswith("model_path")
        ),
        f"- corpus: {report['corpus']['path']} ({report['corpus']['files']} files, "
        f"{report['corpus']['audio_s']:.1f} s), references {report['corpus']['references']}",
        f"- normaliser: {report['normaliser']}",
        f"- took {report['elapsed_s']} s",
        "",
        "## Word error rate",
        "",
        "Pipeline: wake word (where the file has one), VAD, endpointing, whisper.cpp; "
        "the utterances joined, scored against the commands. Bare engine: the whole file "
        "in one call, scored against everything said.",
        "",
        "| file | lang | mode | pipeline WER | bare WER | pipeline transcript | bare transcript |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in report["files"]:
        wer = f["wer"]
        if wer["applicable"]:
            cells = [
                _wer_cell(wer["pipeline"]),
                _wer_cell(wer["bare"]),
                _cell(f["pipeline"]["text"]),
                _cell(f["bare"]["text"]),
            ]
        else:
            # Still show what was heard: keyword-only files are run, just not scored.
            pipeline_text = _cell(f.get("pipeline", {}).get("text", ""))
            bare_text = _cell(f.get("bare", {}).get("text", ""))
            cells = ["n/a", "n/a", pipeline_text or f"({_cell(wer['reason'])})", bare_text]
        lines.append(
            f"| {f['file']} | {f['language'] or '-'} | {f['mode']} | " + " | ".join(cells) + " |"
        )
    wer_summary = figures["wer"]
    lines.append(
        f"| **corpus ({wer_summary['files']} files, "
        f"{wer_summary['pipeline']['reference_words']} / {wer_summary['bare']['reference_words']} "
        f"words)** | | | **{_wer_cell(wer_summary['pipeline'])}** | "
        f"**{_wer_cell(wer_summary['bare'])}** | | |"
    )
    wake = figures["wake_word"]
    lines += [
        "",
        "## Wake word",
        "",
        f"Porcupine over every whole file, listening for {', '.join(report['keywords'])}. "
        "Detections are matched in order to the keywords spoken; the rest are false accepts.",
        "",
        "| file | spoken | detected (s) | hits | misses | false accepts | pipeline saw |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in report["files"]:
        w = f["wake"]
        detected = ", ".join(f"{d['keyword']} {d['time_s']:.2f}" for d in w["detected"])
        seen = ", ".join(e["keyword"] for e in f.get("pipeline", {}).get("wake_events", []))
        lines.append(
            f"| {f['file']} | {', '.join(w['expected']) or '-'} | {detected or '-'} | "
            f"{w['hits']} | {w['misses']} | {w['false_accepts']} | {seen or '-'} |"
        )
    fa_per_hour = wake["false_accepts_per_hour"]
    lines += [
        "",
        f"**Detection rate {_pct(wake['detection_rate'])}** ({wake['detected']} of "
        f"{wake['expected']} in {wake['files_with_wake_words']} files); **false accepts "
        f"{wake['false_accepts']}** ({wake['false_accepts_in_wake_word_files']} in wake word "
        f"files, {wake['false_accepts_in_other_files']} elsewhere) in "
        f"{wake['hours_listened'] * 3600:.1f} s = {wake['hours_listened']:.4f} h listened: "
        f"{'n/a' if fa_per_hour is None else f'{fa_per_hour:.1f}'} per hour "
        "(minutes of audio: a count on this corpus, not a rate to rely on).",
        "",
        "## Language ID",
        "",
        "fastText lid.176 on the pipeline's joined transcript of each file.",
        "",
        "| file | reference | predicted | confidence | correct |",
        "|---|---|---|---|---|",
    ]
    for f in report["files"]:
        lid = f["language_id"]
        if lid["applicable"]:
            lines.append(
                f"| {f['file']} | {lid['expected']} | {lid['predicted']} | "
                f"{lid['confidence']:.2f} | {'yes' if lid['correct'] else '**no**'} |"
            )
        else:
            lines.append(
                f"| {f['file']} | {f['language'] or '-'} | n/a | | {_cell(lid['reason'])} |"
            )
    lid_summary = figures["language_id"]
    lines += [
        "",
        f"**Accuracy {_pct(lid_summary['accuracy'])}** "
        f"({lid_summary['correct']} of {lid_summary['files']}).",
    ]
    failures = [
        f"{f['file']}: {error}"
        for f in report["files"]
        for error in f.get("pipeline", {}).get("errors", [])
    ]
    if failures:
        lines += ["", "Pipeline errors: " + "; ".join(failures)]
    if report["skipped"]:
        lines += [
            "",
            "Skipped: " + "; ".join(f"{s['file']} ({s['reason']})" for s in report["skipped"]),
        ]
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``eval-<model>-<date>.json`` and ``.md`` in ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["date"].replace(":", "").replace("-", "").replace("+0000", "Z")
    stem = f"eval-{report['model']['name']}-{stamp}"
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path
