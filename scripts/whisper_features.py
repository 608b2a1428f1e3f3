"""Measure what prompts, word times and translation cost and give: docs/performance.md.

    .venv/bin/python scripts/whisper_features.py [tiny.en base ...]

For each model, on the rare-name commands of tests/test_whisper_features.py
(the project's espeak-ng speech, a known silence after each word): the names
heard right without a prompt, with a bare list and with a sentence that lists
them; and the CPU time (user + system, every thread of the process) and wall
time per utterance with and without word times, median of the commands after
a warm-up; for a multilingual model, transcribing and translating a German
sentence. Each model with the settings of the profile that uses it (tiny.en:
pc2, base: default).
"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtap_trio.devtools.speechgen.catalogue import DE
from rtap_trio.devtools.speechgen.rendering import synthesize
from rtap_trio.settings import load_settings
from rtap_trio.stages.preprocess import prepare_for_stt
from rtap_trio.stt.whispercpp.context import WhisperContext
from tests.test_whisper_features import (
    COMMANDS,
    NAMES,
    PROMPT,
    names_heard,
    render_command,
)

PROFILES = {"tiny.en": "pc2", "base": "default"}
BARE = ", ".join(NAMES)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(models: list[str]) -> None:
    folder = Path(tempfile.mkdtemp())
    spoken = [render_command(text, folder / f"c{n}.wav") for n, text in enumerate(COMMANDS)]
    for model in models:
        settings = load_settings(
            PROFILES.get(model, "default"), overrides={"stt.whispercpp.model_name": model}
        )
        audio = [
            prepare_for_stt(
                np.frombuffer(s.path.read_bytes()[44:], dtype="<i2"), 16_000, settings.preprocess
            )
            for s in spoken
        ]
        context = WhisperContext(settings.stt)
        names = {}
        for label, prompt in (("none", ""), ("list", BARE), ("sentence", PROMPT)):
            heard: set[str] = set()
            for clip in audio:
                heard |= names_heard(context.transcribe(clip, prompt=prompt).text)
            names[label] = len(heard)
        costs = {}
        for words in (False, True):
            context.transcribe(audio[0], words=words)  # warm-up (loads the DTW context)
            cpu, wall = [], []
            for clip in audio:
                c, w = cpu_s(), time.perf_counter()
                context.transcribe(clip, words=words)
                cpu.append((cpu_s() - c) * 1000)
                wall.append((time.perf_counter() - w) * 1000)
            costs[words] = (statistics.median(cpu), statistics.median(wall))
        if not context.english_only:
            german = synthesize("Ich möchte heute Abend ins Kino gehen.", DE) / 32768
            clip = np.concatenate([np.zeros(8000), german, np.zeros(8000)]).astype(np.float32)
            for task in ("transcribe", "translate", "transcribe", "translate"):
                c = cpu_s()
                result = context.transcribe(clip, task=task)  # type: ignore[arg-type]
                print(f"{model} {task}: {(cpu_s() - c) * 1000:.0f} ms CPU: {result.text}")
        context.close()
        seconds = statistics.median(a.size / 16_000 for a in audio)
        print(
            f"| {model} | {names['none']}/{len(NAMES)} | {names['list']}/{len(NAMES)} "
            f"| {names['sentence']}/{len(NAMES)} | {costs[False][0]:.0f} / {costs[False][1]:.0f} "
            f"| {costs[True][0]:.0f} / {costs[True][1]:.0f} | {seconds:.1f} s |"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["tiny.en", "base"])
