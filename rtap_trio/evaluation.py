"""Accuracy on recordings with reference transcripts: ``python -m rtap_trio eval``.

Three measurements per folder of recordings:

* **Word error rate** of the full pipeline (wake word where the file has one,
  VAD, endpointing, preprocessing, whisper.cpp; the utterances' texts joined)
  against the bare engine on the whole file (``WhisperEngine.transcribe`` on the
  raw audio, no VAD, no segmentation). Both are scored after Whisper's standard
  normalisers (``EnglishTextNormalizer`` for English, ``BasicTextNormalizer``
  otherwise), and the corpus figure is total errors / total reference words.
  The pipeline leaves the wake word out of its transcripts by design, so it is
  scored against ``text`` (the commands) and the bare engine, which hears
  everything, against ``spoken_text``.
* **Wake word**: Porcupine run over every whole file, with every keyword of the
  reference set listening at once. The pipeline's front-end stops running
  Porcupine while it listens for the command, so several keywords in a row
  would be invisible to it; the detector's own capability is measured instead,
  and what the pipeline saw is reported beside it. Detections are matched to
  the keywords spoken in order; everything unmatched is a false accept.
* **Language ID**: fastText on the pipeline's joined transcript of a file.

An English-only model (``*.en``, the pc2 profile's tiny.en) cannot transcribe
German or Spanish: those files are reported as not applicable for WER and
language ID rather than scored, so the figures stay comparable between runs of
the same model.

References come from either a project reference file (``eval/*.json``:
``keywords`` and ``files`` with ``file``, ``language``, ``text``, optional
``spoken_text``, ``wake_words``, ``score_wer``) or a generated fixtures
``manifest.json`` (``wake_words`` and ``fixtures`` with ``utterances``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from . import __version__
from .audio.file import load_audio, replay_source
from .errors import AudioSourceError, ConfigError, RTAPError
from .settings import Settings, WakewordSettings, load_settings

if TYPE_CHECKING:
    from .pipeline import Engines

__all__ = [
    "DEFAULT_CORPUS",
    "DEFAULT_REFERENCES",
    "ErrorCounts",
    "Reference",
    "ReferenceSet",
    "evaluate",
    "evaluate_async",
    "load_references",
    "match_keywords",
    "normalise",
    "references_for",
    "render_markdown",
    "word_errors",
    "write_report",
]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
DEFAULT_REFERENCES = REPO / "eval" / "shared_corpus.json"
REPORT_FORMAT = "rtap-eval-report/1"


# ---------------------------------------------------------------- references


@dataclass(frozen=True, slots=True)
class Reference:
    file: str
    #: ISO 639-1 code of what is said; None when nothing is (or only keywords are)
    language: str | None
    #: what the pipeline should emit: the commands, wake words left out
    text: str
    #: everything said, wake words included: what the bare engine should hear
    spoken_text: str
    #: keywords in the order spoken
    wake_words: tuple[str, ...] = ()
    score_wer: bool = True
    note: str = ""
    format: str = "wav"


@dataclass(frozen=True, slots=True)
class ReferenceSet:
    source: Path
    #: every keyword Porcupine listens for during the evaluation
    keywords: tuple[str, ...]
    files: tuple[Reference, ...]


def _reference_from_entry(entry: Mapping[str, Any]) -> Reference:
    text = str(entry.get("text") or "")
    if "utterances" in entry:  # generated fixtures' manifest
        wake_words = tuple(u["wake_word"] for u in entry["utterances"] if u.get("wake_word"))
    else:
        wake_words = tuple(entry.get("wake_words") or ())
    return Reference(
        file=str(entry["file"]),
        language=entry.get("language") or None,
        text=text,
        spoken_text=str(entry.get("spoken_text") or text),
        wake_words=wake_words,
        score_wer=bool(entry.get("score_wer", True)),
        note=str(entry.get("note") or entry.get("description") or ""),
        format=str(entry.get("format") or "wav"),
    )


def load_references(path: Path) -> ReferenceSet:
    """A project reference file or a generated fixtures manifest; raises ConfigError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), "", f"cannot read references: {exc}") from None
    entries = data.get("files") if "files" in data else data.get("fixtures")
    if not isinstance(entries, list):
        raise ConfigError(str(path), "", "expected a 'files' or 'fixtures' list")
    try:
        files = tuple(_reference_from_entry(entry) for entry in entries)
    except (KeyError, TypeError) as exc:
        raise ConfigError(str(path), "files", f"malformed entry: {exc!r}") from None
    spoken = {word for ref in files for word in ref.wake_words}
    keywords = tuple(data.get("keywords") or data.get("wake_words") or sorted(spoken))
    missing = spoken - set(keywords)
    if missing:
        raise ConfigError(str(path), "keywords", f"spoken but not listened for: {sorted(missing)}")
    return ReferenceSet(source=path, keywords=keywords, files=files)


