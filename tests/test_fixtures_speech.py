"""The generated speech (rtap_trio.devtools.speechgen) against the real engines.

Porcupine and webrtcvad run for real on the demo and on every fixture: if the
synthetic voice stopped triggering the wake word, every pipeline test built on
these files would fail for a reason far from its own code, so it is caught here.
"""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path
from typing import Any

import pytest

from rtap_trio.devtools import speechgen

pytest.importorskip("pvporcupine")
pytest.importorskip("webrtcvad")
if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
    pytest.skip("espeak-ng and sox are needed (scripts/setup.sh)", allow_module_level=True)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = speechgen.generate_fixtures(tmp_path_factory.mktemp("speech"))
    return path


@pytest.fixture(scope="module")
def entries(manifest: Path) -> dict[str, dict[str, Any]]:
    return {e["file"]: e for e in speechgen.load_manifest(manifest)}


def _files() -> list[str]:
    # Parametrising needs the names before any fixture runs; the module's
    # own lists are the source of the manifest, so they give the same names.
    names = [f.file for f in speechgen.FIXTURES]
    return [*names, speechgen.STEREO_FILE, speechgen.RAW_FILE, speechgen.NOISE_FILE]


def test_generation_is_deterministic(manifest: Path, tmp_path: Path) -> None:
    again = speechgen.generate_fixtures(tmp_path / "again")
    first = {p.name: p.read_bytes() for p in manifest.parent.iterdir() if p.is_file()}
    second = {p.name: p.read_bytes() for p in again.parent.iterdir() if p.is_file()}
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_generation_skips_work_when_current(tmp_path: Path) -> None:
    manifest = speechgen.generate_fixtures(tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert speechgen.generate_fixtures(tmp_path) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps

    # A damaged file is noticed (checksums in the manifest) and remade.
    damaged = tmp_path / speechgen.DERIVED_FROM
    good = damaged.read_bytes()
    damaged.write_bytes(good[:1000])
    speechgen.generate_fixtures(tmp_path)
    assert damaged.read_bytes() == good

    # So is a manifest from another generator version.
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["generator_hash"] = "stale"
    manifest.write_text(json.dumps(data), encoding="utf-8")
    speechgen.generate_fixtures(tmp_path)
    assert json.loads(manifest.read_text(encoding="utf-8"))["generator_hash"] != "stale"


def test_manifest_matches_the_files(manifest: Path, entries: dict[str, dict[str, Any]]) -> None:
    assert sorted(entries) == sorted(_files())
    for name, entry in entries.items():
        path = manifest.parent / name
        if entry["format"] == "raw_s16le":
            seconds = path.stat().st_size / 2 / entry["sample_rate"]
        else:
            with wave.open(str(path), "rb") as w:
                assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (
                    entry["sample_rate"],
                    entry["channels"],
                    2,
                ), name
                seconds = w.getnframes() / w.getframerate()
        assert seconds == pytest.approx(entry["duration_s"], abs=0.001), name
        for turn in entry["utterances"]:
            if turn["wake_word"]:
                assert turn["wake_start_s"] < turn["wake_end_s"] < turn["command_start_s"]
            assert turn["speech_start_s"] <= turn["command_start_s"] < turn["command_end_s"]
            assert turn["speech_end_s"] < entry["duration_s"]
    assert entries[speechgen.STEREO_FILE]["sample_rate"] == 44100
    assert entries[speechgen.STEREO_FILE]["channels"] == 2
    assert entries[speechgen.NOISE_FILE]["utterances"] == []
    assert {e["language"] for e in entries.values()} == {"en", "de", "es", None}


def test_demo_is_current(tmp_path: Path) -> None:
    if speechgen.tool_versions() != speechgen.DEMO_TOOLS:
        pytest.skip(
            f"demo.wav was made with {speechgen.DEMO_TOOLS}, this machine has other versions"
        )
    speechgen.generate_demo(tmp_path / "demo.wav")
    assert (tmp_path / "demo.wav").read_bytes() == speechgen.demo_path().read_bytes(), (
        "rtap_trio/audio/data/demo.wav is stale: run python scripts/make_speech.py --demo"
    )


def test_demo_wake_word_and_speech() -> None:
    pcm = speechgen.read_pcm(speechgen.demo_path())
    entry = speechgen.demo_entry()
    hits = speechgen.detect_wake_word(pcm, "computer")
    assert len(hits) == 1
    assert entry["wake_end_s"] < hits[0] < entry["command_start_s"] + 0.5
    assert speechgen.check_wake_words("demo.wav", pcm, entry) == []
    for mode in speechgen.VAD_MODES:
        assert speechgen.check_vad("demo.wav", pcm, entry, mode) == []


@pytest.mark.parametrize("name", _files())
def test_wake_words(manifest: Path, entries: dict[str, dict[str, Any]], name: str) -> None:
    """Each fixture's wake word fires (at every frame alignment), no other one does."""
    entry = entries[name]
    pcm = speechgen.read_pcm(manifest.parent / name)
    assert speechgen.check_wake_words(name, pcm, entry) == []


@pytest.mark.parametrize("name", _files())
@pytest.mark.parametrize("mode", [2, 3])
def test_vad_finds_the_speech(
    manifest: Path, entries: dict[str, dict[str, Any]], name: str, mode: int
) -> None:
    entry = entries[name]
    pcm = speechgen.read_pcm(manifest.parent / name)
    assert speechgen.check_vad(name, pcm, entry, mode) == []
