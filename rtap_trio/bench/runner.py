"""``python -m rtap_trio bench``: every measurement in turn, one report.

Sections run one after another (never side by side: on two cores they would
measure each other). A section that fails is recorded as an error with its
message and the others still run; faster-whisper missing is a skip, not an error.
"""

from __future__ import annotations

import functools
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ..settings import Settings
from ..stt.whispercpp import is_english_only
from . import report as reporting
from .common import (
    Clip,
    concatenate,
    corpus_clips,
    corpus_commands,
    default_corpus,
    fixture_clips,
    progress,
    quiet_logging,
)
from .concurrency import measure_concurrency
from .fanout import measure_fanout
from .frontend import measure_frontend
from .latency import measure_latency_ab
from .memory import measure_service_rss
from .remote import measure_remote
from .sections import SECTIONS
from .stt_ab import measure_stt_ab
from .throughput import measure_throughput
from .turns import measure_turns
from .vad import measure_vad

__all__ = ["SECTIONS", "BenchOptions", "run_bench"]


@dataclass
class BenchOptions:
    settings: Settings
    out: Path
    quick: bool = False
    corpus: Path | None = None
    only: list[str] = field(default_factory=list)
    #: how the child process of the memory section gets the same settings
    profile: str | None = None
    settings_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    #: concurrency through HAProxy in front of this many instances (0: one service)
    balance: int = 0


@dataclass
class _Audio:
    fixtures: list[Clip]
    corpus: list[Clip]
    commands: list[Clip]

    @property
    def speech(self) -> list[Clip]:
        return [clip for clip in self.fixtures if clip.has_speech] + self.corpus

    def named(self, name: str) -> list[Clip]:
        return [clip for clip in self.corpus + self.fixtures if clip.name == name]


def _with_tiny(settings: Settings) -> Settings:
    # Same profile, tiny.en: the model the throughput target is stated for.
    whisper = settings.stt.whispercpp.model_copy(update={"model_name": "tiny.en"})
    stt = settings.stt.model_copy(update={"language": "en", "whispercpp": whisper})
    return settings.model_copy(update={"stt": stt})


