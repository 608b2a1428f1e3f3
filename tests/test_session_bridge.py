"""The session bridge: one way to open a session for a client, and every slot given back.

Two halves. First the bridge itself (``SessionManager.open_bridge``), on the
session manager of a real in-process service (pc2's tiny.en): what it checks
before a slot is taken, that it subscribes before the session starts, that a
block which fails, is cancelled or leaves early gives the slot back, and that
a client's own turn ends (``end_turn``) are utterances like the VAD's.

Then each protocol as a hostile client uses it: one real service process
(``--source none``, pc2, ``sessions.max`` 2, Wyoming on) and, per protocol, a
client that fails in every way it can (a bad format, a language the model
lacks, garbage, leaving mid-audio, a reset connection), each more times in a
row than there are slots; then a normal client still gets a session and the
right words. Last, a Realtime manual commit's transcript reaches ZeroMQ and
catch-up with its language analysed, as every transcript does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import soundfile
import soxr
import trio
import zmq
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.connection import Connection
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error

from rtap_trio.audio.network import AudioFormatError, PushedAudio
from rtap_trio.devtools.textmetrics import word_error_rate
from rtap_trio.errors import ConfigError
from rtap_trio.session_options import SessionOptions
from rtap_trio.sessions import EndReason, SessionManager
from rtap_trio.transport.schemas import (
    CatchupReply,
    EventMessage,
    EventType,
    Stream,
    TranscriptMessage,
    parse_message,
)

from .support import (
    RunningService,
    client_frame,
    free_port,
    health,
    in_process_service,
    running_service,
    service_settings,
    wait_no_sessions,
)

pytestmark = pytest.mark.timeout(300)

SESSIONS_MAX = 2
#: each way of failing, this many times in a row: more than there are slots
ROUNDS = SESSIONS_MAX + 1
NAME = "en_no_wake.wav"
#: long enough to be still transcribing when its client goes
LONG = "paused_sentences.wav"
PCM16 = PushedAudio(16_000, "pcm_s16le", 1)


def pcm(speech: dict[str, Any], name: str = NAME, rate: int = 16_000) -> bytes:
    """A generated fixture as 16-bit little-endian mono PCM at ``rate``."""
    audio, source_rate = soundfile.read(Path(speech["dir"]) / name, dtype="float32")
    if source_rate != rate:
        audio = soxr.resample(audio, source_rate, rate)
    samples: bytes = (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
    return samples


def expected(speech: dict[str, Any], name: str = NAME) -> str:
    return " ".join(u["text"] for u in speech["by_file"][name]["utterances"])


# ====================================================================== the bridge


@contextlib.asynccontextmanager
async def session_manager(**overrides: Any) -> AsyncIterator[SessionManager]:
    """The session manager of a running in-process service (no local source)."""
    settings = service_settings(
        "pc2", **{"audio.source": "none", "sessions.max": SESSIONS_MAX, **overrides}
    )
    service = in_process_service(settings, source=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        assert service.sessions is not None
        yield service.sessions
        service.stop()


async def test_the_bridge_checks_first_and_gives_every_slot_back(speech: dict[str, Any]) -> None:
    audio = pcm(speech)
    async with session_manager() as manager:
        # Every session's messages, to see how each ended.
        everything = manager.outbox.subscribe("test", (Stream.EVENTS,), 100_000)
        for _ in range(ROUNDS):
            # Refused before a slot is taken.
            for options, audio_format in [
                (SessionOptions(language="de"), PCM16),  # tiny.en is English-only
                (SessionOptions(language="../../etc"), PCM16),
                (SessionOptions(wake_word=True, keywords=("hey_toaster",)), PCM16),
                (SessionOptions(), PushedAudio(4_000, "pcm_s16le", 1)),
                (SessionOptions(), PushedAudio(16_000, "pcm_s16le", 3)),
            ]:
                with pytest.raises((ConfigError, AudioFormatError)):
                    async with manager.open_bridge("test", options, audio=audio_format):
                        raise AssertionError("opened")
                assert len(manager) == 0
            # The block fails mid-audio: its own exception, as it was.
            with pytest.raises(ValueError, match="client broke"):
                async with manager.open_bridge("test", audio=PCM16) as bridge:
                    await bridge.push(audio[: len(audio) // 2])
                    raise ValueError("client broke")
            # Cancelled mid-audio.
            with trio.CancelScope() as scope:
                async with manager.open_bridge("test", audio=PCM16) as bridge:
                    await bridge.push(audio[: len(audio) // 2])
                    scope.cancel()
                    await trio.sleep_forever()
            # Not whole samples.
            with pytest.raises(AudioFormatError):
                async with manager.open_bridge("test", audio=PCM16) as bridge:
                    await bridge.push(b"\x00\x01\x02")
            # Left before its session ran.
            async with manager.open_bridge("test", audio=PCM16, start=False) as bridge:
                assert len(manager) == 1
            assert len(manager) == 0
        # A normal client: its session, from session_started on, and its words.
        listening = SessionOptions(wake_word=False)
        async with manager.open_bridge("test", listening, audio=PCM16) as bridge:
            await bridge.push(audio)
            await bridge.finish(EndReason.STOP)
            messages = [item.message async for item in bridge.messages]
        assert len(manager) == 0
        everything.end()
        events = [
            item.message
            async for item in everything.receive
            if isinstance(item.message, EventMessage)
        ]
    first = messages[0]
    assert isinstance(first, EventMessage) and first.type is EventType.SESSION_STARTED
    texts = [m.text for m in messages if isinstance(m, TranscriptMessage)]
    assert word_error_rate(expected(speech), " ".join(texts)) <= 0.25, texts
    assert isinstance(messages[-1], EventMessage) and messages[-1].data["reason"] == "stop"
    # Every session that started ended, and said why; the one left early never started.
    started = [e.session_id for e in events if e.type is EventType.SESSION_STARTED]
    ended = {e.session_id: e.data["reason"] for e in events if e.type is EventType.SESSION_ENDED}
    assert started and set(started) == set(ended), (started, ended)
    reasons = [ended[session_id] for session_id in started]
    assert reasons == ["disconnected"] * (3 * ROUNDS) + ["stop"], reasons


async def test_a_session_that_waits_for_its_client_ends_unrun_when_the_service_stops() -> None:
    async with session_manager() as manager:
        async with manager.open_bridge("test", audio=PCM16, start=False) as bridge:
            with trio.fail_after(10):
                with bridge.until_ended():
                    manager.stop_all(EndReason.SERVICE_STOPPING)
                    await trio.sleep_forever()  # the reading stops: the session has ended
                messages = [item async for item in bridge.messages]
            assert messages == []  # it never started
            assert bridge.session.end_reason is EndReason.SERVICE_STOPPING
        assert len(manager) == 0


async def test_a_turn_the_client_ends_is_an_utterance_through_every_stage(
    speech: dict[str, Any],
) -> None:
    """What a Realtime manual commit is: the client, not the VAD, ends the utterance."""
    turns = [NAME, "two_utterances.wav"]  # the second: two sentences, one turn
    options = SessionOptions(wake_word=False, client_turns=True)
    async with (
        session_manager() as manager,
        manager.open_bridge("test", options, audio=PushedAudio(24_000, "pcm_s16le", 1)) as bridge,
    ):
        for name in turns:
            await bridge.push(pcm(speech, name, 24_000))
            await bridge.end_turn("en")
        await bridge.finish(EndReason.STOP)
        messages = [item.message async for item in bridge.messages]
    transcripts = [m for m in messages if isinstance(m, TranscriptMessage)]
    ends = [m for m in messages if isinstance(m, EventMessage) and m.type is EventType.SPEECH_END]
    assert [e.data["reason"] for e in ends] == ["turn_end", "turn_end"], ends
    assert [t.utterance_id for t in transcripts] == [e.utterance_id for e in ends]
    for transcript, name in zip(transcripts, turns, strict=True):
        assert word_error_rate(expected(speech, name), transcript.text) <= 0.25, transcript.text
        # Language analysis, as for every transcript.
        assert transcript.language == "en" and transcript.language_confidence > 0
    # The turn is what the client sent, whole: the second begins where the first ended.
    first_s = len(pcm(speech, NAME, 24_000)) / 2 / 24_000
    assert abs(transcripts[0].audio_end_s - first_s) < 0.05
    assert abs(transcripts[1].audio_start_s - transcripts[0].audio_end_s) < 0.05


# ====================================================================== the protocols


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[RunningService, int]]:
    """The service with every protocol on and two slots; yields it and the Wyoming port."""
    port = free_port()
    env = {
        "RTAP_SESSIONS__MAX": str(SESSIONS_MAX),
        "RTAP_WYOMING__ENABLED": "true",
        "RTAP_WYOMING__PORT": str(port),
        # The failures below are logged; hundreds of lines would fill the pipe.
        "RTAP_LOG_LEVEL": "ERROR",
        # What is checked is slots, close codes and finals: no partials to
        # pay for, no end-of-turn model (the realtime clients end their own).
        "RTAP_STT__PARTIALS": "false",
        "RTAP_TURN__ENGINE": "none",
    }
    with running_service("--source", "none", "--profile", "pc2", env=env) as running:
        yield running, port


def active(running: RunningService) -> int:
    count: int = health(running.ports)["sessions"]["active"]
    return count


def wait_active(running: RunningService, limit_s: float = 10.0) -> None:
    """Until a session runs (the client's, now mid-audio)."""
    deadline = time.monotonic() + limit_s
    while not active(running):
        assert time.monotonic() < deadline, "no session started"
        time.sleep(0.02)


def reset(sock: socket.socket) -> None:
    """Gone without a goodbye: the connection is reset (RST), not closed."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def repeatedly(failures: dict[str, Callable[[], None]], running: RunningService) -> None:
    """Each way of failing ROUNDS times in a row; after each, no session may be left
    running (a client that leaves mid-transcription is given up within seconds)."""
    for _ in range(ROUNDS):
        for name, fail in failures.items():
            try:
                fail()
                wait_no_sessions(running.ports, 30.0)
            except Exception as exc:
                raise AssertionError(f"{name}: {exc!r}") from exc


# --------------------------------------------------------------- raw WebSocket


def raw_websocket(port: int, path: str) -> socket.socket:
    """A WebSocket handshake on a plain socket: its frames are ours to write, or not."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def closed_with(ws: Connection, limit_s: float = 30.0) -> int:
    """The server's close code, after whatever it sent first."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=limit_s)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


# ------------------------------------------------------------------ /v1/audio


def send_audio(ws: Connection, audio: bytes) -> None:
    """In messages of 100 ms, as a microphone would send it."""
    for start in range(0, len(audio), 3_200):
        ws.send(audio[start : start + 3_200])


def start_message(**fields: Any) -> str:
    message = {"type": "start", "sample_rate": 16_000, "encoding": "pcm_s16le", "channels": 1}
    return json.dumps({**message, "wake_word": False, **fields})


def test_v1_audio_clients_that_fail_every_way_leave_the_slots_free(
    service: tuple[RunningService, int], speech: dict[str, Any]
) -> None:
    running, _ = service
    port = running.ports.websocket
    audio = pcm(speech)
    url = f"ws://127.0.0.1:{port}/v1/audio"

    def refused(start: str, code: int) -> None:
        with connect(url, open_timeout=10) as ws:
            ws.send(start)
            assert closed_with(ws) == code

    def mid_audio(then: Callable[[Connection], None]) -> None:
        with connect(url, open_timeout=10) as ws:
            ws.send(start_message())
            assert json.loads(ws.recv(timeout=10))["type"] == "session_started"
            send_audio(ws, audio[: len(audio) // 2])
            then(ws)

    def garbage(ws: Connection) -> None:
        ws.send("not json")
        assert closed_with(ws) == 1008

    def not_whole_samples(ws: Connection) -> None:
        ws.send(b"\x00\x01\x02")
        assert closed_with(ws) == 1003

    def gone_mid_audio() -> None:
        sock = raw_websocket(port, "/v1/audio")
        sock.sendall(client_frame(start_message().encode(), compressed=False))
        wait_active(running)
        for start in range(0, len(audio) // 2, 3_200):
            sock.sendall(client_frame(audio[start : start + 3_200], compressed=False, opcode=2))
        reset(sock)

    repeatedly(
        {
            "bad format": lambda: refused(start_message(channels=3), 1008),
            "bad rate": lambda: refused(start_message(sample_rate=4_000), 1008),
            "bad language": lambda: refused(start_message(language="de"), 1008),
            "unknown wake word": lambda: refused(
                start_message(wake_word=True, keywords=["hey_toaster"]), 1008
            ),
            "garbage first": lambda: refused("not json", 1008),
            "garbage mid-audio": lambda: mid_audio(garbage),
            "not whole samples": lambda: mid_audio(not_whole_samples),
            "disconnect mid-audio": lambda: mid_audio(lambda ws: ws.close()),
            "reset mid-audio": gone_mid_audio,
        },
        running,
    )
    with connect(url, open_timeout=10) as ws:
        ws.send(start_message())
        send_audio(ws, audio)
        ws.send(json.dumps({"type": "stop"}))
        messages = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                messages.append(json.loads(ws.recv(timeout=60)))
    texts = [m["text"] for m in messages if m["kind"] == "transcript"]
    assert word_error_rate(expected(speech), " ".join(texts)) <= 0.25, texts


# -------------------------------------------------------------------- Wyoming


def wyoming_event(type: str, data: dict[str, Any] | None = None, payload: bytes = b"") -> bytes:
    header: dict[str, Any] = {"type": type}
    if data is not None:
        header["data"] = data
    if payload:
        header["payload_length"] = len(payload)
    return json.dumps(header).encode() + b"\n" + payload


def wyoming_errors(sock: socket.socket) -> list[str]:
    """The codes of the ``error`` events the server sent until it closed (or 2 s of quiet)."""
    sock.settimeout(2)
    received = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65_536):
            received += chunk
    codes = []
    while b"\n" in received:
        line, received = received.split(b"\n", 1)
        header = json.loads(line)
        data = header.get("data") or {}
        size = int(header.get("data_length") or 0)
        if size:
            data.update(json.loads(received[:size]))
        received = received[size + int(header.get("payload_length") or 0) :]
        if header["type"] == "error":
            codes.append(data["code"])
    return codes


async def wyoming_transcribe(port: int, audio: bytes) -> Transcript:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
        for start in range(0, len(audio), 2048):
            chunk = AudioChunk(rate=16_000, width=2, channels=1, audio=audio[start : start + 2048])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        while True:
            event = await client.read_event()
            assert event is not None, "closed before the transcript"
            assert not Error.is_type(event.type), Error.from_event(event)
            if Transcript.is_type(event.type):
                return Transcript.from_event(event)


def test_wyoming_clients_that_fail_every_way_leave_the_slots_free(
    service: tuple[RunningService, int], speech: dict[str, Any]
) -> None:
    running, port = service
    audio = pcm(speech)
    fmt = {"rate": 16_000, "width": 2, "channels": 1}
    chunks = b"".join(
        wyoming_event("audio-chunk", fmt, audio[start : start + 2048])
        for start in range(0, len(audio) // 2, 2048)
    )

    def attempt(*events: bytes, code: str | None, then: str = "close") -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"".join(events))
            if then == "reset":
                wait_active(running)
                reset(sock)
                return
            if then == "close":
                sock.shutdown(socket.SHUT_WR)  # the client is done: its stream ends unfinished
            codes = wyoming_errors(sock)
        assert (codes[:1] if code else codes) == ([code] if code else []), codes

    transcribe = wyoming_event("transcribe", {"language": "en"})
    start = wyoming_event("audio-start", fmt)
    repeatedly(
        {
            "bad format": lambda: attempt(
                transcribe, wyoming_event("audio-start", {**fmt, "channels": 64}), code="bad_audio"
            ),
            "bad rate, no audio-start": lambda: attempt(
                transcribe,
                wyoming_event("audio-chunk", {**fmt, "rate": 0}, b"\0\0"),
                code="bad_audio",
            ),
            "bad language": lambda: attempt(
                wyoming_event("transcribe", {"language": "de"}),
                start,
                chunks,
                code="unsupported_language",
            ),
            "unknown wake word": lambda: attempt(
                wyoming_event("detect", {"names": ["hey_toaster"]}),
                start,
                chunks,
                code="unknown_wake_word",
            ),
            "garbage mid-audio": lambda: attempt(
                transcribe, start, chunks, b"not json\n", code="bad_header"
            ),
            "a header over its limit mid-audio": lambda: attempt(
                transcribe, start, chunks, b"x" * 20_000 + b"\n", code="too_large"
            ),
            "not whole samples": lambda: attempt(
                transcribe, start, wyoming_event("audio-chunk", fmt, b"\0\0\0"), code="bad_audio"
            ),
            "disconnect mid-audio": lambda: attempt(transcribe, start, chunks, code=None),
            "reset mid-audio": lambda: attempt(transcribe, start, chunks, code=None, then="reset"),
        },
        running,
    )
    transcript = asyncio.run(asyncio.wait_for(wyoming_transcribe(port, audio), 120))
    assert word_error_rate(expected(speech), transcript.text) <= 0.25, transcript.text


# ---------------------------------------------------------------- OpenAI upload


def multipart(fields: dict[str, str], file: bytes) -> bytes:
    parts = [
        f'--xyz\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    head = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    return b"".join(parts) + head + file + b"\r\n--xyz--\r\n"


def upload(port: int, body: bytes, *, send: int | None = None) -> socket.socket:
    """A POST whose Content-Length says ``body``; only ``send`` bytes of it are sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[:send])
    return sock


