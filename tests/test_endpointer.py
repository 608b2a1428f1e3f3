from __future__ import annotations

from rtap_trio.items import EndReason
from rtap_trio.settings import VadSettings
from rtap_trio.stages.endpointer import Endpointer, SpeechEnded, SpeechStarted

FRAME_MS = 20


def run(pattern: str, **settings: int) -> list[SpeechStarted | SpeechEnded]:
    """Feed a pattern of '1' (voiced) and '0' frames; collect decisions."""
    endpointer = Endpointer(VadSettings(**settings), FRAME_MS)  # type: ignore[arg-type]
    decisions = []
    for index, char in enumerate(pattern):
        decision = endpointer.push(index, char == "1")
        if decision is not None:
            decisions.append(decision)
    final = endpointer.flush(len(pattern) - 1)
    if final is not None:
        decisions.append(final)
    return decisions


def test_start_after_n_voiced_frames_and_end_after_hangover() -> None:
    decisions = run("00" + "1" * 20 + "0" * 10, speech_start_frames=3, hangover_ms=100)
    assert decisions[0] == SpeechStarted(first_frame=2)
    end = decisions[1]
    assert isinstance(end, SpeechEnded)
    assert (end.first_frame, end.last_voiced_frame) == (2, 21)
    assert end.decided_frame == 21 + 100 // FRAME_MS
    assert end.reason is EndReason.SILENCE and not end.too_short


def test_short_blips_do_not_start_speech() -> None:
    assert run("1101101100", speech_start_frames=3) == []


def test_pauses_shorter_than_hangover_do_not_end_speech() -> None:
    decisions = run("111" + "000" + "111" + "0" * 10, speech_start_frames=3, hangover_ms=100)
    assert len(decisions) == 2
    end = decisions[1]
    assert isinstance(end, SpeechEnded) and end.last_voiced_frame == 8


def test_max_length_ends_the_utterance() -> None:
    decisions = run("1" * 60, speech_start_frames=1, max_utterance_ms=500)
    ends = [d for d in decisions if isinstance(d, SpeechEnded)]
    assert ends[0].reason is EndReason.MAX_LENGTH
    assert ends[0].decided_frame - ends[0].first_frame + 1 == 500 // FRAME_MS
    # speech goes on: a new utterance starts after the cut
    assert isinstance(decisions[2], SpeechStarted)


def test_too_short_is_flagged() -> None:
    decisions = run("111" + "0" * 10, speech_start_frames=3, hangover_ms=100, min_utterance_ms=200)
    end = decisions[1]
    assert isinstance(end, SpeechEnded) and end.too_short


def test_end_of_stream_flushes_open_utterance() -> None:
    decisions = run("0011111111", speech_start_frames=2)
    end = decisions[-1]
    assert isinstance(end, SpeechEnded)
    assert end.reason is EndReason.END_OF_STREAM and end.last_voiced_frame == 9


def test_a_hangover_shortened_to_the_silence_so_far_ends_on_that_frame() -> None:
    # What the end-of-turn detector or the early transcript says is read on a
    # frame of the pause; the utterance ends on that frame, 20 ms before the next.
    endpointer = Endpointer(VadSettings(speech_start_frames=1, hangover_ms=600), FRAME_MS)
    for index in range(10):
        endpointer.push(index, voiced=True)
    assert endpointer.ended_by_hangover(9) is None  # speaking: no pause to end
    for index in range(10, 15):
        assert endpointer.push(index, voiced=False) is None
        assert endpointer.ended_by_hangover(index) is None  # the default hangover holds
    endpointer.set_pause_hangover(endpointer.silence_frames)
    end = endpointer.ended_by_hangover(14)
    assert isinstance(end, SpeechEnded)
    assert (end.last_voiced_frame, end.decided_frame, end.reason) == (9, 14, EndReason.SILENCE)
    assert endpointer.ended_by_hangover(15) is None and not endpointer.in_speech
