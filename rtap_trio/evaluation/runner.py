"""Running the evaluation: each file through a session and through the bare engine.

Per file:

* **Word error rate** of the full pipeline (wake word where the file has one,
  VAD, endpointing, preprocessing, whisper.cpp; the utterances' texts joined)
  against the bare engine on the whole file (``SttBackend.transcribe`` on the
  raw audio, no VAD, no segmentation), both scored by :mod:`.scoring`.
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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..audio.file import load_audio, replay_source
from ..audio.framing import split_frames
from ..audio.pcm import pcm_to_float
from ..errors import AudioSourceError, ConfigError
from ..items import Samples
from ..machine import describe_machine, package_version
from ..settings import Settings, WakewordSettings, load_settings
from ..version import __version__
from .references import REPO, Reference, ReferenceSet
from .report import summary
from .scoring import match_keywords, normalise, word_errors

if TYPE_CHECKING:
    from ..pipeline import Engines

__all__ = ["REPORT_FORMAT", "evaluate", "evaluate_async"]

#: 2: the machine described as the bench describes it (cpu_model, cores, ...).
REPORT_FORMAT = "rtap-eval-report/2"

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
    "http.enabled": False,
}


def _detect_keywords(
    samples: Samples, keywords: Sequence[str], settings: Settings
) -> list[tuple[str, float]]:
    """Porcupine over the whole file, frame by frame as the front-end feeds it."""
    from ..stages.wakeword import WakeWordDetector
    from ..wakeword import load_wakeword

    frame = settings.audio.frame_samples
    frame_s = frame / settings.audio.sample_rate
    detector = WakeWordDetector(
        load_wakeword(
            WakewordSettings(
                enabled=True,
                keywords=list(keywords),
                sensitivities=list(settings.wakeword.sensitivities),
            )
        )
    )
    found: list[tuple[str, float]] = []
    try:
        for index, chunk in enumerate(split_frames(samples, frame)):
            detection = detector.process(chunk, index)
            if detection is not None:
                found.append((detection.keyword, round((index + 1) * frame_s, 3)))
    finally:
        detector.close()
    return found


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
    from ..events import SessionFailed, StageError, SttTimeout, WakeWord
    from ..metrics import Metrics
    from ..sessions import SessionManager
    from ..transport.outbox import Outbox
    from ..transport.schemas import Stream, TranscriptMessage

    run = _PipelineRun()
    outbox = Outbox()
    source = replay_source(path, settings.audio, settings.vad)
    await source.open()
    manager = SessionManager(settings, engines=engines, outbox=outbox, metrics=Metrics())
    streams = (Stream.TRANSCRIPTS, Stream.EVENTS)
    async with manager.open_bridge(
        "eval", audio=source, streams=streams, queue_size=100_000
    ) as bridge:
        async for item in bridge.messages:
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
            elif isinstance(item.event, WakeWord):
                run.wake_events.append(
                    {"keyword": item.event.keyword, "time_s": item.event.offset_s}
                )
            elif isinstance(item.event, SttTimeout | StageError | SessionFailed):
                run.errors.append(f"{item.event.type.value}: {item.event.wire_data()}")
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
    from ..pipeline import Engines
    from ..stages.language import LanguageAnalyzer
    from ..stt import load_backend
    from ..vad import load_vad
    from ..wakeword import builtin_keywords

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
        engines = Engines(
            stt=stt, analyzer=analyzer, vad=load_vad(settings.vad, settings.audio.sample_rate)
        )
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
        "machine": {
            **describe_machine(),
            "pywhispercpp": _version("pywhispercpp"),
            "pvporcupine": _version("pvporcupine"),
        },
        "profile": settings.environment,
        "model": {
            "name": stt.name,
            "file": stt.origin,
            "english_only": english_only,
            "device": settings.stt.whispercpp.device,
            "n_threads": settings.stt.whispercpp.n_threads,
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
        "summary": summary(files),
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
    audio = pcm_to_float(samples)
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


def evaluate(folder: Path, references: ReferenceSet, **kwargs: Any) -> dict[str, Any]:
    """Blocking wrapper of :func:`evaluate_async`."""
    return trio.run(functools.partial(evaluate_async, folder, references, **kwargs))


def _version(package: str) -> str:
    """As the report has always printed it: a missing package is a phrase, not null."""
    return package_version(package) or "not installed"


def _git_commit() -> str | None:
    """The checkout's commit, so a report names the code it measured; None outside git."""
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
