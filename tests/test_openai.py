"""The OpenAI-compatible HTTP API, called by the ``openai`` SDK with only ``base_url`` changed.

The service is the real command (``--source none``): pc2's tiny.en for the formats,
the multilingual base model (the default profile) where languages are the point;
uploads are the project's generated speech, as WAV, FLAC and MP3 (libsndfile
writes all three).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import soundfile

from rtap_trio.devtools.textmetrics import word_error_rate

from .support import service_process

pytestmark = pytest.mark.timeout(180)


def _client(*args: str) -> Iterator[openai.OpenAI]:
    # Uploads never ask pc2's end-of-turn model: not loaded (0.4 s of CPU).
    env = {"RTAP_OPENAI__MAX_FILE_BYTES": "2000000", "RTAP_TURN__ENGINE": "none"}
    with service_process("--source", "none", *args, env=env) as ports:
        yield openai.OpenAI(
            base_url=f"http://127.0.0.1:{ports.telemetry}/v1", api_key="not-needed", max_retries=0
        )


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    """pc2 (tiny.en, its encoder window sized to the utterance): for what is about the
    API and its formats, not languages. A command cost the service 1.2 s of CPU here
    against 3.1 s on base's full 30 s window (two_utterances.wav: 1.8 s against 8.8 s);
    the module's services took 23 s of CPU together, against 49 s for base alone."""
    yield from _client("--profile", "pc2")


@pytest.fixture(scope="module")
def base_client() -> Iterator[openai.OpenAI]:
    # The multilingual base model (the default profile): languages and verbose_json mean more.
    yield from _client()


def fixture(speech: dict[str, Any], name: str, tmp_path: Path, fmt: str = "WAV") -> Path:
    audio, rate = soundfile.read(Path(speech["dir"]) / name)
    path = tmp_path / f"{Path(name).stem}.{fmt.lower()}"
    soundfile.write(path, audio, rate, format=fmt)
    return path


def expected(speech: dict[str, Any], name: str) -> str:
    return " ".join(u["text"] for u in speech["by_file"][name]["utterances"])


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3"])
def test_sdk_transcribes_a_file_in_any_format(
    client: openai.OpenAI, speech: dict[str, Any], tmp_path: Path, fmt: str
) -> None:
    path = fixture(speech, "en_no_wake.wav", tmp_path, fmt)
    with path.open("rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert word_error_rate(expected(speech, "en_no_wake.wav"), result.text) <= 0.25, result.text


def test_verbose_json_has_language_duration_and_segments(
    base_client: openai.OpenAI, speech: dict[str, Any], tmp_path: Path
) -> None:
    name = "two_utterances.wav"
    with fixture(speech, name, tmp_path).open("rb") as audio:
        result = base_client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json"
        )
    assert result.language == "english"
    entry = speech["by_file"][name]
    assert abs(result.duration - entry["duration_s"]) < 0.05
    segments = result.segments or []
    assert len(segments) == 2  # the VAD's two utterances
    assert 0 <= segments[0].start < segments[0].end <= segments[1].start < segments[1].end
    said = " ".join(s.text for s in segments)
    # The wake word is spoken before each command; the API hears it all.
    assert word_error_rate(expected(speech, name), said.replace("Computer,", "")) <= 0.25, said


def test_german_with_the_language_given(
    base_client: openai.OpenAI, speech: dict[str, Any], tmp_path: Path
) -> None:
    with fixture(speech, "de_kino.wav", tmp_path).open("rb") as audio:
        result = base_client.audio.transcriptions.create(
            model="whisper-1", file=audio, language="de"
        )
    assert word_error_rate(expected(speech, "de_kino.wav"), result.text) <= 0.4, result.text


def test_srt_and_vtt_parse(client: openai.OpenAI, speech: dict[str, Any], tmp_path: Path) -> None:
    path = fixture(speech, "two_utterances.wav", tmp_path)
    with path.open("rb") as audio:
        srt = client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="srt"
        )
    blocks = [block.splitlines() for block in str(srt).strip().split("\n\n")]
    assert [block[0] for block in blocks] == ["1", "2"]
    start, arrow, end = blocks[0][1].split(" ")
    assert arrow == "-->" and start < end and "," in start
    with path.open("rb") as audio:
        vtt = client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="vtt"
        )
    assert str(vtt).startswith("WEBVTT\n\n") and str(vtt).count(" --> ") == 2


def test_models_lists_the_real_model_and_the_alias(base_client: openai.OpenAI) -> None:
    ids = {model.id for model in base_client.models.list()}
    assert ids == {"base", "whisper-1"}
    assert base_client.models.retrieve("base").id == "base"
    with pytest.raises(openai.NotFoundError):
        base_client.models.retrieve("gpt-nope")


def test_errors_come_in_openai_shape_with_their_status(
    base_client: openai.OpenAI, tmp_path: Path
) -> None:
    not_audio = tmp_path / "notes.wav"
    not_audio.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x00" * 64)
    with pytest.raises(openai.BadRequestError) as bad, not_audio.open("rb") as audio:
        base_client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert bad.value.status_code == 400 and "cannot decode" in bad.value.message
    assert bad.value.body["param"] == "file"  # type: ignore[index]
    big = tmp_path / "big.wav"
    big.write_bytes(b"\x00" * 2_100_000)
    with pytest.raises(openai.APIStatusError) as too_big, big.open("rb") as audio:
        base_client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert too_big.value.status_code == 413
    # Answered before the body was read, so the connection closes: said in the response.
    assert too_big.value.response.headers["connection"] == "close"
    # Klingon: a language the multilingual model lacks (tiny.en would refuse any but English).
    with pytest.raises(openai.BadRequestError) as language:
        base_client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", b"RIFF"), language="tlh"
        )
    assert language.value.body["param"] == "language"  # type: ignore[index]
