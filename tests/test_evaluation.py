"""``python -m rtap_trio eval`` on the project's generated fixtures: real engines, no mocks.

Two runs keep the test short and still cover both model choices: pc2's
English-only tiny.en on every fixture (German and Spanish must come out as not
applicable), and the default profile's multilingual base on those two alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rtap_trio.cli import build_parser
from rtap_trio.evaluation import (
    DEFAULT_REFERENCES,
    ErrorCounts,
    align,
    evaluate,
    load_references,
    match_keywords,
    normalise,
    references_for,
    render_markdown,
    word_errors,
    write_report,
)

from .support import WHISPER_THREADS

NON_ENGLISH = ("de_kino.wav", "es_restaurante.wav")


def _evaluate(speech: dict[str, Any], profile: str, only: tuple[str, ...] | None) -> dict[str, Any]:
    folder = Path(speech["dir"])
    return evaluate(
        folder,
        references_for(folder),
        profile=profile,
        environ={},  # the developer's RTAP_* variables must not change the result
        overrides={"telemetry.log_level": "WARNING", "stt.whispercpp.n_threads": WHISPER_THREADS},
        only=only,
        command="pytest",
    )


@pytest.fixture(scope="module")
def english_report(speech: dict[str, Any]) -> dict[str, Any]:
    # jarvis_lights_44k_stereo.wav is the same speech at 44.1 kHz stereo: the
    # 16 kHz original adds nothing but time.
    files = tuple(f for f in speech["by_file"] if f != "jarvis_lights.wav")
    return _evaluate(speech, "pc2", files)


@pytest.fixture(scope="module")
def multilingual_report(speech: dict[str, Any]) -> dict[str, Any]:
    return _evaluate(speech, "default", NON_ENGLISH)


# ---------------------------------------------------------------- normaliser and scoring


def test_english_normaliser_numbers_punctuation_casing() -> None:
    assert normalise("Ask NOT what your country can do, for YOU!", "en") == (
        ["ask", "not", "what", "your", "country", "can", "do", "for", "you"]
    )
    assert normalise("I have ten apples.", "en") == ["i", "have", "10", "apples"]
    assert normalise("One hundred and five", "en") == ["105"]
    assert normalise("Twenty-five percent", "en") == ["25%"]
    assert normalise("Mr. Smith won't go.", "en") == ["mister", "smith", "will", "not", "go"]
    assert normalise("Turn on the living-room light!", "en") == (
        ["turn", "on", "the", "living", "room", "light"]
    )
    assert normalise("[BLANK_AUDIO] (music)", "en") == []


def test_basic_normaliser_keeps_letters_of_other_languages() -> None:
    assert normalise("Ich MÖCHTE heute Abend ins Kino gehen.", "de") == (
        ["ich", "möchte", "heute", "abend", "ins", "kino", "gehen"]
    )
    assert normalise("¿Enciende la luz del salón?", "es") == [
        "enciende",
        "la",
        "luz",
        "del",
        "salón",
    ]


def test_word_errors_split_into_substitutions_deletions_insertions() -> None:
    assert align(["a", "b", "c", "d"], ["a", "x", "c", "d", "e"]) == ErrorCounts(1, 0, 1, 4)
    assert align(["a", "b", "c"], ["a", "c"]) == ErrorCounts(0, 1, 0, 3)
    assert align([], ["uh", "huh"]) == ErrorCounts(0, 0, 2, 0)
    counts = word_errors("Turn on the light.", "turn on the lights", "en")
    assert (counts.errors, counts.reference_words, counts.wer) == (1, 4, 0.25)
    assert ErrorCounts(0, 0, 2, 0).wer is None  # no rate on an empty reference
    assert (ErrorCounts(1, 0, 0, 4) + ErrorCounts(0, 1, 1, 6)).wer == pytest.approx(0.3)


def test_keywords_match_in_order() -> None:
    spoken = ["porcupine", "alexa", "porcupine"]
    assert match_keywords(spoken, ["porcupine", "alexa", "porcupine"]) == 3
    assert match_keywords(spoken, ["alexa", "porcupine"]) == 2
    assert match_keywords(spoken, ["terminator", "porcupine"]) == 1
    assert match_keywords([], ["alexa"]) == 0


def test_shared_corpus_references_parse() -> None:
    refs = load_references(DEFAULT_REFERENCES)
    by_file = {ref.file: ref for ref in refs.files}
    assert len(by_file) == 7
    assert {by_file[f].language for f in ("jfk.wav", "turn_on_the_living_room_lamp.wav")} == {"en"}
    assert by_file["living_room_light_de.wav"].language == "de"
    multiple = by_file["porcupine_multiple_keywords.wav"]
    assert len(multiple.wake_words) == 10 and not multiple.score_wer
    assert set(refs.keywords) >= set(multiple.wake_words)


def test_cli_parses_eval() -> None:
    args = build_parser().parse_args(
        ["eval", "tests/fixtures", "--profile", "pc2", "--only", "a.wav", "--out", "x"]
    )
    assert (args.command, args.path, args.only, args.out) == (
        "eval",
        Path("tests/fixtures"),
        ["a.wav"],
        Path("x"),
    )
    assert build_parser().parse_args(["eval"]).out == Path("eval-results")


# ---------------------------------------------------------------- real runs


@pytest.mark.slow
def test_english_only_model_on_the_fixtures(english_report: dict[str, Any]) -> None:
    report = english_report
    summary = report["summary"]
    by_file = {f["file"]: f for f in report["files"]}

    assert report["model"]["name"] == "tiny.en" and report["model"]["english_only"]
    # The pipeline leaves wake words out and gets every command right or nearly.
    assert summary["wer"]["pipeline"]["wer"] <= 0.15, summary["wer"]
    assert summary["wer"]["bare"]["reference_words"] > summary["wer"]["pipeline"]["reference_words"]
    assert summary["wake_word"]["detection_rate"] == 1.0
    assert summary["wake_word"]["false_accepts"] == 0
    assert summary["wake_word"]["hours_listened"] > 0
    assert summary["language_id"]["accuracy"] == 1.0

    two = by_file["two_utterances.wav"]
    assert two["mode"] == "wake" and len(two["pipeline"]["utterances"]) == 2
    assert [e["keyword"] for e in two["pipeline"]["wake_events"]] == ["computer", "computer"]
    assert two["wake"]["hits"] == 2
    stereo = by_file["jarvis_lights_44k_stereo.wav"]  # resampled and downmixed on load
    assert stereo["wer"]["pipeline"]["wer"] <= 0.25
    assert by_file["en_no_wake.wav"]["mode"] == "no-wake"
    noise = by_file["noise_only.wav"]
    assert noise["pipeline"]["text"] == "" and not noise["language_id"]["applicable"]
    for name in NON_ENGLISH:
        assert not by_file[name]["wer"]["applicable"]
        assert not by_file[name]["language_id"]["applicable"]
        assert name in summary["wer"]["not_applicable"]
    assert [s["file"] for s in report["skipped"]] == ["jarvis_lights_s16le_16k_mono.raw"]


@pytest.mark.slow
def test_multilingual_model_on_german_and_spanish(multilingual_report: dict[str, Any]) -> None:
    report = multilingual_report
    assert report["model"]["name"] == "base" and not report["model"]["english_only"]
    assert [f["file"] for f in report["files"]] == list(NON_ENGLISH)
    for f in report["files"]:
        assert f["wer"]["pipeline"]["wer"] <= 0.35, f["wer"]
        assert f["language_id"]["correct"], f["language_id"]
    assert report["summary"]["language_id"]["accuracy"] == 1.0
    assert report["summary"]["wake_word"]["false_accepts"] == 0


@pytest.mark.slow
def test_report_files_and_structure(english_report: dict[str, Any], tmp_path: Path) -> None:
    json_path, md_path = write_report(english_report, tmp_path / "eval-results")
    report = json.loads(json_path.read_text(encoding="utf-8"))
    for key in ("command", "date", "machine", "profile", "model", "corpus", "summary", "files"):
        assert key in report
    assert report["machine"]["cores"] and report["profile"] == "pc2"
    assert set(report["summary"]) == {"wer", "wake_word", "language_id"}
    for f in report["files"]:
        assert {"file", "duration_s", "mode", "wake", "wer", "language_id"} <= set(f)
    markdown = md_path.read_text(encoding="utf-8")
    assert markdown == render_markdown(report)
    assert "## Word error rate" in markdown and "| **corpus" in markdown
    assert "**Detection rate 100.0%**" in markdown and "**Accuracy 100.0%**" in markdown
