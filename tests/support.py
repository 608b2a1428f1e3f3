"""Shared test helpers: real sockets on 127.0.0.1, nothing mocked."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio
import zmq
from trio_websocket import ConnectionClosed, open_websocket_url

from rtap_trio.audio.base import AudioSource
from rtap_trio.bench.common import ServicePorts, ZmqSubscriber
from rtap_trio.bench.common import free_port as free_port  # re-exported for the tests
from rtap_trio.items import Samples
from rtap_trio.settings import Settings, load_settings
from rtap_trio.testing import EngineLender
from rtap_trio.transport.schemas import (
    CatchupReply,
    EventMessage,
    TranscriptMessage,
    parse_message,
)

from .forkserver import rtap_command, service_pid

REPO = Path(__file__).resolve().parents[1]

#: whisper.cpp threads per engine in the tests: one when test workers share the
#: cores. ggml's threads spin while they wait for each other, so with two workers
#: on two cores two threads each burn CPU for nothing: the same replay (base,
#: 22 s of speech, two at once) took 35 s of CPU and 36 s with two threads, 24 s
#: and 25 s with one. conftest.py passes it to the child services too.
WHISPER_THREADS = 1 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else 2

#: The STT budget of the tests' services. The profiles' 10-15 s are a latency
#: guard for a machine that does nothing else; here two test workers, their child
#: services and the bench share two cores, and base on one thread took 6.8 s for
#: a 3.5 s command beside three busy processes; an upload in CI once came back
#: empty, as one whose utterance timed out does (the log was not kept, so that
#: is the likely cause, not a seen one). The tests of the budget set their own.
STT_BUDGET_MS = 120_000

#: The STT engines of every service a test runs in this process, loaded once
#: per STT section and lent to one service at a time: the services' starts are
#: not what those tests are about, and the loads were about 100 s of the
#: suite's CPU (base: 3.3 s to load and warm up, tiny.en 1.1 s). conftest.py
#: frees them when the session ends. Tests of loading itself use their own.
ENGINES = EngineLender()


def in_process_service(settings: Settings, **options: Any) -> Any:
    """A :class:`rtap_trio.app.Service` for a test: no signal handlers, lent engines."""
    from rtap_trio.app import Service

    return Service(settings, handle_signals=False, open_stt=ENGINES, **options)


def service_settings(profile: str = "pc2", **overrides: Any) -> Settings:
    """Settings for an in-process service: ephemeral ports, file sources unpaced."""
    values: dict[str, Any] = {
        "output.zmq_pub_port_events": 0,
        "output.zmq_pub_port_transcripts": 0,
        "output.websocket_port": 0,
        "output.zmq_catchup_port": 0,
        "http.port": 0,
        "audio.realtime": False,
        "audio.loop_demo": False,
        "telemetry.log_level": "WARNING",
        "stt.whispercpp.n_threads": WHISPER_THREADS,
        "stt.budget_ms": STT_BUDGET_MS,
        # No warm-up, as conftest.py sets it for the child services: ENGINES
        # loads each STT section once per worker, and base's warm-up (its 30 s
        # window) was 2.8 s of CPU, tiny.en's 0.6, that no check looks at.
        "stt.warmup": False,
        # The silence timer alone: where utterances end does not hang on how
        # soon a busy machine answers the end-of-turn detector. The detector's
        # own tests (test_turn.py) and the profiles run as processes use it.
        "turn.engine": "none",
    }
    values.update(overrides)
    return load_settings(profile, environ={}, overrides=values)


@dataclass
class ZmqCollector:
    """A real SUB socket; receives in a worker thread so trio is never blocked."""

    port: int
    messages: list[tuple[str, EventMessage | TranscriptMessage]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._subscriber = ZmqSubscriber([self.port], receive_timeout_ms=200)

    async def wait_connected(self) -> None:
        await self._subscriber.wait_connected()

    async def collect_until(self, predicate: Any, limit_s: float) -> None:
        receive = self._subscriber.socket.recv_multipart
        with trio.fail_after(limit_s):
            while not any(predicate(m) for _, m in self.messages):
                try:
                    topic, payload = await trio.to_thread.run_sync(receive)
                except zmq.Again:
                    continue
                self.messages.append((topic.decode(), parse_message(payload)))

    def close(self) -> None:
        self._subscriber.close()


async def websocket_collect(
    port: int,
    into: list[EventMessage | TranscriptMessage],
    connected: trio.Event,
) -> None:
    """A real WebSocket client: collects messages until the server closes."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        connected.set()
        try:
            while True:
                message = parse_message(await ws.get_message())
                if isinstance(message, EventMessage | TranscriptMessage):  # not notices
                    into.append(message)
        except ConnectionClosed:
            return