def _sections(options: BenchOptions, audio: _Audio) -> dict[str, Callable[[], dict[str, Any]]]:
    settings, quick = options.settings, options.quick
    speech = audio.speech
    if not speech:
        raise RuntimeError("no speech to measure: neither generated fixtures nor a corpus")
    jfk = audio.named("jfk.wav") or speech[:1]
    english = [clip for clip in speech if clip.language == "en"]
    # Quick: short English utterances (whisper pads every one to 30 s anyway), one
    # where a figure of one is enough: each is a whisper pass (0.6-0.8 s of CPU,
    # tiny.en on one thread) per engine, and the quick figures are not medians.
    short = english[:2] if len(english) >= 2 else speech[:2]
    # An English-only model on German says nothing about speed that English does not.
    whisper = settings.stt.whispercpp
    english_only = is_english_only(whisper.model_name, whisper.model_path)
    # Real speech first, then the generated; six utterances keep the full run short.
    ab_clips = [c for c in audio.corpus + speech if c.language == "en" or not english_only]
    ab_clips = list({clip.name: clip for clip in ab_clips}.values())[:6]
    # Quick: one short command (one transcript, 5.6 s) rather than 12 s of JFK (two).
    long_audio = (
        concatenate(short[:1], 1.0)
        if quick
        else concatenate(jfk if audio.corpus else speech, 1.0, 45)
    )

    def throughput() -> dict[str, Any]:
        result = trio.run(measure_throughput, settings, long_audio)
        if not quick and settings.stt.whispercpp.model_name != "tiny.en":
            progress("throughput with tiny.en too (the model the target is for)")
            tiny = trio.run(measure_throughput, _with_tiny(settings), long_audio)
            result["tiny_en"] = tiny
        return result

    def memory() -> dict[str, Any]:
        overrides = list(options.overrides)
        if quick:  # the demo unpaced: a transcript within seconds instead of a loop
            overrides.append("audio.realtime=false")
        return measure_service_rss(
            options.profile,
            options.settings_dir,
            overrides,
            transcripts=1 if quick else 2,
            limit_s=60 if quick else 120,
        )

    return {
        "frontend": lambda: measure_frontend(
            settings, concatenate(audio.fixtures or speech, 1.0), quick=quick
        ),
        # Quick: one command, each engine once after its warm-up (two commands were
        # two more passes for a ratio the tests only check is positive).
        "stt_ab": lambda: measure_stt_ab(settings, short[:1] if quick else ab_clips, quick=quick),
        "throughput": throughput,
        # Quick: one command (each variant streams it at real-time pace), without
        # the 1.5 s gap after it: a generated command's own 1.6 s of silence after
        # the speech and the trailing hangover + 0.5 s leave 2.7 s for the endpoint
        # (at most vad.max_hangover_ms, 1.2 s); 3 s less streaming over the variants.
        "latency": lambda: trio.run(
            functools.partial(
                measure_latency_ab,
                settings,
                concatenate(short[:1], 0.0) if quick else concatenate(speech[:6], 1.5),
                60 if quick else 240,
                compare_turn=not quick,
                # Each recorded command three times, 2.5 s apart (six utterances).
                real_speech=None
                if quick or not audio.commands
                else concatenate(audio.commands * 3, 2.5),
            )
        ),
        # Recorded speech as turns: JFK's paused sentence, then the commands.
        "turns": lambda: measure_turns(
            settings, quick=quick, recorded=audio.named("jfk.wav") + audio.commands
        ),
        "vad": lambda: measure_vad(settings, quick=quick),
        "memory": memory,
        "fanout": lambda: trio.run(measure_fanout, 100, 10 if quick else 50, 0.02),
        # Real English speech per session (the corpus, else the fixtures); quick: the
        # short commands only, so that the run stays under a minute.
        "concurrency": lambda: measure_concurrency(
            [c for c in (audio.corpus or speech) if c.language == "en"]
            if not quick
            else [c for c in english if c.duration_s < 6] or english,
            profile=options.profile,
            settings_dir=options.settings_dir,
            overrides=options.overrides,
            quick=quick,
            balance=options.balance,
        ),
        # The same English commands through a second RTAP over loopback and
        # through the local engine; quick: one short one, once each after the
        # warm-ups (a second run was 4 more whisper passes of ~0.65 s, one
        # thread, a second command 2 more, for medians the tests do not read).
        "remote": lambda: measure_remote(
            settings,
            short[:1] if quick else english[:6],
            runs=1 if quick else 5,
            profile=options.profile,
            settings_dir=options.settings_dir,
        ),
    }


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the sections asked for, write bench.json and bench.md, return the report."""
    quiet_logging()
    started = time.perf_counter()
    settings = options.settings
    report: dict[str, Any] = {
        "date": reporting.now_utc(),
        "command": reporting.command_line(options.argv),
        "profile": settings.environment,
        "model": settings.stt.whispercpp.model_name,
        "threads": settings.stt.whispercpp.n_threads,
        "quick": options.quick,
        "machine": reporting.machine(),
        "versions": reporting.versions(),
        "sections": {},
    }
    corpus = options.corpus or default_corpus()
    audio = _Audio(fixture_clips(), corpus_clips(corpus), corpus_commands(corpus))
    report["audio"] = {
        "fixtures": [clip.name for clip in audio.fixtures],
        "corpus": str(corpus),
        "corpus_files": [clip.name for clip in audio.corpus],
    }
    sections = _sections(options, audio)
    for name in options.only or SECTIONS:
        progress(f"{name} ...")
        section_started = time.perf_counter()
        try:
            result = sections[name]()
            status = {"status": "ok"}
            if name == "stt_ab" and "faster_whisper" in result:
                status = dict(result["faster_whisper"])  # skipped: not installed
            elif name == "memory" and result.get("status") != "ok":
                status = {"status": "error", "error": "the child printed no transcript in time"}
        except Exception as exc:
            result = {"traceback": traceback.format_exc(limit=8)}
            status = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        seconds = round(time.perf_counter() - section_started, 1)
        report[name] = result
        report["sections"][name] = {**status, "seconds": seconds}
        progress(f"{name}: {status['status']} in {seconds} s")
    if isinstance(report.get("throughput"), dict) and "tiny_en" in report["throughput"]:
        report["throughput_tiny_en"] = report["throughput"].pop("tiny_en")
    report["duration_s"] = round(time.perf_counter() - started, 1)
    # Other work on the machine inflates every absolute figure; ratios suffer less.
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["headline"] = reporting.headline(report)
    json_path, md_path = reporting.write_report(report, options.out)
    progress(f"report: {json_path} and {md_path}")
    return report