def references_for(folder: Path, references: Path | None = None) -> ReferenceSet:
    """``references`` if given, else the folder's ``manifest.json``, else the corpus file."""
    if references is not None:
        return load_references(references)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        return load_references(manifest)
    if folder.resolve() == DEFAULT_CORPUS.resolve() and DEFAULT_REFERENCES.is_file():
        return load_references(DEFAULT_REFERENCES)
    raise ConfigError(
        str(folder), "", "no manifest.json here: name a reference file with --references"
    )


# ---------------------------------------------------------------- text


@functools.cache
def _normaliser(english: bool) -> Callable[[str], str]:
    try:
        from whisper_normalizer.basic import BasicTextNormalizer  # type: ignore[import-untyped]
        from whisper_normalizer.english import EnglishTextNormalizer  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RTAPError(
            "the eval extra is not installed: pip install -e '.[eval]' (whisper-normalizer)"
        ) from exc
    normaliser: Callable[[str], str] = EnglishTextNormalizer() if english else BasicTextNormalizer()
    return normaliser


def normalise(text: str, language: str | None) -> list[str]:
    """Whisper's standard normalisation: English rules for ``en``, basic rules otherwise.

    Both lower-case and drop punctuation; the English one also spells numbers
    as digits, expands contractions and unifies British/American spelling, so
    "ten" and "10" or "Mr." and "mister" are not counted as errors.
    """
    return _normaliser(language == "en")(text).split()


@dataclass(frozen=True, slots=True)
class ErrorCounts:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_words: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        """None for an empty reference: any word said there is an error, but no rate."""
        return self.errors / self.reference_words if self.reference_words else None

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_words + other.reference_words,
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors, "wer": _round(self.wer)}


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> ErrorCounts:
    """Levenshtein alignment of two word lists, split into S, D and I."""
    # Each cell holds (errors, substitutions, deletions, insertions); ties go to
    # the fewest errors first, then to the row-major order of the operations.
    rows = len(reference)
    previous = [(j, 0, 0, j) for j in range(len(hypothesis) + 1)]
    for i in range(1, rows + 1):
        current = [(i, 0, i, 0)]
        for j in range(1, len(hypothesis) + 1):
            diag = previous[j - 1]
            same = reference[i - 1] == hypothesis[j - 1]
            substitute = (diag[0] + (not same), diag[1] + (not same), diag[2], diag[3])
            up = previous[j]
            delete = (up[0] + 1, up[1], up[2] + 1, up[3])
            left = current[j - 1]
            insert = (left[0] + 1, left[1], left[2], left[3] + 1)
            current.append(min(substitute, delete, insert))
        previous = current
    _, s, d, n_ins = previous[-1]
    return ErrorCounts(s, d, n_ins, rows)


def word_errors(reference: str, hypothesis: str, language: str | None) -> ErrorCounts:
    return align(normalise(reference, language), normalise(hypothesis, language))


# ---------------------------------------------------------------- wake word


def match_keywords(expected: Sequence[str], detected: Sequence[str]) -> int:
    """How many detections match the spoken keywords, in order (longest common subsequence)."""
    previous = [0] * (len(detected) + 1)
    for word in expected:
        current = [0]
        for j, found in enumerate(detected, 1):
            current.append(
                previous[j - 1] + 1 if word == found else max(previous[j], current[j - 1])
            )
        previous = current
    return previous[-1]