async def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await trio.to_thread.run_sync(get)


class GatedSource(AudioSource):
    """A real source that holds its first frame until ``gate`` is set.

    Subscribers connect first, so no message is published before they listen.
    With ``hold_open`` it stays open after its audio until that event is set.
    """

    def __init__(
        self, inner: AudioSource, gate: trio.Event, hold_open: trio.Event | None = None
    ) -> None:
        self._inner = inner
        self._gate = gate
        self._hold_open = hold_open
        self.finished = trio.Event()
        self.name = inner.name
        self.live = inner.live

    async def open(self) -> None:
        await self._inner.open()

    async def frames(self) -> AsyncIterator[Samples]:
        await self._gate.wait()
        async for frame in self._inner.frames():
            yield frame
        self.finished.set()
        if self._hold_open is not None:
            # Like a microphone in a quiet room: no more audio, but not ended.
            await self._hold_open.wait()


async def wait_until_idle(service: Any, source: GatedSource, limit_s: float) -> None:
    """Until the source has sent everything and the pipeline has nothing left to do."""
    with trio.fail_after(limit_s):
        await source.finished.wait()
        session = service.local_session
        while True:
            stats = session.statistics()
            assert stats.pipeline is not None
            if (
                not (stats.pipeline.frames_queued or stats.pipeline.utterances_queued)
                and stats.state == "IDLE"
            ):
                return
            await trio.sleep(0.05)


@dataclass
class ServiceRun:
    """What subscribers saw of one in-process service run."""

    transcripts: list[TranscriptMessage]
    events: list[EventMessage]
    websocket: list[EventMessage | TranscriptMessage]
    metrics: str
    stop_s: float


async def run_service(
    settings: Settings,
    source: AudioSource,
    expected_transcripts: int,
    limit_s: float = 120,
    fault_hook: Any = None,
) -> ServiceRun:
    """Run a service on ``source`` with a real ZeroMQ SUB pair and a WebSocket client.

    The source is held until every subscriber is connected and kept open after
    its audio (like a quiet microphone) until ``expected_transcripts`` have
    arrived; then the service is stopped as a signal would stop it.
    """
    import time

    gate, hold = trio.Event(), trio.Event()
    gated = GatedSource(source, gate, hold)
    service = in_process_service(settings, source=gated, fault_hook=fault_hook)
    ws_messages: list[EventMessage | TranscriptMessage] = []
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(service.run)
        assert ports.zmq_events and ports.zmq_transcripts and ports.websocket and ports.telemetry
        events = ZmqCollector(ports.zmq_events)
        transcripts = ZmqCollector(ports.zmq_transcripts)
        try:
            await events.wait_connected()
            await transcripts.wait_connected()
            connected = trio.Event()
            nursery.start_soon(websocket_collect, ports.websocket, ws_messages, connected)
            await connected.wait()
            # The subscription reaches the publisher a moment after the handshake.
            await trio.sleep(0.2)
            gate.set()
            if expected_transcripts:
                await transcripts.collect_until(
                    lambda _: len(transcripts.messages) >= expected_transcripts, limit_s
                )
            else:  # nothing should come: wait until all the audio has gone through
                await wait_until_idle(service, gated, limit_s)
            _, metrics = await http_get(ports.telemetry, "/metrics")
            started = time.perf_counter()
            service.stop()
            await events.collect_until(
                lambda m: isinstance(m, EventMessage) and m.type == "service_stopping", 10
            )
        finally:
            events.close()
            transcripts.close()
    return ServiceRun(
        transcripts=[m for _, m in transcripts.messages if isinstance(m, TranscriptMessage)],
        events=[m for _, m in events.messages if isinstance(m, EventMessage)],
        websocket=ws_messages,
        metrics=metrics,
        stop_s=time.perf_counter() - started,
    )


#: Where :func:`scratch_folder` puts its folders when there is room: in RAM.
_RAM = Path("/dev/shm")


