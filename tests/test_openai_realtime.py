"""OpenAI Realtime transcription over WebSocket, driven by the ``openai`` SDK's own client.

The service is the real command (``--source none --profile pc2``); the SDK
connects with only ``base_url`` changed and ``intent=transcription``, as an
application written for OpenAI would. The audio is the project's generated
speech, resampled to the API's pcm16 (24 kHz) and sent in 100 ms appends.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import soundfile
import soxr
from openai.resources.realtime.realtime import RealtimeConnection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from rtap_trio.bench.common import ServicePorts
from rtap_trio.devtools.textmetrics import word_error_rate

from .support import service_process, wait_no_sessions

pytestmark = pytest.mark.timeout(120)

NAME = "en_no_wake.wav"
RATE = 24_000
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture(scope="module")
def ports() -> Iterator[ServicePorts]:
    # Two sessions at most: the limit test fills them.
    with service_process(
        "--source", "none", "--profile", "pc2", env={"RTAP_SESSIONS__MAX": "2"}
    ) as ports:
        yield ports


@pytest.fixture
def client(ports: ServicePorts) -> Iterator[openai.OpenAI]:
    yield openai.OpenAI(
        base_url=f"http://127.0.0.1:{ports.telemetry}/v1", api_key="not-needed", max_retries=0
    )
    # Whatever a test did, its connections leave nothing running.
    wait_no_sessions(ports)


def realtime(client: openai.OpenAI) -> Any:
    return client.realtime.connect(extra_query={"intent": "transcription"})


def pcm16(speech: dict[str, Any], name: str = NAME) -> bytes:
    audio, rate = soundfile.read(Path(speech["dir"]) / name, dtype="float32")
    resampled = soxr.resample(audio, rate, RATE)
    pcm: bytes = (np.clip(resampled, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
    return pcm


def appends(pcm: bytes, seconds: float = 0.1) -> Iterator[str]:
    step = int(RATE * seconds) * 2
    for start in range(0, len(pcm), step):
        yield base64.b64encode(pcm[start : start + step]).decode()


def expected(speech: dict[str, Any], name: str = NAME) -> str:
    return " ".join(u["text"] for u in speech["by_file"][name]["utterances"])


def until(connection: RealtimeConnection, kind: str) -> list[Any]:
    """Server events up to and including the first of type ``kind``."""
    events = []
    while True:
        event = connection.recv()
        events.append(event)
        if event.type == kind:
            return events


def test_server_vad_turns_streamed_speech_into_a_transcript(
    client: openai.OpenAI, speech: dict[str, Any]
) -> None:
    with realtime(client) as connection:
        created = connection.recv()
        assert created.type == "session.created"
        assert created.session.type == "transcription"
        connection.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": RATE},
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {
                            "type": "server_vad",
                            "silence_duration_ms": 500,
                            "prefix_padding_ms": 300,
                        },
                    }
                },
            }
        )
        updated = connection.recv()
        assert updated.type == "session.updated"
        audio_input = updated.session.audio.input
        assert audio_input.transcription.language == "en"
        assert audio_input.turn_detection.silence_duration_ms == 500
        assert audio_input.turn_detection.prefix_padding_ms == 300
        for chunk in appends(pcm16(speech)):  # twice real time
            connection.input_audio_buffer.append(audio=chunk)
            time.sleep(0.05)
        events = until(connection, COMPLETED)
    # pc2 makes partial transcripts: their stable words come as deltas, before the end.
    deltas = [e for e in events if e.type == "conversation.item.input_audio_transcription.delta"]
    events = [e for e in events if e not in deltas]
    kinds = [e.type for e in events]
    assert kinds == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        COMPLETED,
    ], kinds
    started, stopped, committed, completed = events
    assert all(delta.item_id == started.item_id and delta.delta.strip() for delta in deltas)
    assert started.item_id == stopped.item_id == committed.item_id == completed.item_id
    assert committed.previous_item_id is None
    entry = speech["by_file"][NAME]
    assert started.audio_start_ms <= entry["speech_start_s"] * 1000
    assert abs(stopped.audio_end_ms - entry["speech_end_s"] * 1000) < 300
    assert word_error_rate(expected(speech), completed.transcript) <= 0.25, completed.transcript
    assert completed.usage.type == "duration"
    assert completed.usage.seconds > 2


def test_manual_commit_with_turn_detection_off(
    client: openai.OpenAI, speech: dict[str, Any]
) -> None:
    pcm = pcm16(speech)
    with realtime(client) as connection:
        assert connection.recv().type == "session.created"
        connection.session.update(
            session={"type": "transcription", "audio": {"input": {"turn_detection": None}}}
        )
        updated = connection.recv()
        assert updated.session.audio.input.turn_detection is None
        # An empty buffer cannot be committed.
        connection.input_audio_buffer.commit(event_id="empty")
        error = connection.recv()
        assert error.type == "error"
        assert error.error.code == "input_audio_buffer_commit_empty"
        assert error.error.event_id == "empty"
        # clear drops what was appended: the commit below is only what follows.
        for chunk in appends(pcm[: len(pcm) // 2]):
            connection.input_audio_buffer.append(audio=chunk)
        connection.input_audio_buffer.clear()
        assert connection.recv().type == "input_audio_buffer.cleared"
        for chunk in appends(pcm):
            connection.input_audio_buffer.append(audio=chunk)
        connection.input_audio_buffer.commit()
        # No VAD events: the client decides where the turn ends.
        committed, completed = until(connection, COMPLETED)
    assert committed.type == "input_audio_buffer.committed"
    assert committed.item_id == completed.item_id
    assert word_error_rate(expected(speech), completed.transcript) <= 0.25, completed.transcript
    assert abs(completed.usage.seconds - len(pcm) / 2 / RATE) < 0.01


def test_bad_events_get_errors_and_the_connection_reads_on(client: openai.OpenAI) -> None:
    with realtime(client) as connection:
        assert connection.recv().type == "session.created"
        # An event type nobody defined, and a real one of conversation sessions.
        for kind in ("input_audio_buffer.rewind", "response.create"):
            connection.send({"type": kind, "event_id": "mine"})
            error = connection.recv()
            assert error.type == "error"
            assert error.error.type == "invalid_request_error"
            assert error.error.param == "type"
            assert error.error.event_id == "mine"
        connection.input_audio_buffer.append(audio="this is not base64!")
        error = connection.recv()
        assert error.type == "error"
        assert error.error.param == "audio"
        connection.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcmu"}}},
            }
        )
        error = connection.recv()
        assert error.type == "error"
        assert error.error.param == "session.audio.input.format.type"
        # Still serving, and the refused update changed nothing.
        connection.session.update(session={"type": "transcription"})
        updated = connection.recv()
        assert updated.type == "session.updated"
        assert updated.session.audio.input.format.type == "audio/pcm"


def test_beta_clients_get_transcription_session_events(ports: ServicePorts) -> None:
    url = f"ws://127.0.0.1:{ports.telemetry}/v1/realtime?intent=transcription"
    with ws_connect(url, additional_headers={"OpenAI-Beta": "realtime=v1"}) as ws:
        created = json.loads(ws.recv(timeout=10))
        assert created["type"] == "transcription_session.created"
        assert created["session"]["input_audio_format"] == "pcm16"
        update = {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
            },
        }
        ws.send(json.dumps(update))
        updated = json.loads(ws.recv(timeout=10))
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["turn_detection"]["silence_duration_ms"] == 800
        ws.send(json.dumps({**update, "session": {"input_audio_format": "g711_ulaw"}}))
        error = json.loads(ws.recv(timeout=10))
        assert error["type"] == "error"
        assert error["error"]["param"] == "session.input_audio_format"
    wait_no_sessions(ports)


def test_session_limit_and_clients_that_vanish(
    client: openai.OpenAI, ports: ServicePorts, speech: dict[str, Any]
) -> None:
    url = f"ws://127.0.0.1:{ports.telemetry}/v1/realtime?intent=transcription"
    first, second = ws_connect(url), ws_connect(url)
    for ws in (first, second):
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
    # sessions.max is 2: the third is told why, then closed with "try again later".
    with realtime(client) as refused:
        error = refused.recv()
        assert error.type == "error"
        assert error.error.code == "busy"
        with pytest.raises(ConnectionClosed) as closed:
            refused.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    # One leaves in the middle of speech, the other before any audio.
    for chunk in appends(pcm16(speech)[: RATE * 2 * 2]):
        first.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
    first.close()
    second.close()
    wait_no_sessions(ports)
    with realtime(client) as connection:
        assert connection.recv().type == "session.created"