def status_of(sock: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(65_536)
        assert chunk, answer
        answer += chunk
    return int(answer.split()[1])


def test_openai_uploads_that_fail_every_way_leave_the_slots_free(
    service: tuple[RunningService, int], speech: dict[str, Any]
) -> None:
    running, _ = service
    port = running.ports.telemetry
    wav = (Path(speech["dir"]) / NAME).read_bytes()
    long_wav = (Path(speech["dir"]) / LONG).read_bytes()

    def answered(body: bytes, status: int) -> None:
        with upload(port, body) as sock:
            assert status_of(sock) == status

    def gone_while_transcribed(then: Callable[[socket.socket], None]) -> None:
        sock = upload(port, multipart({"model": "whisper-1"}, long_wav))
        wait_active(running)
        then(sock)

    body = multipart({"model": "whisper-1"}, wav)
    repeatedly(
        {
            "bad format": lambda: answered(multipart({"model": "whisper-1"}, b"RIFF" * 64), 400),
            "bad language": lambda: answered(
                multipart({"model": "whisper-1", "language": "de"}, wav), 400
            ),
            "garbage": lambda: answered(b"this is not a form", 400),
            "disconnect mid-upload": lambda: upload(port, body, send=len(body) // 2).close(),
            "disconnect while transcribed": lambda: gone_while_transcribed(socket.socket.close),
            "reset while transcribed": lambda: gone_while_transcribed(reset),
        },
        running,
    )
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed", max_retries=0, timeout=120
    )
    result = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav))
    assert word_error_rate(expected(speech), result.text) <= 0.25, result.text