@contextlib.contextmanager
def scratch_folder(prefix: str = "rtap-scratch-") -> Iterator[Path]:
    """A folder for large scratch files, removed afterwards: in RAM when there is room.

    The model tests write 2.9 GB (conversions, and a damaged copy of a 78 MB
    model per check): on this machine's disk a 78 MB file cost 0.42 s of
    kernel time to write and remove, in tmpfs 0.06 (the two modules: 11.8 ->
    6.5 CPU-s of kernel time, 32 -> 23 s alone). Elsewhere the temp folder.
    """
    import shutil
    import tempfile

    room = shutil.disk_usage(_RAM).free if _RAM.is_dir() else 0
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=_RAM if room > 2 << 30 else None))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def rtap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "RTAP_LOG_LEVEL": "ERROR", **(env or {})}
    return subprocess.run(
        [*rtap_command(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=environment,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *needles: str
) -> None:
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("rtap: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def service_process(
    *args: str,
    env: dict[str, str] | None = None,
    limit_s: float = 120,
    ports: ServicePorts | None = None,
) -> Iterator[ServicePorts]:
    """``python -m rtap_trio ARGS`` on free ports (or ``ports``), yielded once
    /health says ok.

    Stopped with SIGTERM afterwards, as systemd would; it must exit 0.
    """
    with running_service(*args, env=env, limit_s=limit_s, ports=ports) as service:
        yield service.ports


def health(ports: ServicePorts) -> dict[str, Any]:
    """The service's ``/health`` report."""
    url = f"http://127.0.0.1:{ports.telemetry}/health"
    with urllib.request.urlopen(url, timeout=5) as response:
        report: dict[str, Any] = json.loads(response.read())
        return report


def wait_no_sessions(ports: ServicePorts, limit_s: float = 10.0) -> None:
    """Until ``/health`` counts no active session; fails after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while (sessions := health(ports)["sessions"])["active"]:
        assert time.monotonic() < deadline, f"sessions left running: {sessions}"
        time.sleep(0.1)


@dataclass(frozen=True)
class RunningService:
    """A service process started by :func:`running_service`."""

    ports: ServicePorts
    process: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return service_pid(self.process)


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> None:
    """Start the process's peak RSS (VmHWM) over from its RSS now (Linux clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set since start or the last :func:`reset_peak_rss`."""
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


@contextlib.contextmanager
def running_service(
    *args: str,
    env: dict[str, str] | None = None,
    limit_s: float = 120,
    ports: ServicePorts | None = None,
) -> Iterator[RunningService]:
    """:func:`service_process`, yielding the process too (its pid for /proc).

    Its stderr goes to a file, not a pipe: nobody reads a pipe while the tests
    run, and a service whose warnings filled its 64 KiB would block in a write.
    """
    import json
    import signal
    import tempfile
    import time

    ports = ports or ServicePorts.free()
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as stderr:

        def stderr_tail() -> str:
            stderr.seek(0)
            return stderr.read()[-3000:]

        process = subprocess.Popen(
            [*rtap_command(), *args],
            cwd=REPO,
            env={**os.environ, **ports.env(), "RTAP_LOG_LEVEL": "WARNING", **(env or {})},
            stderr=stderr,
            text=True,
        )
        try:
            deadline = time.monotonic() + limit_s
            while True:
                assert process.poll() is None, stderr_tail()
                assert time.monotonic() < deadline, "the service did not come up"
                try:
                    url = f"http://127.0.0.1:{ports.telemetry}/health"
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if json.loads(response.read())["status"] == "ok":
                            break
                except OSError:
                    pass
                time.sleep(0.2)
            yield RunningService(ports, process)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
            assert process.returncode == 0, stderr_tail()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def client_frame(payload: bytes, *, compressed: bool, opcode: int = 1) -> bytes:
    """One masked, final frame; RSV1 marks a compressed message (RFC 7692)."""
    first = 0x80 | (0x40 if compressed else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    elif size < 65_536:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    mask = os.urandom(4)
    keys = np.resize(np.frombuffer(mask, np.uint8), size)
    return header + mask + (np.frombuffer(payload, np.uint8) ^ keys).tobytes()


def ask_catchup(port: int, request: bytes = b'{"after_seq": -1}') -> CatchupReply:
    """One request to a service's catch-up port (a REQ socket), its reply parsed."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        socket = context.socket(zmq.REQ)
        socket.setsockopt(zmq.RCVTIMEO, 5000)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(f"tcp://127.0.0.1:{port}")
        socket.send(request)
        return CatchupReply.model_validate_json(socket.recv())
    finally:
        context.destroy(linger=0)
