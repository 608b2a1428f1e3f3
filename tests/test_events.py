"""Typed events inside, the same JSON on the wire.

Each case is a representative event of its type, the ``data`` dict today's
emit site built for it (``before``: literal, as the emit sites wrote it before
events had classes), and its golden JSON: renaming, reordering or rounding a
field differently fails here, whatever the emit sites do.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import NoneType, UnionType
from typing import Any, get_args, get_origin, get_type_hints

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtap_trio.events import (
    Event,
    FramesDropped,
    Heartbeat,
    ListenTimeout,
    ServiceFailing,
    ServiceStarted,
    ServiceStopping,
    SessionEnded,
    SessionFailed,
    SessionStarted,
    SpeechEnd,
    SpeechStart,
    StageError,
    StandbyHandback,
    StandbyTakeover,
    StateChanged,
    StateReset,
    SttFallback,
    SttRemoteRestored,
    SttTimeout,
    TaskRestarted,
    TranscriptPartial,
    UtteranceDiscarded,
    UtteranceDropped,
    WakeWord,
    event_class,
    parse_event,
)
from rtap_trio.transport.outbox import Outbox
from rtap_trio.transport.schemas import EventMessage, EventType, Stream, parse_message

SID = "3f2a9c1b7d40"
CLASSES: tuple[type[Event], ...] = get_args(Event)


@dataclass(frozen=True)
class Case:
    event: Event
    before: dict[str, Any]
    golden: str


CASES = [
    Case(
        ServiceStarted(
            source="alsa:default",
            model="tiny.en",
            stt_device="cpu",
            stt_device_fallback=False,
            ports={"events": 6552, "transcripts": 6553, "websocket": None},
            profile="pc1",
            local_session_id=SID,
        ),
        {
            "source": "alsa:default",
            "model": "tiny.en",
            "stt_device": "cpu",
            "stt_device_fallback": False,
            "ports": {"events": 6552, "transcripts": 6553, "websocket": None},
            "profile": "pc1",
            "local_session_id": SID,
        },
        (
            '{"source":"alsa:default","model":"tiny.en","stt_device":"cpu",'
            '"stt_device_fallback":false,"ports":{"events":6552,"transcripts":6553,"websocket":null},'
            '"profile":"pc1","local_session_id":"3f2a9c1b7d40"}'
        ),
    ),
    Case(
        ServiceStopping(),
        {},
        "{}",
    ),
    Case(
        ServiceFailing(task="zmq-events", error="restarts exhausted"),
        {"task": "zmq-events", "error": "restarts exhausted"},
        '{"task":"zmq-events","error":"restarts exhausted"}',
    ),
    Case(
        Heartbeat(
            uptime_s=12.3,
            sessions=2,
            next_seq={"events": 41, "transcripts": 7, "levels": 0},
            role="primary",
        ),
        {
            "uptime_s": 12.3,
            "sessions": 2,
            "next_seq": {"events": 41, "transcripts": 7, "levels": 0},
            "role": "primary",
        },
        (
            '{"uptime_s":12.3,"sessions":2,"next_seq":{"events":41,"transcripts":7,"levels":0},'
            '"role":"primary"}'
        ),
    ),
    Case(
        StandbyTakeover(
            reason="heartbeat lost for 1.52 s",
            primary_id="c0ffee123456",
            silent_ms=1520.4,
            last_heartbeat_at=1699999998.5,
            withheld=2,
        ),
        {
            "reason": "heartbeat lost for 1.52 s",
            "primary_id": "c0ffee123456",
            "silent_ms": 1520.4,
            "last_heartbeat_at": 1699999998.5,
            "withheld": 2,
        },
        (
            '{"reason":"heartbeat lost for 1.52 s","primary_id":"c0ffee123456","silent_ms":1520.4,'
            '"last_heartbeat_at":1699999998.5,"withheld":2}'
        ),
    ),
    Case(
        StandbyTakeover(
            reason="no heartbeat for 3.00 s",
            primary_id=None,
            silent_ms=3000.0,
            last_heartbeat_at=None,
            withheld=0,
        ),
        {
            "reason": "no heartbeat for 3.00 s",
            "primary_id": None,
            "silent_ms": 3000.0,
            "last_heartbeat_at": None,
            "withheld": 0,
        },
        (
            '{"reason":"no heartbeat for 3.00 s","primary_id":null,"silent_ms":3000.0,'
            '"last_heartbeat_at":null,"withheld":0}'
        ),
    ),
    Case(
        StandbyHandback(primary_id="c0ffee123456", primary_started_at=1699999990.5),
        {"primary_id": "c0ffee123456", "primary_started_at": 1699999990.5},
        '{"primary_id":"c0ffee123456","primary_started_at":1699999990.5}',
    ),
    Case(
        TaskRestarted(),
        {},
        "{}",
    ),
    Case(
        SessionStarted(
            kind="websocket",
            source="websocket",
            model="tiny.en",
            wake_word=True,
            keywords=("computer", "jarvis"),
            language=None,
        ),
        {
            "kind": "websocket",
            "source": "websocket",
            "model": "tiny.en",
            "wake_word": True,
            "keywords": ["computer", "jarvis"],
            "language": None,
        },
        (
            '{"kind":"websocket","source":"websocket","model":"tiny.en","wake_word":true,'
            '"keywords":["computer","jarvis"],"language":null}'
        ),
    ),
    Case(
        SessionEnded(reason="stop", frames_dropped=0, utterances_dropped=1),
        {"reason": "stop", "frames_dropped": 0, "utterances_dropped": 1},
        '{"reason":"stop","frames_dropped":0,"utterances_dropped":1}',
    ),
    Case(
        SessionFailed(task=f"{SID}/frontend", error_type="ValueError", error="bad frame"),
        {"task": f"{SID}/frontend", "error_type": "ValueError", "error": "bad frame"},
        '{"task":"3f2a9c1b7d40/frontend","error_type":"ValueError","error":"bad frame"}',
    ),
    Case(
        StageError(
            stage="frontend", task=f"{SID}/frontend", error_type="ValueError", error="bad frame"
        ),
        {
            "stage": "frontend",
            "task": f"{SID}/frontend",
            "error_type": "ValueError",
            "error": "bad frame",
        },
        (
            '{"stage":"frontend","task":"3f2a9c1b7d40/frontend","error_type":"ValueError",'
            '"error":"bad frame"}'
        ),
    ),
    Case(
        StageError(stage="zmq-events", error_type="OSError", error="address in use"),
        {"stage": "zmq-events", "error_type": "OSError", "error": "address in use"},
        '{"stage":"zmq-events","error_type":"OSError","error":"address in use"}',
    ),
    Case(
        StateChanged(from_state="IDLE", to="LISTENING", reason="wake_word"),
        {"from": "IDLE", "to": "LISTENING", "reason": "wake_word"},
        '{"from":"IDLE","to":"LISTENING","reason":"wake_word"}',
    ),
    Case(
        StateReset(from_state="LISTENING", attempted="EMIT", reason="transcript"),
        {"from": "LISTENING", "attempted": "EMIT", "reason": "transcript"},
        '{"from":"LISTENING","attempted":"EMIT","reason":"transcript"}',
    ),
    Case(
        FramesDropped(dropped_total=12, reason="queue_full"),
        {"dropped_total": 12, "reason": "queue_full"},
        '{"dropped_total":12,"reason":"queue_full"}',
    ),
    Case(
        UtteranceDropped(reason="queue_full"),
        {"reason": "queue_full"},
        '{"reason":"queue_full"}',
    ),
    Case(
        WakeWord(keyword="computer", offset_s=1.28),
        {"keyword": "computer", "offset_s": 1.28},
        '{"keyword":"computer","offset_s":1.28}',
    ),
    Case(
        SpeechStart(offset_s=1.5),
        {"offset_s": 1.5},
        '{"offset_s":1.5}',
    ),
    Case(
        SpeechEnd(offset_s=3.42, reason="silence"),
        {"offset_s": 3.42, "reason": "silence"},
        '{"offset_s":3.42,"reason":"silence"}',
    ),
    Case(
        ListenTimeout(),
        {},
        "{}",
    ),
    Case(
        UtteranceDiscarded(reason="too_short"),
        {"reason": "too_short"},
        '{"reason":"too_short"}',
    ),
    Case(
        UtteranceDiscarded(
            reason="no_speech",
            text="Thank you.",
            no_speech_probability=0.8123,
            compression_ratio=0.625,
        ),
        {
            "reason": "no_speech",
            "text": "Thank you.",
            "no_speech_probability": 0.8123,
            "compression_ratio": 0.625,
        },
        (
            '{"reason":"no_speech","text":"Thank you.","no_speech_probability":0.8123,'
            '"compression_ratio":0.625}'
        ),
    ),
    Case(
        UtteranceDiscarded(
            reason="low_confidence", text="hm", language="de", language_confidence=0.3142
        ),
        {"reason": "low_confidence", "text": "hm", "language": "de", "language_confidence": 0.3142},
        '{"reason":"low_confidence","text":"hm","language":"de","language_confidence":0.3142}',
    ),
    Case(
        TranscriptPartial(
            text="what is the",
            stable="what is",
            unstable="the",
            stable_words=2,
            newly_stable="is",
            audio_end_s=2.1,
        ),
        {
            "text": "what is the",
            "stable": "what is",
            "unstable": "the",
            "stable_words": 2,
            "newly_stable": "is",
            "audio_end_s": 2.1,
        },
        (
            '{"text":"what is the","stable":"what is","unstable":"the","stable_words":2,'
            '"newly_stable":"is","audio_end_s":2.1}'
        ),
    ),
    Case(
        SttFallback(
            engine="remote", fallback="whispercpp", reason="connect", failures=3, retry_in_s=1.0
        ),
        {
            "engine": "remote",
            "fallback": "whispercpp",
            "reason": "connect",
            "failures": 3,
            "retry_in_s": 1.0,
        },
        (
            '{"engine":"remote","fallback":"whispercpp","reason":"connect","failures":3,'
            '"retry_in_s":1.0}'
        ),
    ),
    Case(
        SttRemoteRestored(engine="remote", down_s=13.183, fallbacks=2),
        {"engine": "remote", "down_s": 13.183, "fallbacks": 2},
        '{"engine":"remote","down_s":13.183,"fallbacks":2}',
    ),
    Case(
        SttTimeout(budget_ms=15000, elapsed_ms=15012.3, queue_ms=2.5, audio_s=4.2),
        {"budget_ms": 15000, "elapsed_ms": 15012.3, "queue_ms": 2.5, "audio_s": 4.2},
        '{"budget_ms":15000,"elapsed_ms":15012.3,"queue_ms":2.5,"audio_s":4.2}',
    ),
]


def _message(type: EventType, data: dict[str, Any]) -> EventMessage:
    return EventMessage(
        seq=0, session_seq=0, session_id=SID, emitted_at=1700000000.0, type=type, data=data
    )


def _wire(case: Case) -> str:
    """As the outbox publishes it."""
    outbox = Outbox(clock=lambda: 1700000000.0)
    return outbox.event(case.event, SID).model_dump_json()


def _golden(case: Case) -> str:
    return (
        '{"schema_version":1,"seq":0,"session_seq":0,"session_id":"3f2a9c1b7d40",'
        '"utterance_id":null,"emitted_at":1700000000.0,"kind":"event",'
        f'"type":"{case.event.type.value}","data":{case.golden}}}'
    )


def test_every_type_has_exactly_one_class() -> None:
    assert sorted(cls.type for cls in CLASSES) == sorted(EventType)
    assert all(event_class(cls.type) is cls for cls in CLASSES)
    assert {case.event.type for case in CASES} == set(EventType)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.event.type.value)
def test_the_wire_is_what_it_was(case: Case) -> None:
    before = _message(case.event.type, case.before).model_dump_json()
    assert before == _golden(case)
    assert _wire(case) == _golden(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.event.type.value)
def test_parsed_back_from_the_wire(case: Case) -> None:
    message = parse_message(_wire(case))
    assert isinstance(message, EventMessage)
    assert parse_event(message) == case.event


async def test_in_process_subscribers_get_the_event_itself() -> None:
    outbox = Outbox(clock=lambda: 1700000000.0)
    subscription = outbox.subscribe("test", (Stream.EVENTS,), 10)
    outbox.session(SID).event(SpeechEnd(offset_s=3.42, reason="silence"), f"{SID}-0001")
    outbox.close()
    [item] = [item async for item in subscription.receive]
    assert item.event == SpeechEnd(offset_s=3.42, reason="silence")
    assert item.payload == (
        b'{"schema_version":1,"seq":0,"session_seq":0,"session_id":"3f2a9c1b7d40",'
        b'"utterance_id":"3f2a9c1b7d40-0001","emitted_at":1700000000.0,"kind":"event",'
        b'"type":"speech_end","data":{"offset_s":3.42,"reason":"silence"}}'
    )


def test_keys_it_does_not_know_are_ignored() -> None:
    data = {"added_later": [1, 2], "from": "IDLE", "to": "LISTENING", "reason": "wake_word"}
    event = parse_event(_message(EventType.STATE_CHANGED, data))
    assert event == StateChanged(from_state="IDLE", to="LISTENING", reason="wake_word")
    assert event.wire_data() == {"from": "IDLE", "to": "LISTENING", "reason": "wake_word"}


def test_a_missing_or_mistyped_field_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_event(_message(EventType.WAKE_WORD, {"keyword": "computer"}))
    with pytest.raises(pydantic.ValidationError):
        parse_event(_message(EventType.WAKE_WORD, {"keyword": ["no"], "offset_s": 1.0}))


def _values(hint: Any) -> st.SearchStrategy[Any]:
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if hint in (str, int, bool):
        return st.from_type(hint)
    if hint is NoneType:
        return st.none()
    args = get_args(hint)
    if get_origin(hint) is UnionType:
        return st.one_of(*(_values(arg) for arg in args))
    if get_origin(hint) is dict:
        return st.dictionaries(_values(args[0]), _values(args[1]), max_size=3)
    if get_origin(hint) is tuple:
        return st.lists(_values(args[0]), max_size=3).map(tuple)
    raise AssertionError(f"no strategy for {hint}")


def _events(cls: type[Event]) -> st.SearchStrategy[Event]:
    hints = get_type_hints(cls)
    return st.builds(cls, **{f.name: _values(hints[f.name]) for f in fields(cls)})


@given(st.sampled_from(CLASSES).flatmap(_events))
def test_any_event_round_trips(event: Event) -> None:
    wire = _message(event.type, event.wire_data()).model_dump_json()
    message = parse_message(wire)
    assert isinstance(message, EventMessage)
    assert parse_event(message) == event
