from __future__ import annotations

import json

import pydantic
import pytest
import trio

from rtap_trio.events import SpeechEnd, SpeechStart, StateChanged, SttTimeout, WakeWord
from rtap_trio.transport.outbox import Outbox
from rtap_trio.transport.schemas import (
    SCHEMA_VERSION,
    EventMessage,
    EventType,
    LatencyBreakdown,
    Stream,
    TranscriptMessage,
    parse_message,
)

TRANSCRIPT = dict(
    session_id="s1",
    utterance_id="s1-0001",
    text="what is the weather in berlin today",
    language="en",
    language_confidence=0.93,
    sentiment="neutral",
    sentiment_confidence=0.8,
    wake_word="computer",
    audio_start_s=1.2,
    audio_end_s=3.4,
    model="tiny.en",
    latency_ms=LatencyBreakdown(stt=800.0, total=812.5),
)


def test_sequence_numbers_count_per_stream() -> None:
    outbox = Outbox(clock=lambda: 1700000000.0)
    events = [outbox.event(WakeWord(keyword="computer", offset_s=1.0), "s1") for _ in range(3)]
    transcript = outbox.transcript(**TRANSCRIPT)
    more = outbox.event(SpeechEnd(offset_s=2.0, reason="silence"), "s1", "s1-0001")
    assert [e.seq for e in events] + [more.seq] == [0, 1, 2, 3]
    assert transcript.seq == 0
    assert transcript.schema_version == SCHEMA_VERSION
    assert outbox.statistics().published == {"events": 4, "transcripts": 1, "levels": 0}


async def test_subscribers_get_their_streams_serialised_once() -> None:
    outbox = Outbox()
    events_only = outbox.subscribe("events", (Stream.EVENTS,), 10)
    everything = outbox.subscribe("all", (Stream.EVENTS, Stream.TRANSCRIPTS), 10)
    outbox.event(WakeWord(keyword="jarvis", offset_s=1.0), "s1")
    outbox.transcript(**TRANSCRIPT)
    outbox.close()
    got_events = [item async for item in events_only.receive]
    got_all = [item async for item in everything.receive]
    # Topic prefixes: the type (as before sessions), then the session.
    assert [i.topic for i in got_events] == ["wake_word.s1"]
    assert [i.topic for i in got_all] == ["wake_word.s1", "transcript.s1"]
    assert got_all[0].payload is got_events[0].payload  # serialised once, shared
    decoded = json.loads(got_all[1].payload)
    assert decoded["text"] == TRANSCRIPT["text"] and decoded["kind"] == "transcript"


async def test_slow_subscriber_loses_oldest_and_is_counted() -> None:
    dropped: list[str] = []
    outbox = Outbox(on_drop=dropped.append)
    slow = outbox.subscribe("slow", (Stream.EVENTS,), 2)
    for _ in range(5):
        outbox.event(StateChanged(from_state="IDLE", to="LISTENING", reason="speech"), "s1")
    outbox.close()
    assert [item.message.seq async for item in slow.receive] == [3, 4]
    assert dropped == ["slow"] * 3 and outbox.statistics().dropped == 3


async def test_closed_subscription_unsubscribes() -> None:
    outbox = Outbox()
    with outbox.subscribe("gone", (Stream.EVENTS,), 2) as subscription:
        assert outbox.statistics().subscribers == 1
    assert outbox.statistics().subscribers == 0
    # must not raise for the gone subscriber
    outbox.event(WakeWord(keyword="computer", offset_s=1.0), "s1")
    with pytest.raises(trio.ClosedResourceError):
        subscription.receive.receive_nowait()


def test_round_trip_and_validation() -> None:
    outbox = Outbox()
    transcript = outbox.transcript(**TRANSCRIPT)
    event = outbox.event(
        SttTimeout(budget_ms=100, elapsed_ms=100.5, queue_ms=0.0, audio_s=1.0), "s1", "s1-0002"
    )
    assert parse_message(transcript.model_dump_json()) == transcript
    parsed = parse_message(event.model_dump_json())
    assert isinstance(parsed, EventMessage) and parsed.type is EventType.STT_TIMEOUT
    bad = json.loads(transcript.model_dump_json())
    bad["schema_version"] = 2
    with pytest.raises(pydantic.ValidationError):
        parse_message(json.dumps(bad))
    bad = json.loads(transcript.model_dump_json())
    bad["unexpected"] = True
    with pytest.raises(pydantic.ValidationError):
        parse_message(json.dumps(bad))
    with pytest.raises(pydantic.ValidationError):
        TranscriptMessage(**{**TRANSCRIPT, "seq": 0, "emitted_at": 0.0, "sentiment": "angry"})


async def test_sessions_count_their_own_messages_and_can_be_followed_alone() -> None:
    outbox = Outbox()
    only_b = outbox.subscribe("b", (Stream.EVENTS, Stream.TRANSCRIPTS), 10, session_id="b")
    a, b = outbox.session("a"), outbox.session("b")
    a.event(SpeechStart(offset_s=0.5))
    b.event(SpeechStart(offset_s=0.5))
    a.event(SpeechEnd(offset_s=1.0, reason="silence"))
    fields = {k: v for k, v in TRANSCRIPT.items() if k != "session_id"}
    b.transcript(**fields)
    b.event(SpeechEnd(offset_s=1.0, reason="silence"))
    outbox.close()
    got = [item.message async for item in only_b.receive]
    assert [m.session_id for m in got] == ["b", "b", "b"]
    # seq counts the whole stream; session_seq only this session's, per stream.
    assert [(m.kind, m.seq, m.session_seq) for m in got] == [
        ("event", 1, 0),
        ("transcript", 0, 0),
        ("event", 3, 1),
    ]
