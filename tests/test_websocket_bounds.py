"""The WebSocket doors as a hostile client tries them: ``/v1/realtime`` and ``/v1/audio``.

One service process (``--source none``, the default profile's multilingual
``base`` model, so a language it lacks means something), attacked over
loopback and measured from ``/proc``: a compressed frame that would inflate
to hundreds of megabytes, languages the model lacks, numbers no field can
take, and a client that sends speech faster than it can be transcribed. After
each attack a well-behaved client is still served.

The compressed frames are raw (the ``websockets`` client would compress its
own way, or not at all); the rest use ``websockets``, the library the
``openai`` SDK's Realtime client runs on.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import soxr
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.connection import Connection

from rtap_trio.endpoints import client_json

from .support import (
    RunningService,
    client_frame,
    health,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    running_service,
    wait_no_sessions,
)

pytestmark = pytest.mark.timeout(120)

REALTIME = "/v1/realtime?intent=transcription"
AUDIO = "/v1/audio"
#: What one client may add to the service's peak RSS in these tests.
BOUND_MB = 100
#: A deflate stream of this many MiB of text: ~1 KiB compressed per MiB.
BOMB_MIB = 512
#: Numbers no field takes: RFC 8259 has no NaN or Infinity; 1e400 is inf to Python;
#: 5000 digits pass CPython's 4300-digit int conversion limit (a ValueError).
BAD_NUMBERS = {"digits": "9" * 5000, "1e400": "1e400", "NaN": "NaN", "-Infinity": "-Infinity"}


@pytest.fixture(scope="module")
def service() -> Iterator[RunningService]:
    env = {
        # The attacks make the service log; the pipe to the test must not fill.
        "RTAP_LOG_LEVEL": "ERROR",
        # A 5 s window (the sentences are shorter) and no language detection
        # pass: whisper.cpp notices an abort only after an encoder pass, so a
        # client that leaves frees its slot sooner. The model's languages stay.
        "RTAP_STT__WHISPERCPP__AUDIO_CTX": "256",
        "RTAP_STT__LANGUAGE": "en",
        # One utterance waits for STT, so speech pushed at once drops the rest.
        "RTAP_PIPELINE__UTTERANCE_QUEUE_SIZE": "1",
        "RTAP_SESSIONS__IDLE_TIMEOUT_S": "10",
        # No early transcripts: the engine's time goes to the utterances.
        "RTAP_VAD__EARLY_MS": "0",
    }
    with running_service("--source", "none", "--profile", "default", env=env) as running:
        yield running


# ---------------------------------------------------------------- raw frames


def raw_handshake(port: int, path: str) -> tuple[socket.socket, str, bytes]:
    """Open a WebSocket offering permessage-deflate, as browsers do."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    sock.sendall(request.encode())
    received = b""
    for _ in range(100):
        if b"\r\n\r\n" in received:
            break
        received += sock.recv(4096)
    head, _, rest = received.partition(b"\r\n\r\n")
    return sock, head.decode("latin-1"), rest


def deflate_bomb(prefix: bytes, mib: int) -> bytes:
    """``prefix`` then ``mib`` MiB of "A", as one raw deflate stream (about 1 KiB a MiB).

    Each full flush starts afresh, so one compressed MiB repeats as it is.
    """
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    one_mib = body.compress(b"A" * (1 << 20)) + body.flush(zlib.Z_FULL_FLUSH)
    return first + one_mib * mib


def close_code(sock: socket.socket, rest: bytes, limit_s: float = 15.0) -> int | None:
    """Read frames until the server's close frame; its code (None: the socket just ended)."""
    sock.settimeout(limit_s)
    buffer = rest
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        while len(buffer) >= 2:
            opcode, size, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if size == 126:
                size, offset = (
                    (struct.unpack("!H", buffer[2:4])[0], 4) if len(buffer) >= 4 else (-1, 0)
                )
            elif size == 127:
                size, offset = (
                    (struct.unpack("!Q", buffer[2:10])[0], 10) if len(buffer) >= 10 else (-1, 0)
                )
            if size < 0 or len(buffer) < offset + size:
                break
            payload, buffer = buffer[offset : offset + size], buffer[offset + size :]
            if opcode == 8:
                return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
        try:
            data = sock.recv(65_536)
        except (TimeoutError, ConnectionResetError):
            return None
        if not data:
            return None
        buffer += data
    return None


