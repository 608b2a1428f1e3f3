"""What Whisper makes of music is not published (issue 16, row 6).

Tones that webrtcvad calls voiced reach Whisper as 15 s utterances, and base
writes for them: "[Music]" mostly, but sometimes a loop ("I'm a little bit of
a man, I'm a little bit of a man, ..." to its token budget) with a no-speech
probability under the threshold, published as a transcript. pc2's tiny.en,
through whisper_full, wrote "the", "(" or "I am a" for music and noise, and its
no-speech probability was read where it is ~0 for anything. The music here is
generated (tests/musicgen.py), the speech is the project's own fixtures, the
service and whisper are real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from rtap_trio.audio.file import FileSource
from rtap_trio.devtools import speechgen
from rtap_trio.devtools.textmetrics import word_error_rate
from rtap_trio.settings import load_settings
from rtap_trio.stt.hallucination import compression_ratio, discard_reason
from rtap_trio.transport.schemas import EventType, TranscriptMessage

from . import musicgen
from .support import REPO, WHISPER_THREADS, run_service, service_settings

#: What base wrote for generated music in the measurements of issue 16 (the
#: first 15 s of chords-2 and chords-3, the second of bass_drums-11).
LOOPS = (
    "\"I'm a little bit of a man, I'm a little bit of a man, " * 10,
    "\"I'm a man, I'm a man, I'm a man, " * 12,
    "1/2 tbh" + " dbh" * 60,
)
#: A music clip on which base writes a loop ("I'm a man, I'm a man, ...", compression
#: ratio 3.09) at a no-speech probability under the threshold (0.25): 0.1757 on one
#: whisper.cpp thread, 0.1679 on two. The issue's chords-2 (0.2296 on two threads)
#: sat at the threshold on one (0.2506), so its test ran base on two threads, which
#: spin while they wait for a core beside other work: 20.9 s of CPU for the test
#: alone (pytest's start included), 10.5 s on one thread with this clip.
MUSIC = musicgen.Clip("chords", 11)


def _references() -> list[str]:
    corpus = json.loads((REPO / "eval" / "shared_corpus.json").read_text(encoding="utf-8"))
    texts = [entry["text"] for entry in corpus["files"] if entry.get("text")]
    for fixture in speechgen.FIXTURES:
        texts += [utterance.words for utterance in fixture.utterances]
    return texts


def test_loops_are_discarded_and_what_was_said_is_not() -> None:
    stt = load_settings("default", environ={}).stt
    for loop in LOOPS:
        assert compression_ratio(loop) > 10
        assert discard_reason(loop, 0.23, stt) == "repetition"
    references = _references()
    assert len(references) > 10
    for text in references:
        assert compression_ratio(text) < 1.5, text
        assert discard_reason(text, 0.05, stt) is None
    # The two earlier rules keep their order and meaning; 0 turns this one off.
    assert discard_reason("", None, stt) == "no_text"
    assert discard_reason(LOOPS[0], 0.4, stt) == "no_speech"
    off = stt.model_copy(update={"max_compression_ratio": 0.0})
    assert discard_reason(LOOPS[0], 0.23, off) is None


@pytest.mark.slow
async def test_music_with_the_wake_word_off_is_discarded_and_speech_still_published(
    speech: dict[str, Any], tmp_path: Path
) -> None:
    entry = speech["by_file"]["en_no_wake.wav"]
    spoken = speechgen.read_pcm(Path(speech["dir"]) / entry["file"])
    # 15 s of music (one utterance: vad.max_utterance_ms), then a spoken command.
    clip = np.concatenate([musicgen.render(MUSIC, 15.0), spoken])
    path = tmp_path / "music_then_speech.wav"
    speechgen.write_wav(path, clip)
    settings = service_settings(
        "default",
        # A loop decodes to the token budget: on a busy machine that can take
        # longer than the 15 s budget, and a timeout would hide the transcript.
        # The tests' thread count (service_settings): MUSIC's loop is under the
        # no-speech threshold on one thread and on two (ggml splits its sums by
        # thread), so the rule shown here is the one for loops that the
        # no-speech rule lets through either way.
        # No warm-up (service_settings): each call encodes and decodes afresh,
        # so the loop's no-speech probability and compression ratio are the
        # same without it, and it was 3-4 s of CPU on two threads.
        # The full window: in one sized to it (the default profile's auto),
        # base writes no text for MUSIC at all, and this test is about a loop.
        **{
            "wakeword.enabled": False,
            "stt.budget_ms": 300_000,
            "stt.whispercpp.audio_ctx": 0,
        },
    )
    source = FileSource(path, frame_samples=settings.audio.frame_samples, realtime=False)
    # Until all of it has gone through: a published loop would come first.
    run = await run_service(settings, source, expected_transcripts=0, limit_s=300)

    discarded = [m for m in run.events if m.type is EventType.UTTERANCE_DISCARDED]
    print(
        "discarded:",
        [
            (m.data["reason"], m.data.get("no_speech_probability"), m.data.get("compression_ratio"))
            for m in discarded
        ],
    )
    # The WebSocket watcher saw everything (ZeroMQ is read only up to a count).
    published = [m for m in run.websocket if isinstance(m, TranscriptMessage)]
    print("published:", [(t.text, t.no_speech_probability) for t in published])
    assert not [m for m in run.events if m.type is EventType.STT_TIMEOUT]
    # Nothing of the music is published: the one transcript is the command after
    # it, as well transcribed as ever.
    assert len(published) == 1, [t.text for t in published]
    transcript = published[0]
    assert word_error_rate(entry["text"], transcript.text) <= 0.25, transcript.text
    assert transcript.audio_start_s >= 15.0
    # The music's loop is an event, with what was not published, and is counted:
    # a loop the no-speech rule lets through.
    repetition = [m for m in discarded if m.data["reason"] == "repetition"]
    assert len(repetition) == 1, discarded
    assert repetition[0].data["compression_ratio"] > 2.4
    assert repetition[0].data["no_speech_probability"] <= settings.stt.no_speech_threshold
    assert 'rtap_utterances_total{kind="local",outcome="repetition"} 1.0' in run.metrics


@pytest.mark.slow
def test_whisper_full_reads_the_no_speech_probability_after_sot(speech: dict[str, Any]) -> None:
    # pc2's tiny.en goes through whisper_full, which read it ~0 on anything.
    from rtap_trio.stages.preprocess import prepare_for_stt
    from rtap_trio.stt.whispercpp import WhisperContext

    settings = load_settings("pc2", environ={})
    # The tests' thread count, not pc2's two (support.WHISPER_THREADS): beside
    # another test worker two ggml threads spin while they wait for a core. The
    # probabilities move in the fourth decimal, far from the bounds checked
    # (two threads, then one: speech 0.0299, 0.0296; music 0.9058, 0.9051 and
    # 0.8340, 0.8343).
    whisper = settings.stt.whispercpp.model_copy(update={"n_threads": WHISPER_THREADS})
    engine = WhisperContext(settings.stt.model_copy(update={"whispercpp": whisper}))
    try:
        assert not engine.one_pass

        def no_speech(pcm: npt.NDArray[np.int16]) -> float:
            audio = prepare_for_stt(pcm, 16_000, settings.preprocess)
            value = engine.transcribe(audio).no_speech_probability
            assert value is not None
            return value

        spoken = speechgen.read_pcm(Path(speech["dir"]) / "en_no_wake.wav")
        assert no_speech(spoken) < 0.1
        for clip in (musicgen.Clip("white", 11), musicgen.Clip("chords", 11)):
            assert no_speech(musicgen.render(clip, 10.0, tail_s=0.0)) > 0.5, clip
        assert no_speech(spoken) < 0.1  # and back: nothing stale
    finally:
        engine.close()


@pytest.mark.slow
async def test_music_on_pc2_is_discarded_as_no_speech(
    speech: dict[str, Any], tmp_path: Path
) -> None:
    # tiny.en through whisper_full: its no-speech probability used to be read
    # after <|notimestamps|>, ~0 whatever the audio, so the threshold never
    # fired and music and noise came out as "the", ".", "I", "I am a".
    entry = speech["by_file"]["en_no_wake.wav"]
    spoken = speechgen.read_pcm(Path(speech["dir"]) / entry["file"])
    clip = np.concatenate([musicgen.render(musicgen.Clip("vibrato_lead", 11), 30.0), spoken])
    path = tmp_path / "music_then_speech.wav"
    speechgen.write_wav(path, clip)
    settings = service_settings(
        "pc2",
        # whisper_full's words for music depend on what the engine decoded
        # before; early and partial transcripts, timed by the clock (and
        # aborted when a final needs the engine), would make that vary.
        **{
            "wakeword.enabled": False,
            "stt.partials": False,
            "vad.early_ms": 0,
            "stt.budget_ms": 300_000,
            # The warm-up stays (0.6 s of CPU): whisper_full is one of the
            # engines whose words for music depend on what it decoded before,
            # and without it the two music utterances came out as no text
            # (no-speech 0.73 and 0.85), not the no-speech discard checked here.
            "stt.warmup": True,
            # pc2 decodes a final in a smaller window first; for this music that
            # decode writes nothing (discarded as no_text), so the no-speech
            # rule is checked where it is needed: the full-size window, whose
            # decode of music writes words.
            "stt.whispercpp.audio_ctx_first_floor": 0,
        },
    )
    source = FileSource(path, frame_samples=settings.audio.frame_samples, realtime=False)
    run = await run_service(settings, source, expected_transcripts=0, limit_s=300)

    discarded = [m for m in run.events if m.type is EventType.UTTERANCE_DISCARDED]
    print("discarded:", [(m.data["reason"], m.data.get("text")) for m in discarded])
    published = [m for m in run.websocket if isinstance(m, TranscriptMessage)]
    print("published:", [(t.text, t.no_speech_probability) for t in published])
    assert len(published) == 1, [(t.text, t.no_speech_probability) for t in published]
    transcript = published[0]
    assert word_error_rate(entry["text"], transcript.text) <= 0.25, transcript.text
    assert transcript.no_speech_probability is not None
    assert transcript.no_speech_probability < settings.stt.no_speech_threshold
    no_speech = [m for m in discarded if m.data["reason"] == "no_speech"]
    assert no_speech, discarded
    assert all(m.data["no_speech_probability"] > 0.5 for m in no_speech)
