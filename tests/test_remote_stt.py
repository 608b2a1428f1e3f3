"""The remote STT engine and its CPU fallback (issue 19).

The circuit breaker and the fallback's limits are scheduling: they are driven
with trio's MockClock over scripted engines. Everything about the remote
itself is real: its HTTP client against real sockets on 127.0.0.1 (a small
server that records what it is sent, and hangs when told to), and the drill,
a second RTAP process as the remote engine of a pc2-like service, SIGKILLed
mid-stream and started again, with real speech through both.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np
import pytest
import trio
import trio.testing
from pydantic import SecretStr

from rtap_trio.app import Service
from rtap_trio.bench.common import ServicePorts
from rtap_trio.client import open_audio_session
from rtap_trio.devtools import speechgen
from rtap_trio.devtools.textmetrics import word_error_rate
from rtap_trio.items import Float32
from rtap_trio.settings import RemoteSttSettings, load_settings
from rtap_trio.stt import EngineCapabilities, EngineRequest, EngineResult, SttEngine, SttPool
from rtap_trio.stt.circuit import CircuitBreaker, CircuitState
from rtap_trio.stt.failure import EngineFailed
from rtap_trio.stt.fallback import FallbackEngine
from rtap_trio.stt.observer import CircuitClosed, CircuitOpened
from rtap_trio.stt.remote import RemoteClient, RemoteEngine
from rtap_trio.transport.schemas import EventMessage

from .forkserver import rtap_command
from .support import REPO, ZmqCollector, free_port, http_get, service_settings

AUDIO: Float32 = np.zeros(16_000, dtype=np.float32)
ASK = EngineRequest(language="en")
CAPABILITIES = EngineCapabilities(name="test", languages=("en",), multilingual=False)


class ScriptedEngine(SttEngine):
    """An engine that does what its script says, call by call: answer, fail, or hang."""

    def __init__(self, script: Iterator[str], name: str) -> None:
        self.capabilities = CAPABILITIES
        self._script = script
        self._name = name
        self.calls = 0

    async def transcribe(self, audio: Float32, request: EngineRequest) -> EngineResult:
        self.calls += 1
        step = next(self._script)
        if step == "fail":
            raise EngineFailed("connect", "refused")
        if step == "hang":
            await trio.sleep_forever()
        return EngineResult(self._name, "en", None, 0.01, engine=self._name)

    async def aclose(self) -> None:
        pass


@dataclass
class Recorder:
    """An :class:`~rtap_trio.stt.observer.EngineObserver` that keeps what it is told."""

    answers: list[str] = field(default_factory=list)
    failures: list[tuple[str, str, float]] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    opened: list[CircuitOpened] = field(default_factory=list)
    closed: list[CircuitClosed] = field(default_factory=list)

    def answered(self, engine: str, seconds: float) -> None:
        self.answers.append(engine)

    def failed(self, engine: str, reason: str, seconds: float) -> None:
        self.failures.append((engine, reason, seconds))

    def fell_back(self, engine: str, reason: str) -> None:
        self.fallbacks.append(reason)

    def circuit_opened(self, opened: CircuitOpened) -> None:
        self.opened.append(opened)

    def circuit_closed(self, closed: CircuitClosed) -> None:
        self.closed.append(closed)


def _fallback_engine(
    primary: list[str] | Iterator[str], circuit: CircuitBreaker | None = None
) -> tuple[FallbackEngine, ScriptedEngine, Recorder]:
    remote = ScriptedEngine(iter(primary), "remote")
    local = ScriptedEngine(itertools.repeat("ok"), "whispercpp")
    engine = FallbackEngine(
        remote,
        local,
        circuit or CircuitBreaker(3, retry_initial_s=1.0, retry_max_s=8.0),
        names=("remote", "whispercpp"),
        timeout_s=2.0,
        reserve_s=2.0,
    )
    recorder = Recorder()
    engine.observe(recorder)
    return engine, remote, recorder


async def test_the_circuit_opens_probes_with_backoff_and_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three failures open it; the first probe fails, the second answers.
    engine, remote, seen = _fallback_engine(["fail"] * 4 + ["ok"] * 10)
    circuit = engine.circuit
    answered = [(await engine.transcribe(AUDIO, ASK)).engine for _ in range(3)]
    assert answered == ["whispercpp"] * 3, "late, never lost: the fallback answered each"
    assert circuit.state is CircuitState.OPEN and len(seen.opened) == 1
    assert seen.opened[0] == CircuitOpened(
        engine="remote", fallback="whispercpp", reason="connect", failures=3, retry_in_s=1.0
    )
    opened_at = trio.current_time()

    # Open: the remote is not asked at all.
    assert (await engine.transcribe(AUDIO, ASK)).engine == "whispercpp"
    assert remote.calls == 3 and seen.fallbacks[-1] == "circuit_open"

    await trio.sleep(1.0)  # the probe is due: it fails, and the wait doubles
    assert (await engine.transcribe(AUDIO, ASK)).engine == "whispercpp"
    assert remote.calls == 4 and circuit.retry_in_s == 2.0
    await trio.sleep(1.0)  # not due yet
    assert (await engine.transcribe(AUDIO, ASK)).engine == "whispercpp"
    assert remote.calls == 4
    await trio.sleep(1.0)  # due: the probe answers, the circuit closes
    assert (await engine.transcribe(AUDIO, ASK)).engine == "remote"
    assert circuit.state is CircuitState.CLOSED and not seen.closed[1:]
    # Diverted: the one that opened it, two refused, the failed probe.
    assert seen.closed == [
        CircuitClosed(engine="remote", down_s=trio.current_time() - opened_at, fallbacks=4)
    ]
    assert seen.closed[0].down_s == 3.0
    assert (await engine.transcribe(AUDIO, ASK)).engine == "remote"
    assert [f[1] for f in seen.failures] == ["connect"] * 4
    assert seen.fallbacks == ["connect"] * 3 + ["circuit_open", "connect", "circuit_open"]


async def test_backoff_stops_at_its_maximum(autojump_clock: trio.testing.MockClock) -> None:
    engine, remote, _ = _fallback_engine(
        itertools.repeat("fail"), CircuitBreaker(1, retry_initial_s=1.0, retry_max_s=3.0)
    )
    waits = []
    for _ in range(5):
        await engine.transcribe(AUDIO, ASK)
        waits.append(engine.circuit.retry_in_s)
        await trio.sleep(engine.circuit.retry_in_s)
    assert waits == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert remote.calls == 5  # each wait ended in exactly one probe


async def test_a_hanging_remote_leaves_the_fallback_its_share_of_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Through the pool, as the stages ask: its budget is the remote's deadline.
    engine, _, seen = _fallback_engine(itertools.repeat("hang"))
    pool = SttPool([engine])
    started = trio.current_time()
    result = await pool.transcribe(AUDIO, budget_s=10.0, language="en")
    # stt.remote.timeout_ms (2 s) is within 10 s less the 2 s reserve.
    assert result.engine == "whispercpp" and trio.current_time() - started == 2.0
    assert seen.failures == [("remote", "timeout", 2.0)]
    # A budget of 3 s: the remote gets half of it (1.5 s), the fallback the rest.
    started = trio.current_time()
    result = await pool.transcribe(AUDIO, budget_s=3.0, language="en")
    assert result.engine == "whispercpp" and trio.current_time() - started == 1.5


async def test_a_cancelled_call_is_no_failure(autojump_clock: trio.testing.MockClock) -> None:
    # A final preempting a partial cancels from outside: that says nothing of the
    # remote, and a probe cancelled so is made again by the next request.
    engine, remote, seen = _fallback_engine(
        ["fail", "hang", "ok"], CircuitBreaker(1, retry_initial_s=1.0, retry_max_s=8.0)
    )
    await engine.transcribe(AUDIO, ASK)
    await trio.sleep(1.0)
    async with trio.open_nursery() as nursery:  # the probe hangs, and is preempted
        nursery.start_soon(_cancel_after, 0.5, nursery.cancel_scope)
        await engine.transcribe(AUDIO, ASK)
    assert remote.calls == 2 and len(seen.failures) == 1
    assert engine.circuit.state is CircuitState.OPEN
    assert (await engine.transcribe(AUDIO, ASK)).engine == "remote"  # probed at once
    assert engine.circuit.state is CircuitState.CLOSED


def test_the_remote_settings_come_from_the_environment() -> None:
    settings = load_settings(
        "pc2",
        environ={
            "RTAP_STT__ENGINE": "remote",
            "RTAP_STT__FALLBACK": "whispercpp",
            "RTAP_STT__REMOTE__URLS": '["http://main-pc:8080/v1/", "http://gpu-2:8080/v1"]',
            "RTAP_STT__REMOTE__TOKEN": "s3cret",
            "RTAP_STT__REMOTE__MODEL": "base",
            "RTAP_STT__REMOTE__TIMEOUT_MS": "1500",
        },
    )
    stt = settings.stt
    assert (stt.engine, stt.fallback) == ("remote", "whispercpp")
    assert stt.remote.urls == ["http://main-pc:8080/v1", "http://gpu-2:8080/v1"]
    assert stt.remote.token and stt.remote.token.get_secret_value() == "s3cret"
    assert (stt.remote.model, stt.remote.timeout_ms) == ("base", 1500)
    assert stt.whispercpp.model_name == "tiny.en"  # the fallback keeps pc2's engine
    profile = load_settings("pc2_remote", environ={"RTAP_MAIN_PC_URL": "http://10.0.0.2:8080/v1"})
    assert profile.stt.engine == "remote" and profile.stt.remote.urls == ["http://10.0.0.2:8080/v1"]
    assert load_settings("pc2", environ={}).stt.engine == "whispercpp"


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"RTAP_STT__ENGINE": "remote"}, "stt.remote.urls is empty"),
        ({"RTAP_STT__REMOTE__URLS": "[main-pc:8080]"}, "not an http"),
        ({"RTAP_STT__FALLBACK": "whispercpp"}, "stt.engine itself"),
    ],
)
def test_remote_settings_that_cannot_work_are_refused(
    environ: dict[str, str], problem: str
) -> None:
    from rtap_trio.errors import ConfigError

    with pytest.raises(ConfigError, match=problem):
        load_settings("pc2", environ=environ)


# ---------------------------------------------------------------------- real sockets


@dataclass
class FakeRemote:
    """An HTTP/1.1 server on 127.0.0.1 that records each request and answers
    like an OpenAI transcription endpoint, or (``hang``) never answers and notes
    when the client closes the connection."""

    hang: bool = False
    #: close each connection, unanswered, at its second request (a server whose
    #: keep-alive timeout ran out just as the client reused the connection)
    drop_second: bool = False
    port: int = 0
    connections: int = 0
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    received: trio.Event = field(default_factory=trio.Event)
    closed_at: float | None = None

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        for served in itertools.count():
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some()
                if not data:
                    self.closed_at = trio.current_time()
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            length = int(
                next(
                    line
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            while len(buffer) < length:
                buffer += await stream.receive_some()
            body, buffer = buffer[:length], buffer[length:]
            if self.drop_second and served == 1:
                return  # closed by serve_tcp, unanswered
            self.requests.append((head, body))
            self.received.set()
            if self.hang:
                while await stream.receive_some():
                    pass
                self.closed_at = trio.current_time()
                return
            answer = (
                b'{"text": " Turn on the lights.", "language": "english", "duration": 1.0,'
                b' "segments": [{"text": " Turn on the lights.", "no_speech_prob": 0.02}]}'
            )
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(answer)}\r\n\r\n".encode()
                + answer
            )


async def _serve(nursery: trio.Nursery, remote: FakeRemote) -> str:
    listeners = await nursery.start(partial(trio.serve_tcp, remote.serve, 0, host="127.0.0.1"))
    remote.port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{remote.port}/v1"


def _remote_engine(url: str) -> RemoteEngine:
    settings = RemoteSttSettings(
        urls=[url], token=SecretStr("s3cret"), model="base", languages=["en"]
    )
    client = RemoteClient(settings, lambda heard: {"english": "en"}.get(heard))
    return RemoteEngine(client, CAPABILITIES)


async def test_the_remote_engine_uploads_over_one_kept_alive_connection() -> None:
    remote = FakeRemote()
    async with trio.open_nursery() as nursery:
        engine = _remote_engine(await _serve(nursery, remote))
        results = [await engine.transcribe(AUDIO, EngineRequest()) for _ in range(3)]
        await engine.aclose()
        nursery.cancel_scope.cancel()
    assert results[0] == EngineResult("Turn on the lights.", "en", None, 0.02, engine="remote")
    assert remote.connections == 1 and len(remote.requests) == 3
    head, body = remote.requests[0]
    assert head.startswith(b"POST /v1/audio/transcriptions HTTP/1.1")
    assert b"authorization: Bearer s3cret" in head.lower().replace(b"bearer", b"Bearer")
    assert b'name="model"\r\n\r\nbase' in body
    assert b'name="response_format"\r\n\r\nverbose_json' in body
    assert b"RIFF" in body and b"WAVE" in body  # the utterance, as a WAV file


async def test_a_kept_alive_connection_lost_before_its_answer_is_retried_once() -> None:
    remote = FakeRemote(drop_second=True)
    async with trio.open_nursery() as nursery:
        engine = _remote_engine(await _serve(nursery, remote))
        texts = [(await engine.transcribe(AUDIO, EngineRequest())).text for _ in range(3)]
        await engine.aclose()
        nursery.cancel_scope.cancel()
    # Each second request on a connection was dropped, and sent again on a new one.
    assert texts == ["Turn on the lights."] * 3
    assert len(remote.requests) == 3 and remote.connections == 3


async def test_cancelling_the_remote_engine_aborts_its_request() -> None:
    remote = FakeRemote(hang=True)
    async with trio.open_nursery() as nursery:
        engine = _remote_engine(await _serve(nursery, remote))
        cancelled: list[float] = []
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_when, remote.received, scope, cancelled)
            await engine.transcribe(AUDIO, EngineRequest(language="en"))
        with trio.fail_after(5):
            while remote.closed_at is None:
                await trio.sleep(0.001)
        await engine.aclose()
        nursery.cancel_scope.cancel()
    assert scope.cancelled_caught
    assert b'name="language"\r\n\r\nen' in remote.requests[0][1]
    closed_after_ms = (remote.closed_at - cancelled[0]) * 1000
    print(f"remote saw the connection close {closed_after_ms:.1f} ms after the cancellation")
    assert closed_after_ms < 500, "the request outlived its cancellation"


async def _cancel_when(event: trio.Event, scope: trio.CancelScope, at: list[float]) -> None:
    await event.wait()
    at.append(trio.current_time())
    scope.cancel()


async def _cancel_after(seconds: float, scope: trio.CancelScope) -> None:
    await trio.sleep(seconds)
    scope.cancel()


async def test_a_refused_url_is_skipped_for_the_next() -> None:
    remote = FakeRemote()
    async with trio.open_nursery() as nursery:
        good = await _serve(nursery, remote)
        dead = f"http://127.0.0.1:{free_port()}/v1"
        settings = RemoteSttSettings(urls=[dead, good])
        client = RemoteClient(settings, lambda heard: None)
        engine = RemoteEngine(client, CAPABILITIES)
        # Round robin: the dead URL comes first every other request, and is skipped.
        texts = [(await engine.transcribe(AUDIO, EngineRequest())).text for _ in range(4)]
        await engine.aclose()
        nursery.cancel_scope.cancel()
    assert texts == ["Turn on the lights."] * 4 and len(remote.requests) == 4
    with pytest.raises(EngineFailed, match="connect"):
        only_dead = RemoteClient(RemoteSttSettings(urls=[dead]), lambda heard: None)
        try:
            await only_dead.transcribe(b"", None)
        finally:
            await only_dead.aclose()


# ---------------------------------------------------------------------- the drill

#: Said one after another into a pc2-like service whose STT is another RTAP:
#: one answered by the remote over its kept-alive connection is enough before
#: the kill (a second one there tested nothing more, for a transcription).
DRILL = [
    "turn on the lights in the kitchen",
    "what is the weather like tomorrow",  # sent, then the remote is SIGKILLed
    "close the blinds in the bedroom",  # the remote is gone
    "play some music in the living room",  # the remote is back
    "lock the front door and turn off the lights",  # the remote's, if the one before was not
]
KILLED_AT = 1
RESTARTED_BEFORE = 3
TOKEN = "drill-token-0123456789"


def _start_remote(ports: ServicePorts, log: IO[str]) -> subprocess.Popen[str]:
    """The remote: a plain pc2 RTAP (tiny.en) serving its OpenAI endpoint, with a token."""
    return subprocess.Popen(
        [*rtap_command(), "--profile", "pc2", "--source", "none"],
        cwd=REPO,
        env={
            **os.environ,
            **ports.env(),
            "RTAP_LOG_LEVEL": "WARNING",
            "RTAP_SECURITY__TOKEN": TOKEN,
            "RTAP_STT__PARTIALS": "false",
            # It only answers uploads, which never ask the end-of-turn
            # detector: not loaded (0.2 s of CPU a start, and it starts twice).
            "RTAP_TURN__ENGINE": "none",
        },
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )


async def _until_healthy(ports: ServicePorts, process: subprocess.Popen[str], log: IO[str]) -> None:
    with trio.fail_after(90):
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise AssertionError(f"the remote exited: {log.read()[-2000:]}")
            try:
                status, _ = await http_get(ports.telemetry, "/health")
                if status == 200:
                    return
            except OSError:
                pass
            await trio.sleep(0.1)


@pytest.mark.slow
async def test_drill_the_remote_is_killed_mid_stream_and_comes_back(tmp_path: Path) -> None:
    clips = []
    for i, sentence in enumerate(DRILL):
        pcm, _ = speechgen.render([speechgen.Utterance(sentence, speechgen.EN_M)], f"remote-{i}")
        clips.append(pcm.astype(np.float32) / 32768)
    ports = ServicePorts.free()
    log = (tmp_path / "remote.log").open("w+", encoding="utf-8")
    remote = _start_remote(ports, log)
    settings = service_settings(
        "pc2",
        **{
            "audio.source": "none",
            "stt.partials": False,
            "stt.engine": "remote",
            "stt.fallback": "whispercpp",
            "stt.remote.urls": [f"http://127.0.0.1:{ports.telemetry}/v1"],
            "stt.remote.token": TOKEN,
            # The first failure opens the circuit, so the drill sees the switch
            # on the utterance it kills; probes every 0.5-2 s.
            "stt.remote.failures_to_open": 1,
            "stt.remote.retry_initial_ms": 500,
            "stt.remote.retry_max_ms": 2000,
            # A killed remote is a refused or reset connection, at once; the
            # limit is for a slow one, and two busy cores make the remote slow.
            "stt.remote.timeout_ms": 30_000,
        },
    )
    # Engines opened as a start opens them (not lent): the fallback loads here.
    service = Service(settings, handle_signals=False)
    try:
        await _until_healthy(ports, remote, log)
        async with trio.open_nursery() as nursery:
            client_ports = await nursery.start(service.run)
            events = ZmqCollector(client_ports.zmq_events)
            await events.wait_connected()
            async with open_audio_session(client_ports.websocket, wake_word=False) as client:
                for i, clip in enumerate(clips):
                    if i == RESTARTED_BEFORE:
                        remote = _start_remote(ports, log)
                        await _until_healthy(ports, remote, log)
                        back_at = time.time()
                    await client.send_audio(clip)
                    if i == KILLED_AT:  # its utterance is on its way to the remote
                        remote.send_signal(signal.SIGKILL)
                        killed_at = time.time()
                        remote.wait()
                    with trio.fail_after(60):
                        while len(client.transcripts) <= i:
                            await trio.sleep(0.02)
                    if i == KILLED_AT:  # the operator's view: /health says the circuit is open
                        _, body = await http_get(client_ports.telemetry, "/health")
                        circuit_while_down = json.loads(body)["stt"]["circuit"]
                await client.stop()
            await events.collect_until(lambda m: m.type == "stt_remote_restored", 20)
            events.close()
            _, metrics = await http_get(client_ports.telemetry, "/metrics")
            _, body = await http_get(client_ports.telemetry, "/health")
            circuit_at_end = json.loads(body)["stt"]["circuit"]
            service.stop()
    finally:
        if remote.poll() is None:
            remote.send_signal(signal.SIGTERM)
            remote.wait(timeout=20)
        log.seek(0)
        remote_log = log.read()[-3000:]
        log.close()

    transcripts = client.transcripts
    said = [(t.text, t.stt_engine) for t in transcripts]
    print("\n".join(f"  {engine:10} {text}" for text, engine in said))
    # Every utterance once, with its words, late or not.
    assert len(transcripts) == len(DRILL), (said, remote_log)
    for sentence, transcript in zip(DRILL, transcripts, strict=True):
        assert word_error_rate(sentence, transcript.text) <= 0.35, (sentence, transcript.text)
    engines = [t.stt_engine for t in transcripts]
    assert engines[:KILLED_AT] == ["remote"] * KILLED_AT, said
    assert engines[KILLED_AT + 1 : RESTARTED_BEFORE] == ["whispercpp"], said
    assert engines[-1] == "remote", said
    # The circuit opened and closed, and said so.
    messages = [m for _, m in events.messages if isinstance(m, EventMessage)]
    fallback = next(m for m in messages if m.type == "stt_fallback")
    restored = next(m for m in messages if m.type == "stt_remote_restored")
    assert fallback.data["engine"] == "remote" and fallback.data["fallback"] == "whispercpp"
    assert restored.data["fallbacks"] >= 1
    print("\n".join(line for line in metrics.splitlines() if line.startswith("rtap_stt_")))
    assert 'rtap_stt_fallbacks_total{engine="remote",reason="connect"}' in metrics
    assert 'rtap_stt_engine_requests_total{engine="remote",outcome="failed"}' in metrics
    assert 'rtap_stt_engine_requests_total{engine="whispercpp",outcome="ok"}' in metrics
    assert 'rtap_stt_circuit_open{engine="remote"} 0.0' in metrics
    assert circuit_while_down["state"] == "open" and circuit_while_down["failures"] >= 1
    assert circuit_at_end == {**circuit_at_end, "state": "closed", "failures": 0}
    switched = transcripts[KILLED_AT]
    stt_ms = [round(t.latency_ms.stt) for t in transcripts]
    print(
        f"stt_ms {stt_ms}; "
        f"SIGKILL to stt_fallback {(fallback.emitted_at - killed_at) * 1000:.0f} ms "
        f"(utterance {KILLED_AT} answered by {switched.stt_engine} in "
        f"{switched.latency_ms.stt:.0f} ms of STT); remote healthy to stt_remote_restored "
        f"{(restored.emitted_at - back_at) * 1000:.0f} ms; down {restored.data['down_s']} s"
    )


def test_stt_engine_is_on_the_wire_only_when_set() -> None:
    # A service with one local engine publishes its transcripts byte for byte
    # as before the field existed (clients with additionalProperties: false).
    from rtap_trio.transport.outbox import Outbox
    from rtap_trio.transport.schemas import LatencyBreakdown

    fields = dict(
        session_id="s1",
        text="turn on the lights",
        language="en",
        language_confidence=0.9,
        sentiment="neutral",
        sentiment_confidence=0.8,
        wake_word=None,
        audio_start_s=0.5,
        audio_end_s=2.0,
        model="tiny.en",
        latency_ms=LatencyBreakdown(),
    )
    outbox = Outbox()
    assert "stt_engine" not in outbox.transcript(**fields).model_dump_json()
    remote = outbox.transcript(**fields, stt_engine="remote").model_dump_json()
    assert '"stt_engine":"remote"' in remote
