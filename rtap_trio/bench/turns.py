"""End-of-turn policies on turns whose ends are known (issue 18, item 4).

Two sets of generated speech, each turn's start and end known from the
generator: ``paused_sentences`` (commands with a 0.35-0.55 s pause inside,
the test fixture's sentences) and ``turn_taking`` (short replies, and
thoughts broken off at a comma for 0.7-0.8 s). Each is streamed at real-time
pace through the service twice: with the silence timer alone (``turn.engine:
none``, the profile's hangover) and with the end-of-turn detector
(``smart_turn``). Per policy: turns *cut* (one turn came out as more than one
utterance), turns *lost* (no transcript), and how long the policy waited after
the speech (the endpoint) and the transcript took (end of speech to a ZeroMQ
subscriber).

A third set, ``recorded`` (when ``../shared/corpus`` is there), is real speech:
JFK's sentence, one turn with pauses inside it of 0.9 s (after "Americans,",
which the 600 ms timer cuts) and 0.54 s, then the corpus's recorded commands,
each a turn. The detector hears espeak-ng's fragments as finished (they end on
a final fall) and recorded speech by its tune; this set says what it does with
the second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import trio

from ..devtools.speechgen import PAUSED, TURN_TAKING, Utterance, render
from ..devtools.textmetrics import word_error_rate
from ..items import Samples
from ..settings import Settings
from .common import SAMPLE_RATE, Clip, progress, summarize
from .latency import measure_latency

__all__ = ["measure_turns"]

_SETS: dict[str, tuple[Utterance, ...]] = {
    "paused_sentences": PAUSED,
    "turn_taking": TURN_TAKING,
}
_POLICIES = ("none", "smart_turn")


def _policy(settings: Settings, engine: str) -> Settings:
    turn = settings.turn.model_copy(update={"engine": engine})
    # Partials are beside the point here and only add load.
    stt = settings.stt.model_copy(update={"partials": False})
    return settings.model_copy(update={"turn": turn, "stt": stt})


def _score(timings: list[dict[str, Any]], result: dict[str, Any]) -> dict[str, Any]:
    """Which utterances fell in which turn: cuts, losses, words, waits."""
    rows = result["per_utterance"]
    texts = result["texts"]
    cut = lost = 0
    cut_turns: list[str] = []  # what each cut turn came out as, its pieces
    endpoint: list[float] = []
    total: list[float] = []
    errors: list[float] = []
    for turn in timings:
        start, end = float(turn["command_start_s"]), float(turn["command_end_s"])
        inside = [
            (row, text)
            for row, text in zip(rows, texts, strict=False)
            if row["audio_end_s"] > start and row["audio_start_s"] < end + 0.2
        ]
        if not inside:
            lost += 1
            continue
        if len(inside) > 1:
            cut += 1
            cut_turns.append(" | ".join(text for _, text in inside))
        last, _ = inside[-1]
        endpoint.append(last["endpoint"])
        total.append(last["total"])
        errors.append(word_error_rate(turn["text"], " ".join(text for _, text in inside)))
    return {
        "turns": len(timings),
        "utterances": len(rows),
        "cut": cut,
        "cut_turns": cut_turns,
        "lost": lost,
        "endpoint_ms": summarize(endpoint, 1),
        "speech_end_to_transcript_ms": summarize(total, 1),
        "wer": round(sum(errors) / len(errors), 3) if errors else None,
    }


#: Silence before, between and after the recorded turns: longer than the
#: detector's longest hold (vad.max_hangover_ms, 1.2 s), so that no turn is
#: held into the next.
_RECORDED_GAP_S = 2.5


def _recorded(clips: Sequence[Clip]) -> tuple[Samples, list[dict[str, Any]]]:
    """The recorded clips one after another, each one turn (its whole file)."""
    gap = np.zeros(round(_RECORDED_GAP_S * SAMPLE_RATE), dtype=np.int16)
    parts: list[Samples] = [gap]
    timings: list[dict[str, Any]] = []
    position = gap.size
    for clip in clips:
        timings.append(
            {
                "text": clip.text or "",
                "command_start_s": position / SAMPLE_RATE,
                "command_end_s": (position + clip.samples.size) / SAMPLE_RATE,
            }
        )
        parts += [clip.samples, gap]
        position += clip.samples.size + gap.size
    return np.concatenate(parts), timings


def measure_turns(
    settings: Settings, quick: bool = False, recorded: Sequence[Clip] = ()
) -> dict[str, Any]:
    """Every set under every policy; the quick run: the detector on the first
    two turns of the turn-taking set ("Yes." and a broken-off order).
    ``recorded``: real speech, each clip one turn (not in the quick run)."""
    report: dict[str, Any] = {"hangover_ms": settings.vad.hangover_ms, "sets": {}}
    sets: dict[str, tuple[Samples, list[dict[str, Any]]]] = {
        name: render(utterances, f"bench {name}")
        for name, utterances in ({"turn_taking": TURN_TAKING[:2]} if quick else _SETS).items()
    }
    if recorded and not quick:
        sets["recorded"] = _recorded(recorded)
    for name, (pcm, timings) in sets.items():
        scored: dict[str, Any] = {}
        for engine in ("smart_turn",) if quick else _POLICIES:
            progress(f"turns: {name} with turn.engine {engine}")
            result = trio.run(measure_latency, _policy(settings, engine), pcm, 120.0)
            scored[engine] = _score(timings, result)
        report["sets"][name] = scored
    return report
