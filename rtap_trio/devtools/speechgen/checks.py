"""Checks that the generated speech is what the tests take it for.

Porcupine must hear each wake word once, soon after it ends, at every frame
alignment, and no other wake word; webrtcvad must hear each wake word and
command and (almost) nothing away from them. ``scripts/make_speech.py --check``
and ``tests/test_fixtures_speech.py`` run them; Porcupine and webrtcvad are
imported only when a check runs, so generating needs neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .catalogue import DEMO, DEMO_TOOLS, WAKE_SENSITIVITY, WAKE_WORDS, demo_path
from .manifest import load_manifest
from .rendering import SAMPLE_RATE, Pcm, read_pcm, render, silence, to_pcm, tool_versions

__all__ = [
    "MAX_WAKE_LATENCY_S",
    "OFFSETS",
    "VAD_MODES",
    "check_audio",
    "check_demo",
    "check_fixtures",
    "check_vad",
    "check_wake_words",
    "demo_entry",
    "detect_wake_word",
    "detect_wake_words",
    "vad_flags",
]


def detect_wake_word(
    pcm: Pcm, keyword: str, sensitivity: float = WAKE_SENSITIVITY, offset: int = 0
) -> list[float]:
    """Times (s, end of the frame that fired) at which Porcupine hears ``keyword``.

    ``offset`` samples of noise floor are put in front first, to shift how the
    512-sample frames line up with the speech; returned times exclude it.
    """
    return detect_wake_words(pcm, [keyword], sensitivity, offset)[keyword]


def detect_wake_words(
    pcm: Pcm, keywords: Sequence[str], sensitivity: float = WAKE_SENSITIVITY, offset: int = 0
) -> dict[str, list[float]]:
    """:func:`detect_wake_word` for several keywords on one Porcupine, as the
    pipeline listens: one pass over the audio for all of them.

    Porcupine says one keyword per frame; on every fixture and the demo, at
    every offset, each keyword's times are those of a Porcupine of its own
    (measured), at a quarter of the CPU for the four wake words.
    """
    import pvporcupine

    if offset:
        pcm = np.concatenate([to_pcm(silence(offset / SAMPLE_RATE), "offset"), pcm])
    porcupine = pvporcupine.create(
        keywords=list(keywords), sensitivities=[sensitivity] * len(keywords)
    )
    try:
        n = porcupine.frame_length
        hits: dict[str, list[float]] = {keyword: [] for keyword in keywords}
        for i in range(0, pcm.size - n + 1, n):
            index = porcupine.process(pcm[i : i + n].tolist())
            if index >= 0:
                hits[keywords[index]].append(round((i + n - offset) / SAMPLE_RATE, 3))
        return hits
    finally:
        porcupine.delete()


def vad_flags(pcm: Pcm, mode: int = 3, frame_ms: int = 20) -> npt.NDArray[np.bool_]:
    """webrtcvad's speech decision per ``frame_ms`` frame (a trailing partial frame is dropped)."""
    import webrtcvad

    vad = webrtcvad.Vad(mode)
    n = SAMPLE_RATE * frame_ms // 1000
    data = pcm.astype("<i2")
    return np.array(
        [
            vad.is_speech(data[i : i + n].tobytes(), SAMPLE_RATE)
            for i in range(0, data.size - n + 1, n)
        ],
        dtype=bool,
    )


#: Frame alignments every wake-word detection must survive.
OFFSETS = (0, 128, 256, 384)
# Porcupine decides shortly after the word ends; a detection later than this
# after the wake word's end would be a lucky hit on the command instead.
MAX_WAKE_LATENCY_S = 1.0
# A turn counts as heard by the VAD when at least this share of its frames
# (wake word and command separately; pauses between words are not speech) is speech.
MIN_SPEECH_SHARE = 0.5
# Away from speech (VAD_MARGIN_S either side) at most this share may be speech.
MAX_SILENCE_SPEECH_SHARE = 0.02
VAD_MARGIN_S = 0.3
# webrtcvad starts without a noise estimate and may call the first few frames
# of any file speech; the pipeline's minimum speech length absorbs that.
VAD_WARMUP_S = 0.1
#: webrtcvad's two strict modes; the pipeline uses one of them.
VAD_MODES = (2, 3)


def _share(flags: npt.NDArray[np.bool_], start_s: float, end_s: float, frame_s: float) -> float:
    a, b = int(start_s / frame_s), int(np.ceil(end_s / frame_s))
    part = flags[max(a, 0) : max(b, 0)]
    return float(part.mean()) if part.size else 0.0