# ------------------------------------------------------------------ clients


def realtime(service: RunningService) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{service.ports.telemetry}{REALTIME}", open_timeout=10, close_timeout=2
    )


def receive(ws: Connection, limit_s: float = 10.0) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(ws.recv(timeout=limit_s))
    return event


def realtime_is_served(service: RunningService) -> None:
    with realtime(service) as ws:
        assert receive(ws)["type"] == "session.created"


def audio_client(service: RunningService) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{service.ports.websocket}{AUDIO}", open_timeout=10)


def start_message(**fields: Any) -> str:
    message = {"type": "start", "sample_rate": 16_000, "encoding": "pcm_s16le", "channels": 1}
    message.update(wake_word=False, **fields)
    return json.dumps(message)


def audio_is_served(service: RunningService) -> None:
    with audio_client(service) as ws:
        ws.send(start_message())
        assert receive(ws)["type"] == "session_started"
        ws.send(json.dumps({"type": "stop"}))
        while receive(ws)["type"] != "session_ended":
            pass


def closed_with(ws: Connection, limit_s: float = 10.0) -> tuple[int, str]:
    """The server's close code and reason, after whatever it sent first."""
    deadline = time.monotonic() + limit_s
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            ws.recv(timeout=limit_s)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def pcm(speech: dict[str, Any], name: str, rate: int) -> bytes:
    audio, source_rate = soundfile.read(Path(speech["dir"]) / name, dtype="float32")
    audio = soxr.resample(audio, source_rate, rate)
    samples: bytes = (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
    return samples


# --------------------------------------------------------- permessage-deflate


def test_a_deflate_bomb_on_realtime_costs_nothing_and_is_closed(service: RunningService) -> None:
    """A 500 KiB frame that would inflate to 512 MiB of JSON text: +190 MB peak RSS
    before (hypercorn inflated each 64 KiB read whole before counting it), then 1009."""
    sock, head, rest = raw_handshake(service.ports.telemetry, REALTIME)
    with sock:
        assert head.startswith("HTTP/1.1 101"), head
        bomb = deflate_bomb(b'{"type": "session.update", "session": {"prompt": "', BOMB_MIB)
        time.sleep(0.3)  # session.created and its slot: part of start-up, not of the attack
        reset_peak_rss(service.pid)
        before = rss_mb(service.pid)
        # Refused before it was all sent is as good.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(client_frame(bomb, compressed=True))
        close_code(sock, rest)
        grown = peak_rss_mb(service.pid) - before
    assert grown < BOUND_MB, f"peak RSS +{grown:.0f} MB for one compressed frame"
    assert "sec-websocket-extensions" not in head.lower(), head
    realtime_is_served(service)
    wait_no_sessions(service.ports, 20.0)


def test_a_compressed_frame_on_realtime_is_closed_1002(service: RunningService) -> None:
    """Compression was not agreed: a frame that says it is compressed is a protocol error,
    answered with a close frame (hypercorn alone would just drop the connection)."""
    sock, head, rest = raw_handshake(service.ports.telemetry, REALTIME)
    with sock:
        assert head.startswith("HTTP/1.1 101"), head
        update = b'{"type": "session.update", "session": {"turn_detection": null}}'
        sock.sendall(client_frame(deflate_bomb(update, 0), compressed=True))
        code = close_code(sock, rest)
    assert code == 1002, code
    realtime_is_served(service)
    wait_no_sessions(service.ports, 20.0)


def test_a_realtime_message_over_4_mib_is_closed_1009_before_it_costs_its_size(
    service: RunningService,
) -> None:
    """Hypercorn's default limit was 16 MiB, and a 15 MiB append cost +124 MB of peak RSS."""
    with realtime(service) as ws:
        assert receive(ws)["type"] == "session.created"
        time.sleep(0.3)
        reset_peak_rss(service.pid)
        before = rss_mb(service.pid)
        audio = "A" * (6 << 20)  # 4.5 MiB of silent pcm16: 98 s
        with contextlib.suppress(ConnectionClosed):
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        code, _ = closed_with(ws)
        grown = peak_rss_mb(service.pid) - before
    assert code == 1009, code
    assert grown < BOUND_MB / 2, f"peak RSS +{grown:.0f} MB"
    realtime_is_served(service)
    wait_no_sessions(service.ports, 20.0)


def test_a_realtime_prompt_whisper_could_not_read_is_refused(service: RunningService) -> None:
    """A prompt is echoed in every session.updated: one of megabytes was kept and resent."""
    with realtime(service) as ws:
        assert receive(ws)["type"] == "session.created"
        session = {"input_audio_transcription": {"prompt": "word " * 1000}}
        ws.send(json.dumps({"type": "session.update", "session": session}))
        error = receive(ws)
        assert error["type"] == "error", error
        assert error["error"]["param"] == "session.input_audio_transcription.prompt"
        session = {"input_audio_transcription": {"prompt": "RTAP, Whisper."}}
        ws.send(json.dumps({"type": "session.update", "session": session}))
        updated = receive(ws)
        assert updated["type"] == "session.updated", updated
    wait_no_sessions(service.ports, 20.0)


def test_audio_websocket_agrees_no_compression_and_refuses_a_compressed_frame(
    service: RunningService,
) -> None:
    sock, head, rest = raw_handshake(service.ports.websocket, AUDIO)
    with sock:
        assert head.startswith("HTTP/1.1 101"), head
        assert "sec-websocket-extensions" not in head.lower(), head
        reset_peak_rss(service.pid)
        before = rss_mb(service.pid)
        sock.sendall(client_frame(deflate_bomb(b'{"type": "start", "x": "', 64), compressed=True))
        code = close_code(sock, rest)
        grown = peak_rss_mb(service.pid) - before
    # trio-websocket drops the connection on wsproto's protocol error (1002)
    # without sending the close frame.
    assert code in (1002, None), code
    assert grown < BOUND_MB, f"peak RSS +{grown:.0f} MB"
    audio_is_served(service)
    wait_no_sessions(service.ports, 20.0)


# ------------------------------------------------------------------ languages


@pytest.mark.parametrize("language", ["xx", "zz", "../../etc"])
def test_audio_refuses_a_language_the_model_lacks_at_start(
    service: RunningService, language: str
) -> None:
    with audio_client(service) as ws:
        ws.send(start_message(language=language))
        code, reason = closed_with(ws)
    assert code == 1008, (code, reason)
    assert language in reason or "language" in reason, reason
    assert health(service.ports)["sessions"]["active"] == 0
    audio_is_served(service)


@pytest.mark.parametrize("language", ["xx", "../../etc"])
def test_realtime_refuses_a_language_the_model_lacks_with_an_error(
    service: RunningService, language: str
) -> None:
    with realtime(service) as ws:
        assert receive(ws)["type"] == "session.created"
        transcription = {"model": "whisper-1", "language": language}
        update = {"type": "session.update", "event_id": "event_lang"}
        ws.send(json.dumps(update | {"session": {"input_audio_transcription": transcription}}))
        error = receive(ws)
        assert error["type"] == "error", error
        assert error["error"]["param"] == "session.input_audio_transcription.language"
        assert error["error"]["event_id"] == "event_lang"
        # Still open, and the language the model knows is taken.
        ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"input_audio_transcription": {"language": "de"}},
                }
            )
        )
        updated = receive(ws)
        assert updated["type"] == "session.updated", updated
    wait_no_sessions(service.ports, 20.0)


