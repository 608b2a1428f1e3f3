"""Early transcription and sentence-aware endpointing (issue 11, parts 1, 2 and 5).

Real engines on generated speech at real-time pace, where timing is the point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from rtap_trio.audio.file import FileSource, load_audio
from rtap_trio.errors import SttSkippedError
from rtap_trio.settings import SttSettings, VadSettings
from rtap_trio.stages.early import SentenceState, sentence_state
from rtap_trio.stages.vad import Endpointer, SpeechEnded
from rtap_trio.stt.whispercpp import WhisperCppBackend
from rtap_trio.textmetrics import word_error_rate

from .support import run_service, service_settings

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("What is the weather in Berlin today?", SentenceState.ENDED),
        ("Schalte das Licht ein.", SentenceState.ENDED),
        ("Turn the lights on", SentenceState.UNSURE),
        ("Remind me to buy milk and", SentenceState.GOES_ON),
        ("Turn on the lights in the,", SentenceState.GOES_ON),
        ("Set a timer for", SentenceState.GOES_ON),
        ("Buy milk and.", SentenceState.GOES_ON),  # Whisper's period after a conjunction
        ("", SentenceState.UNSURE),
    ],
)
def test_what_the_early_words_say_about_the_sentence(text: str, state: SentenceState) -> None:
    assert sentence_state(text) is state


def test_a_pause_hangover_holds_for_that_pause_only() -> None:
    endpointer = Endpointer(VadSettings(hangover_ms=600), 20)
    frames = iter(range(10_000))

    def push(voiced: bool, count: int) -> list[Any]:
        return [d for _ in range(count) if (d := endpointer.push(next(frames), voiced))]

    push(True, 10)
    assert push(False, 5) == [] and endpointer.silence_frames == 5
    endpointer.set_pause_hangover(8)  # the words so far end a sentence: 160 ms
    (end,) = push(False, 5)
    assert isinstance(end, SpeechEnded) and end.decided_frame - end.last_voiced_frame == 8
    push(True, 10)  # the next utterance: back to 600 ms
    assert push(False, 29) == [] and len(push(False, 1)) == 1


@pytest.mark.slow
async def test_pauses_inside_sentences_come_out_whole_and_early_transcripts_are_used(
    speech: dict[str, Any],
) -> None:
    entry = speech["by_file"]["paused_sentences.wav"]
    settings = service_settings("pc2", **{"wakeword.enabled": False, "audio.realtime": True})
    source = FileSource(
        Path(speech["dir"]) / "paused_sentences.wav",
        frame_samples=settings.audio.frame_samples,
        realtime=True,
        trailing_silence_ms=1000,
    )
    run = await run_service(settings, source, expected_transcripts=len(entry["utterances"]))
    said = [t.text for t in run.transcripts]
    print(said)
    print([t.latency_ms.speech_end_to_emit for t in run.transcripts])
    assert len(said) == 5  # not one cut in two at its pause
    for expected, text in zip(entry["utterances"], said, strict=True):
        assert word_error_rate(expected["text"], text) <= 0.25, (expected["text"], text)
    # Early transcripts were made in the trailing silences and used; those made
    # in the pauses inside the sentences were cancelled when speech resumed.
    assert 'rtap_early_transcriptions_total{outcome="used"}' in run.metrics
    assert 'rtap_early_transcriptions_total{outcome="cancelled"}' in run.metrics
    # What the speaker waited is now on every transcript, the hangover included.
    for transcript in run.transcripts:
        latency = transcript.latency_ms
        assert latency.speech_end_to_emit == pytest.approx(latency.endpoint + latency.total)


@pytest.mark.slow
async def test_speculative_work_gives_its_engine_up_to_a_final() -> None:
    backend = await WhisperCppBackend.load(SttSettings(model_name="tiny.en", warmup=False))
    try:
        speech = load_audio(Path("rtap_trio/audio/data/demo.wav"), 16000)
        long = np.tile(speech.astype(np.float32) / 32768, 5)  # ~26 s: seconds of work
        short = speech.astype(np.float32) / 32768
        outcome: dict[str, Any] = {}

        async def speculate() -> None:
            try:
                await backend.transcribe(long, speculative=True)
                outcome["speculative"] = "finished"
            except SttSkippedError as exc:
                outcome["speculative"] = exc.reason

        async with trio.open_nursery() as nursery:
            nursery.start_soon(speculate)
            await trio.sleep(0.2)  # the speculative work holds the only engine
            with pytest.raises(SttSkippedError):  # and more is not even started
                await backend.transcribe(short, speculative=True)
            final = await backend.transcribe(short, priority=0.0)
        assert outcome["speculative"] == "preempted by a final"
        # The final waited only for the abort, not for the speculative work.
        assert final.queue_ms < 1000, final.queue_ms
        assert "weather" in final.text.lower()
        assert backend.statistics().speculative_skipped == 2
    finally:
        await backend.aclose()