def check_wake_words(
    name: str, pcm: Pcm, entry: dict[str, Any], offsets: Sequence[int] = OFFSETS
) -> list[str]:
    """Each turn's wake word heard once, soon after it ends; no other wake word heard.

    All wake words listen on one Porcupine per offset (:func:`detect_wake_words`):
    8.0 s of CPU on the fixtures and the demo with one Porcupine each, 2.05 s.
    """
    problems: list[str] = []
    turns: list[dict[str, Any]] = entry.get("utterances", [])
    for offset in offsets:
        heard = detect_wake_words(pcm, WAKE_WORDS, offset=offset)
        for keyword in WAKE_WORDS:
            expected = [t for t in turns if t["wake_word"] == keyword]
            hits = heard[keyword]
            where = f"{name}: '{keyword}' (offset {offset})"
            if len(hits) != len(expected):
                problems.append(f"{where}: {len(hits)} detections at {hits}, want {len(expected)}")
                continue
            for hit, turn in zip(hits, expected, strict=True):
                if not turn["wake_end_s"] <= hit + 0.05 <= turn["wake_end_s"] + MAX_WAKE_LATENCY_S:
                    problems.append(
                        f"{where}: fired at {hit}s, wake word ends {turn['wake_end_s']}"
                    )
    return problems


def check_vad(name: str, pcm: Pcm, entry: dict[str, Any], mode: int = 3) -> list[str]:
    """webrtcvad hears each wake word and command, and (almost) nothing away from them."""
    problems: list[str] = []
    frame_s = 0.02
    flags = vad_flags(pcm, mode)
    speech = np.zeros(flags.size, dtype=bool)
    speech[: int(VAD_WARMUP_S / frame_s)] = True
    for turn in entry.get("utterances", []):
        spans = [("command", turn["command_start_s"], turn["command_end_s"])]
        if turn["wake_word"]:
            spans.append(("wake word", turn["wake_start_s"], turn["wake_end_s"]))
        for label, start, end in spans:
            share = _share(flags, start, end, frame_s)
            if share < MIN_SPEECH_SHARE:
                problems.append(f"{name}: VAD mode {mode} hears {share:.0%} of the {label}")
        a = int((turn["speech_start_s"] - VAD_MARGIN_S) / frame_s)
        b = int(np.ceil((turn["speech_end_s"] + VAD_MARGIN_S) / frame_s))
        speech[max(a, 0) : b] = True
    if (~speech).any():
        share = float(flags[~speech].mean())
        if share > MAX_SILENCE_SPEECH_SHARE:
            problems.append(f"{name}: VAD mode {mode} calls {share:.1%} of the silence speech")
    return problems


def check_audio(name: str, pcm: Pcm, entry: dict[str, Any]) -> list[str]:
    """Problems with one file: wake words missed or falsely heard, VAD disagreeing."""
    return check_wake_words(name, pcm, entry) + [
        problem for mode in VAD_MODES for problem in check_vad(name, pcm, entry, mode)
    ]


def check_fixtures(manifest_path: Path) -> list[str]:
    """Every fixture checked (see check_audio); returns the problems found."""
    problems: list[str] = []
    for entry in load_manifest(manifest_path):
        path = Path(manifest_path).parent / entry["file"]
        problems += check_audio(entry["file"], read_pcm(path), entry)
    return problems


def demo_entry() -> dict[str, Any]:
    """The demo's timing, as a manifest-style entry (it is not stored next to the file)."""
    _, timings = render([DEMO], "demo")
    return {"file": "demo.wav", "utterances": timings, **timings[0]}


def check_demo(path: Path | None = None) -> list[str]:
    """Problems with the demo at ``path`` (default: the packaged file): stale bytes, wake
    word or VAD (see :func:`check_audio`)."""
    path = demo_path() if path is None else Path(path)
    problems = []
    pcm, _ = render([DEMO], "demo")
    if read_pcm(path).tobytes() != pcm.tobytes():
        # Only a fault when the tools are the ones that made the shipped file.
        problems.append(
            f"{path} differs from what rtap_trio.devtools.speechgen makes now "
            f"(tools: {tool_versions()}; shipped demo made with {DEMO_TOOLS}): "
            "run scripts/make_speech.py --demo"
        )
    return problems + check_audio("demo.wav", read_pcm(path), demo_entry())