# -------------------------------------------------------------------- numbers


@pytest.mark.parametrize("number", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
@pytest.mark.parametrize("field", ["silence_duration_ms", "threshold"])
def test_realtime_answers_a_number_out_of_range_with_an_error_and_reads_on(
    service: RunningService, number: str, field: str
) -> None:
    with realtime(service) as ws:
        assert receive(ws)["type"] == "session.created"
        ws.send(
            '{"type": "session.update", "event_id": "event_n", "session": '
            f'{{"turn_detection": {{"type": "server_vad", "{field}": {number}}}}}}}'
        )
        error = receive(ws)
        assert error["type"] == "error", error
        assert error["error"]["event_id"] == "event_n"
        assert error["error"]["type"] == "invalid_request_error"
        ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
        assert receive(ws)["type"] == "session.updated"
    wait_no_sessions(service.ports, 20.0)


@pytest.mark.parametrize("number", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_audio_closes_a_start_with_a_number_out_of_range_1008_with_a_reason(
    service: RunningService, number: str
) -> None:
    with audio_client(service) as ws:
        ws.send(start_message().replace('"sample_rate": 16000', f'"sample_rate": {number}'))
        code, reason = closed_with(ws)
    assert code == 1008, (code, reason)
    assert reason.startswith("bad start message"), reason
    assert health(service.ports)["sessions"]["active"] == 0


def test_audio_closes_a_stop_with_a_number_out_of_range_1008(service: RunningService) -> None:
    with audio_client(service) as ws:
        ws.send(start_message())
        assert receive(ws)["type"] == "session_started"
        ws.send('{"type": "stop", "n": ' + BAD_NUMBERS["digits"] + "}")
        code, reason = closed_with(ws)
    assert code == 1008, (code, reason)
    assert reason, "a close without a reason"
    wait_no_sessions(service.ports, 20.0)
    audio_is_served(service)


# ------------------------------------------------------------ dropped speech


def test_an_audio_client_faster_than_real_time_is_told_of_a_dropped_utterance(
    service: RunningService, speech: dict[str, Any]
) -> None:
    """22 s of five sentences sent at once: STT holds one, the queue one, the next
    drops the oldest waiting, and the client is told (then leaves: nothing more to see)."""
    audio = pcm(speech, "paused_sentences.wav", 16_000)
    events: list[dict[str, Any]] = []
    with audio_client(service) as ws:
        ws.send(start_message())
        step = 32_000  # 1 s a message
        for start in range(0, len(audio), step):
            ws.send(audio[start : start + step])
        for _ in range(1000):
            events.append(receive(ws, 60))
            if events[-1].get("type") in ("utterance_dropped", "session_ended"):
                break
    dropped = events[-1]
    assert dropped.get("type") == "utterance_dropped", events
    assert dropped["data"]["reason"] == "queue_full"
    ended = [e["utterance_id"] for e in events if e.get("type") == "speech_end"]
    assert dropped["utterance_id"] in ended
    wait_no_sessions(service.ports, 20.0)


def test_a_realtime_client_faster_than_real_time_gets_a_failed_item_when_one_is_dropped(
    service: RunningService, speech: dict[str, Any]
) -> None:
    """The same through Realtime: the dropped utterance's committed item is answered with
    ``...transcription.failed`` (``queue_full``), the client's sign to slow down."""
    audio = pcm(speech, "paused_sentences.wav", 24_000)
    committed: list[str] = []
    events: list[dict[str, Any]] = []
    with realtime(service) as ws:
        assert receive(ws)["type"] == "session.created"
        step = 48_000  # 1 s an append
        for start in range(0, len(audio), step):
            chunk = base64.b64encode(audio[start : start + step]).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        for _ in range(1000):
            events.append(receive(ws, 60))
            if events[-1]["type"] == "input_audio_buffer.committed":
                committed.append(events[-1]["item_id"])
            if events[-1]["type"] == "conversation.item.input_audio_transcription.failed":
                break
    failed = events[-1]
    assert failed["type"] == "conversation.item.input_audio_transcription.failed", events
    assert failed["error"]["code"] == "queue_full", failed
    assert failed["item_id"] in committed
    wait_no_sessions(service.ports, 20.0)


# ------------------------------------------------------------- client JSON


_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=10**19).map(lambda n: str(n) * 300),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400 + ".5"]),
)


@given(number=_numbers, wrapper=st.sampled_from(["{}", '{{"a": [{}]}}', "[1, {}]"]))
def test_any_number_parses_to_a_finite_value_or_one_client_json_error(
    number: object, wrapper: str
) -> None:
    text = wrapper.format(number if isinstance(number, str) else json.dumps(number))
    try:
        value = client_json.loads(text)
    except client_json.ClientJsonError as error:
        assert str(error) and len(str(error)) < 120
    else:
        assert value is not None
        flat = json.dumps(value, allow_nan=False)  # finite, so it prints
        assert len(flat) < len(text) + 64
