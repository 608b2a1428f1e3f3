"""The front-end stage on generated speech, with the real Porcupine and webrtcvad."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from rtap_trio.audio.file import load_audio
from rtap_trio.items import AudioFrame, Utterance
from rtap_trio.metrics import Metrics
from rtap_trio.session_state import PipelineState, SessionStateMachine
from rtap_trio.stages.frontend import FrontEnd
from rtap_trio.stages.wakeword import WakeWordDetector
from rtap_trio.testing import detached_context, detached_frontend
from rtap_trio.transport.outbox import Outbox
from rtap_trio.transport.schemas import EventMessage, EventType, Stream
from rtap_trio.vad import load_vad
from rtap_trio.wakeword import load_wakeword

from .support import service_settings

#: Both voice activity engines must pass every front-end test.
ENGINES = pytest.mark.parametrize("engine", ["webrtc", "silero"])


def run_frontend(
    samples: np.ndarray, engine: str = "webrtc", live_from_start: bool = False, **overrides: Any
) -> tuple[list[Utterance], list[EventMessage], SessionStateMachine, FrontEnd]:
    settings = service_settings("pc2", **{"vad.engine": engine, **overrides})
    outbox, metrics = Outbox(), Metrics()
    events = outbox.subscribe("test", (Stream.EVENTS,), 10_000)
    ctx = detached_context("s", "test", outbox, metrics)
    session = ctx.state
    wake = WakeWordDetector(load_wakeword(settings.wakeword)) if settings.wakeword.enabled else None
    voice = load_vad(settings.vad, settings.audio.sample_rate).stream(settings.vad)
    frontend = detached_frontend(
        ctx, settings, wake=wake, voice=voice, live_from_start=live_from_start
    )
    n = settings.audio.frame_samples
    padded = np.zeros(-(-samples.size // n) * n, dtype=np.int16)
    padded[: samples.size] = samples
    utterances: list[Utterance] = []
    for index, frame in enumerate(padded.reshape(-1, n)):
        utterance = frontend.process(AudioFrame(index, frame, 0.0))
        if utterance is not None:
            utterances.append(utterance)
    final = frontend.flush()
    if final is not None:
        utterances.append(final)
    outbox.close()
    received = []
    while True:
        try:
            received.append(events.receive.receive_nowait().message)
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return utterances, [m for m in received if isinstance(m, EventMessage)], session, frontend


def fixture_audio(speech: dict[str, Any], name: str) -> tuple[np.ndarray, dict[str, Any]]:
    entry = speech["by_file"][name]
    return load_audio(Path(speech["dir"]) / name, 16000), entry


@ENGINES
def test_wake_word_then_command_gives_one_utterance_after_the_wake_word(
    speech: dict[str, Any],
    engine: str,
) -> None:
    audio, entry = fixture_audio(speech, "computer_garage.wav")
    utterances, events, session, frontend = run_frontend(audio, engine)
    assert len(utterances) == 1
    utterance = utterances[0]
    assert utterance.wake_word == "computer"
    # Pre-roll reaches back towards the command but never into the wake word.
    assert entry["wake_end_s"] - 0.05 <= utterance.start_s <= entry["command_start_s"]
    assert entry["command_end_s"] - 0.1 <= utterance.end_s <= entry["command_end_s"] + 0.3
    assert utterance.samples.size == round((utterance.end_s - utterance.start_s) * 16000)
    assert [e.type for e in events if e.type is not EventType.STATE_CHANGED] == [
        EventType.WAKE_WORD,
        EventType.SPEECH_START,
        EventType.SPEECH_END,
    ]
    assert session.state is PipelineState.PROCESSING  # handed on, not yet transcribed
    stats = frontend.statistics()
    assert (stats.wake_words, stats.utterances, stats.discarded) == (1, 1, 0)


@ENGINES
def test_wake_word_then_silence_times_out_back_to_idle(speech: dict[str, Any], engine: str) -> None:
    audio, entry = fixture_audio(speech, "jarvis_lights.wav")
    # Keep the wake word and the pause after it (on the fixture's noise floor),
    # then only the same faint hiss: no command follows.
    cut = int((entry["command_start_s"] - 0.05) * 16000)
    rng = np.random.default_rng(0)
    quiet = (rng.standard_normal(16000 * 3) * 24).astype(np.int16)
    utterances, events, session, _ = run_frontend(
        np.concatenate([audio[:cut], quiet]),
        engine,
        **{"wakeword.keywords": ["jarvis"], "wakeword.listen_timeout_ms": 2000},
    )
    assert utterances == []
    kinds = [e.type for e in events if e.type is not EventType.STATE_CHANGED]
    assert kinds == [EventType.WAKE_WORD, EventType.LISTEN_TIMEOUT]
    assert session.state is PipelineState.IDLE


@ENGINES
def test_without_wake_word_vad_alone_opens_each_utterance(
    speech: dict[str, Any], engine: str
) -> None:
    audio, entry = fixture_audio(speech, "two_utterances.wav")
    utterances, _, _, _ = run_frontend(audio, engine, **{"wakeword.enabled": False})
    # Each turn is "wake word, pause, command": without wake word detection the
    # spoken wake word is speech too, and the 0.3 s pause is shorter than the
    # hangover, so each turn is one utterance.
    assert len(utterances) == 2
    assert all(u.wake_word is None for u in utterances)
    first, second = entry["utterances"]
    assert utterances[0].start_s <= first["speech_start_s"] <= utterances[0].end_s
    assert utterances[1].start_s <= second["speech_start_s"] <= utterances[1].end_s


@ENGINES
def test_a_microphone_joined_mid_sentence_drops_the_fragment_it_heard(
    speech: dict[str, Any], engine: str
) -> None:
    audio, entry = fixture_audio(speech, "two_utterances.wav")
    first = entry["utterances"][0]
    joined = audio[int((first["speech_start_s"] + 0.4) * 16000) :]  # 0.4 s into the first
    no_wake = {"wakeword.enabled": False}
    heard, events, _, _ = run_frontend(joined, engine, live_from_start=True, **no_wake)
    # The first turn began before capture: dropped, said so; the second is whole.
    assert len(heard) == 1
    discarded = [e for e in events if e.type is EventType.UTTERANCE_DISCARDED]
    assert [e.data["reason"] for e in discarded] == ["began_before_capture"]
    # A network client's stream starts with its speech: nothing is dropped there.
    assert len(run_frontend(joined, engine, **no_wake)[0]) == 2
    # Capture that began in silence (a cold VAD may call its first frames speech)
    # keeps everything.
    assert len(run_frontend(audio, engine, live_from_start=True, **no_wake)[0]) == 2


@ENGINES
def test_noise_alone_opens_nothing(speech: dict[str, Any], engine: str) -> None:
    audio, _ = fixture_audio(speech, "noise_only.wav")
    utterances, _, session, frontend = run_frontend(audio, engine, **{"wakeword.enabled": False})
    assert utterances == [] and session.state is PipelineState.IDLE
    assert frontend.statistics().frames == -(-audio.size // 320)