# --------------------------------------------------------------- OpenAI Realtime

REALTIME = "/v1/realtime?intent=transcription"
COMPLETED = "conversation.item.input_audio_transcription.completed"


def realtime(running: RunningService) -> ClientConnection:
    url = f"ws://127.0.0.1:{running.ports.telemetry}{REALTIME}"
    return connect(url, open_timeout=10, close_timeout=2)


def send(ws: Connection, kind: str, **fields: Any) -> None:
    ws.send(json.dumps({"type": kind, **fields}))


def receive(ws: Connection, kind: str, limit_s: float = 30.0) -> dict[str, Any]:
    """Server events up to the first of type ``kind``: that one."""
    while True:
        event: dict[str, Any] = json.loads(ws.recv(timeout=limit_s))
        if event["type"] == kind:
            return event


def appends(audio: bytes, seconds: float = 0.1) -> Iterator[str]:
    step = int(24_000 * seconds) * 2
    for start in range(0, len(audio), step):
        yield base64.b64encode(audio[start : start + step]).decode()


def test_realtime_clients_that_fail_every_way_leave_the_slots_free(
    service: tuple[RunningService, int], speech: dict[str, Any]
) -> None:
    running, _ = service
    audio = pcm(speech, rate=24_000)

    def refused(session: dict[str, Any], param: str) -> None:
        with realtime(running) as ws:
            receive(ws, "session.created")
            send(ws, "session.update", session=session)
            assert receive(ws, "error")["error"]["param"] == param

    def garbage() -> None:
        with realtime(running) as ws:
            receive(ws, "session.created")
            for message in (b"\x00\x01", "not json", json.dumps({"type": "response.create"})):
                ws.send(message)
                receive(ws, "error")
            send(ws, "input_audio_buffer.append", audio="\x00 not base64")
            receive(ws, "error")
            send(ws, "input_audio_buffer.append", audio=base64.b64encode(b"\0\0\0").decode())
            assert receive(ws, "error")["error"]["param"] == "audio"

    def leave_before_any_audio() -> None:
        with realtime(running) as ws:
            receive(ws, "session.created")
            send(ws, "session.update", session={"turn_detection": None})
            receive(ws, "session.updated")

    def leave(manual: bool, *, commit: bool = False) -> None:
        with realtime(running) as ws:
            receive(ws, "session.created")
            if manual:
                send(ws, "session.update", session={"turn_detection": None})
            for chunk in appends(audio[: len(audio) // 2]):
                send(ws, "input_audio_buffer.append", audio=chunk)
            if commit:
                send(ws, "input_audio_buffer.commit")
                receive(ws, "input_audio_buffer.committed")

    def reset_mid_audio() -> None:
        sock = raw_websocket(running.ports.telemetry, REALTIME)
        for chunk in appends(audio[: len(audio) // 2]):
            event = {"type": "input_audio_buffer.append", "audio": chunk}
            sock.sendall(client_frame(json.dumps(event).encode(), compressed=False))
        wait_active(running)
        reset(sock)

    repeatedly(
        {
            "bad format": lambda: refused(
                {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
                "session.audio.input.format.type",
            ),
            "bad rate": lambda: refused(
                {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16_000}}}},
                "session.audio.input.format.rate",
            ),
            "bad language": lambda: refused(
                {"input_audio_transcription": {"language": "de"}},
                "session.input_audio_transcription.language",
            ),
            "garbage": garbage,
            "gone before any audio": leave_before_any_audio,
            "disconnect mid-audio": lambda: leave(manual=False),
            "disconnect mid-commit": lambda: leave(manual=True, commit=True),
            "reset mid-audio": reset_mid_audio,
        },
        running,
    )
    with realtime(running) as ws:
        receive(ws, "session.created")
        send(ws, "session.update", session={"input_audio_transcription": {"language": "en"}})
        receive(ws, "session.updated")
        for chunk in appends(audio):
            send(ws, "input_audio_buffer.append", audio=chunk)
        completed = receive(ws, COMPLETED, 60)
    assert word_error_rate(expected(speech), completed["transcript"]) <= 0.25, completed


def test_realtime_manual_commits_reach_zeromq_and_catch_up_with_their_language(
    service: tuple[RunningService, int], speech: dict[str, Any]
) -> None:
    """Manual commits went to the STT engine directly: no language analysis, nothing on
    ZeroMQ, in the console or in catch-up. Now each is an utterance of its session."""
    running, _ = service
    ports = running.ports
    audio = pcm(speech, rate=24_000)
    context = zmq.Context()
    try:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVTIMEO, 60_000)
        sub.setsockopt(zmq.LINGER, 0)
        sub.subscribe(b"")
        monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        monitor.setsockopt(zmq.RCVTIMEO, 10_000)
        for port in (ports.events, ports.transcripts):
            sub.connect(f"tcp://127.0.0.1:{port}")
            monitor.recv_multipart()  # ZeroMQ's slow joiner: subscribed before anything is said
        with realtime(running) as ws:
            session_id = receive(ws, "session.created")["session"]["id"].removeprefix("sess_")
            send(ws, "session.update", session={"audio": {"input": {"turn_detection": None}}})
            receive(ws, "session.updated")
            for chunk in appends(audio):
                send(ws, "input_audio_buffer.append", audio=chunk)
            send(ws, "input_audio_buffer.commit")
            committed = receive(ws, "input_audio_buffer.committed")
            completed = receive(ws, COMPLETED, 60)
        assert completed["item_id"] == committed["item_id"]
        assert word_error_rate(expected(speech), completed["transcript"]) <= 0.25, completed
        published: list[EventMessage | TranscriptMessage] = []
        # Events and transcripts come on two ports: in no order between them.
        while not (
            any(isinstance(m, TranscriptMessage) for m in published)
            and any(isinstance(m, EventMessage) and m.type == "speech_end" for m in published)
        ):
            message = parse_message(sub.recv_multipart()[1])
            if isinstance(message, EventMessage | TranscriptMessage) and (
                message.session_id == session_id
            ):
                published.append(message)
        request = context.socket(zmq.REQ)
        request.setsockopt(zmq.RCVTIMEO, 10_000)
        request.setsockopt(zmq.LINGER, 0)
        request.connect(f"tcp://127.0.0.1:{ports.catchup}")
        request.send(json.dumps({"after_seq": -1, "limit": 1000}).encode())
        reply = CatchupReply.model_validate_json(request.recv())
    finally:
        context.destroy(linger=0)
    transcript = next(m for m in published if isinstance(m, TranscriptMessage))
    assert transcript.text == completed["transcript"]
    # Language analysis, as every transcript has it.
    assert transcript.language == "en" and transcript.language_confidence > 0
    ends = [m for m in published if isinstance(m, EventMessage) and m.type == "speech_end"]
    assert [e.data["reason"] for e in ends] == ["turn_end"], published
    assert ends[0].utterance_id == transcript.utterance_id
    caught_up = [t for t in reply.transcripts if t.session_id == session_id]
    assert [t.text for t in caught_up] == [transcript.text], reply