def _detect_keywords(
    samples: np.ndarray[Any, np.dtype[np.int16]], keywords: Sequence[str], settings: Settings
) -> list[tuple[str, float]]:
    """Porcupine over the whole file, frame by frame as the front-end feeds it."""
    from .stages.wakeword import WakeWordDetector

    frame = settings.audio.frame_samples
    frame_s = frame / settings.audio.sample_rate
    detector = WakeWordDetector(
        WakewordSettings(
            enabled=True,
            keywords=list(keywords),
            sensitivities=list(settings.wakeword.sensitivities),
        )
    )
    found: list[tuple[str, float]] = []
    try:
        padded = np.zeros(-(-samples.size // frame) * frame, dtype=np.int16)
        padded[: samples.size] = samples
        for index, chunk in enumerate(padded.reshape(-1, frame)):
            detection = detector.process(chunk, index)
            if detection is not None:
                found.append((detection.keyword, round((index + 1) * frame_s, 3)))
    finally:
        detector.close()
    return found


# ---------------------------------------------------------------- runs


@dataclass(slots=True)
class _PipelineRun:
    utterances: list[dict[str, Any]] = field(default_factory=list)
    wake_events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(u["text"] for u in self.utterances).strip()


async def _run_pipeline(settings: Settings, engines: Engines, path: Path) -> _PipelineRun:
    """The file through a session (as ``replay`` runs it) on already loaded models."""
    from .sessions import SessionManager
    from .telemetry import Metrics
    from .transport.outbox import Outbox
    from .transport.schemas import EventMessage, EventType, Stream, TranscriptMessage

    run = _PipelineRun()
    outbox = Outbox()
    source = replay_source(path, settings.audio, settings.vad)
    await source.open()
    manager = SessionManager(settings, engines=engines, outbox=outbox, metrics=Metrics())
    session = manager.open("eval")
    subscription = outbox.subscribe("eval", (Stream.TRANSCRIPTS, Stream.EVENTS), 100_000)

    async def collect() -> None:
        async for item in subscription.receive:
            message = item.message
            if isinstance(message, TranscriptMessage):
                run.utterances.append(
                    {
                        "text": message.text,
                        "language": message.language,
                        "language_confidence": message.language_confidence,
                        "wake_word": message.wake_word,
                        "start_s": message.audio_start_s,
                        "end_s": message.audio_end_s,
                    }
                )
            elif isinstance(message, EventMessage) and message.type is EventType.WAKE_WORD:
                run.wake_events.append(
                    {"keyword": message.data["keyword"], "time_s": message.data["offset_s"]}
                )
            elif isinstance(message, EventMessage) and message.type in (
                EventType.STT_TIMEOUT,
                EventType.STAGE_ERROR,
                EventType.SESSION_FAILED,
            ):
                run.errors.append(f"{message.type.value}: {message.data}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        await session.run(source)
        outbox.close()
    return run


def _file_settings(
    user: Mapping[str, Any],
    ref: Reference,
    path: Path,
    keywords: Sequence[str],
    load: Callable[[Mapping[str, Any]], Settings],
) -> Settings:
    values: dict[str, Any] = {
        "wakeword.enabled": bool(ref.wake_words),
        "wakeword.keywords": list(keywords),
        "wakeword.keyword_paths": [],
        "wakeword.sensitivities": [],
    }
    values.update(user)  # --set may still pick sensitivities, for instance
    values.update(_FORCED)
    values["audio.source"] = f"file:{path}"
    return load(values)


_DEFAULTS: dict[str, Any] = {
    # Accuracy, not latency, is measured here: a transcription cut off by the
    # budget on a busy machine would count as deleted words. --set may lower it.
    "stt.budget_ms": 300_000,
    # Warming up pays whisper.cpp's first-call cost before the first user speaks;
    # nothing here is timed, so it would be a wasted transcription.
    "stt.warmup": False,
}

_FORCED: dict[str, Any] = {
    # A batch job like replay: no pacing, no listening ports, no metrics server.
    "audio.mock": False,
    "audio.realtime": False,
    "output.zmq_enabled": False,
    "output.websocket_enabled": False,
    "telemetry.enabled": False,
}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _not_applicable(ref: Reference, english_only: bool, model: str) -> str | None:
    if english_only and ref.language not in (None, "en"):
        return f"{model} is English-only; this file is {ref.language}"
    return None


async def evaluate_async(
    folder: Path,
    references: ReferenceSet,
    *,
    profile: str | None = None,
    settings_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    only: Sequence[str] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run the evaluation; returns the report (see :func:`render_markdown`)."""
    from .pipeline import Engines
    from .stages.language import LanguageAnalyzer
    from .stages.wakeword import builtin_keywords
    from .stt import load_backend

    started = time.perf_counter()
    user = {**_DEFAULTS, **(overrides or {})}

    def load(values: Mapping[str, Any]) -> Settings:
        return load_settings(profile, directory=settings_dir, environ=environ, overrides=values)

    unknown = sorted(set(references.keywords) - set(builtin_keywords()))
    if unknown:
        raise ConfigError(
            str(references.source), "keywords", f"not built into Porcupine: {unknown}"
        )
    known = {r.file for r in references.files}
    strangers = sorted(set(only or ()) - known)
    if strangers:
        raise ConfigError(str(references.source), "files", f"no reference for {strangers}")
    selected = [r for r in references.files if only is None or r.file in only]
    skipped: list[dict[str, str]] = []
    runnable: list[Reference] = []
    for ref in selected:
        path = folder / ref.file
        if ref.format not in ("wav", "flac", "ogg"):
            # Headerless PCM carries no rate or channel count for libsndfile;
            # the fixtures' .raw is a copy of a WAV that is evaluated anyway.
            skipped.append({"file": ref.file, "reason": f"format {ref.format} is not read by eval"})
        elif not path.is_file():
            skipped.append({"file": ref.file, "reason": "missing"})
        else:
            runnable.append(ref)
    if not runnable:
        raise AudioSourceError(f"{folder}: none of the referenced recordings is there")

    settings = load({**user, **_FORCED})
    stt = await load_backend(settings.stt)
    try:
        analyzer = await LanguageAnalyzer.load(settings.language)
        engines = Engines(stt=stt, analyzer=analyzer)
        english_only = stt.english_only
        files = []
        for ref in runnable:
            path = folder / ref.file
            file_settings = _file_settings(user, ref, path, references.keywords, load)
            files.append(
                await _evaluate_file(
                    ref, path, file_settings, engines, references.keywords, english_only
                )
            )
    finally:
        await stt.aclose()

    return {
        "format": REPORT_FORMAT,
        "command": command,
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "rtap_version": __version__,
        "git_commit": _git_commit(),
        "machine": _machine(),
        "profile": settings.environment,
        "model": {
            "name": stt.name,
            "file": stt.origin,
            "english_only": english_only,
            "device": settings.stt.device,
            "n_threads": settings.stt.n_threads,
            "language": settings.stt.language,
            "budget_ms": settings.stt.budget_ms,
        },
        # Every STT knob, so two reports can be told apart by more than the model.
        "stt_settings": settings.stt.model_dump(mode="json"),
        "normaliser": "whisper-normalizer "
        + _version("whisper-normalizer")
        + ": EnglishTextNormalizer for en, BasicTextNormalizer otherwise",
        "corpus": {
            "path": str(folder),
            "references": str(references.source),
            "files": len(files),
            "audio_s": round(sum(f["duration_s"] for f in files), 3),
        },
        "keywords": list(references.keywords),
        "files": files,
        "skipped": skipped,
        "summary": _summary(files),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


async def _evaluate_file(
    ref: Reference,
    path: Path,
    settings: Settings,
    engines: Engines,
    keywords: Sequence[str],
    english_only: bool,
) -> dict[str, Any]:
    samples = await trio.to_thread.run_sync(load_audio, path, settings.audio.sample_rate)
    duration = samples.size / settings.audio.sample_rate
    detections = await trio.to_thread.run_sync(_detect_keywords, samples, keywords, settings)
    detected = [keyword for keyword, _ in detections]
    hits = match_keywords(ref.wake_words, detected)
    result: dict[str, Any] = {
        "file": ref.file,
        "language": ref.language,
        "duration_s": round(duration, 3),
        "note": ref.note,
        "mode": "wake" if settings.wakeword.enabled else "no-wake",
        "wake": {
            "expected": list(ref.wake_words),
            "detected": [{"keyword": k, "time_s": t} for k, t in detections],
            "hits": hits,
            "misses": len(ref.wake_words) - hits,
            "false_accepts": len(detected) - hits,
        },
    }
    reason = _not_applicable(ref, english_only, engines.stt.name)
    if reason is not None:
        result["wer"] = {"applicable": False, "reason": reason}
        result["language_id"] = {"applicable": False, "reason": reason}
        return result

    started = time.perf_counter()
    run = await _run_pipeline(settings, engines, path)
    pipeline_s = time.perf_counter() - started
    audio = samples.astype(np.float32) / 32768.0
    started = time.perf_counter()
    bare = await engines.stt.transcribe(audio)
    result["elapsed_s"] = {
        "pipeline": round(pipeline_s, 2),
        "bare": round(time.perf_counter() - started, 2),
    }
    result["pipeline"] = {
        "text": run.text,
        "utterances": run.utterances,
        "wake_events": run.wake_events,
        "errors": run.errors,
    }
    result["bare"] = {"text": bare.text}
    if ref.score_wer:
        pipeline_counts = word_errors(ref.text, run.text, ref.language)
        bare_counts = word_errors(ref.spoken_text, bare.text, ref.language)
        result["wer"] = {
            "applicable": True,
            "reference": ref.text,
            "spoken_reference": ref.spoken_text,
            "pipeline": pipeline_counts.as_dict(),
            "bare": bare_counts.as_dict(),
            "normalised": {
                "reference": " ".join(normalise(ref.text, ref.language)),
                "pipeline": " ".join(normalise(run.text, ref.language)),
                "spoken_reference": " ".join(normalise(ref.spoken_text, ref.language)),
                "bare": " ".join(normalise(bare.text, ref.language)),
            },
        }
    else:
        result["wer"] = {"applicable": False, "reason": ref.note or "not scored"}
    if ref.language is None or not ref.text:
        result["language_id"] = {"applicable": False, "reason": "no reference language"}
    else:
        guess = engines.analyzer.analyze(run.text)
        result["language_id"] = {
            "applicable": True,
            "expected": ref.language,
            "predicted": guess.language,
            "confidence": round(guess.language_confidence, 4),
            "correct": guess.language == ref.language,
        }
    return result


def _summary(files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
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
            "detection_rate": _round(hits / expected) if expected else None,
            "false_accepts": fa_wake + fa_other,
            "false_accepts_in_wake_word_files": fa_wake,
            "false_accepts_in_other_files": fa_other,
            "hours_listened": round(hours, 5),
            "false_accepts_per_hour": _round((fa_wake + fa_other) / hours, 2) if hours else None,
        },
        "language_id": {
            "files": len(lid),
            "correct": correct,
            "accuracy": _round(correct / len(lid)) if lid else None,
        },
    }


def _counts(data: Mapping[str, Any]) -> dict[str, int]:
    keys = ("substitutions", "deletions", "insertions", "reference_words")
    return {key: int(data[key]) for key in keys}


def evaluate(folder: Path, references: ReferenceSet, **kwargs: Any) -> dict[str, Any]:
    """Blocking wrapper of :func:`evaluate_async`."""
    return trio.run(functools.partial(evaluate_async, folder, references, **kwargs))


# ---------------------------------------------------------------- context


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def _machine() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pywhispercpp": _version("pywhispercpp"),
        "pvporcupine": _version("pvporcupine"),
    }


# ---------------------------------------------------------------- output


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _cell(text: str, limit: int = 70) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _wer_cell(counts: Mapping[str, Any]) -> str:
    rate = _pct(counts["wer"]) if counts["wer"] is not None else f"{counts['errors']} err"
    return f"{rate} ({counts['substitutions']}S/{counts['deletions']}D/{counts['insertions']}I)"


def render_markdown(report: Mapping[str, Any]) -> str:
    model = report["model"]
    summary = report["summary"]
    machine = report["machine"]
    lines = [
        f"# RTAP evaluation: {model['name']} ({report['profile']} profile)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; rtap {report['rtap_version']}"
        + (f" at {report['git_commit']}" if report["git_commit"] else ""),
        f"- machine: {machine['cpu']} ({machine['cpus']} CPUs), {machine['platform']}, "
        f"Python {machine['python']}, pywhispercpp {machine['pywhispercpp']}",
        f"- model: {model['name']} ({model['file']}), {model['device']}, "
        f"{model['n_threads']} threads, language {model['language']}",
        "- stt settings: "
        + ", ".join(f"{k}={v}" for k, v in report["stt_settings"].items() if k != "model_path"),
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
    wer_summary = summary["wer"]
    lines.append(
        f"| **corpus ({wer_summary['files']} files, "
        f"{wer_summary['pipeline']['reference_words']} / {wer_summary['bare']['reference_words']} "
        f"words)** | | | **{_wer_cell(wer_summary['pipeline'])}** | "
        f"**{_wer_cell(wer_summary['bare'])}** | | |"
    )
    wake = summary["wake_word"]
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
    lid_summary = summary["language_id"]
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
    import sys

    from .telemetry import configure_logging

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
