"""The service as a user runs it: ``python -m rtap_trio --source demo``, then SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import IO

import pytest
import zmq

from rtap_trio.bench.common import ServicePorts
from rtap_trio.devtools.textmetrics import word_error_rate
from rtap_trio.transport.schemas import EventMessage, EventType, TranscriptMessage, parse_message

from .forkserver import rtap_command
from .support import REPO

DEMO_TEXT = "what is the weather in berlin today"

#: conftest.py turns the warm-up off for the tests' services; these run the
#: demo as the README does (a stop during loading is one during the warm-up).
AS_RUN = {"RTAP_STT__WARMUP": "true"}


@pytest.mark.slow
def test_demo_service_publishes_on_all_ports_and_stops_on_sigterm() -> None:
    ports = ServicePorts.free()
    # As a user runs it: the engines warmed up before the service says it runs.
    env = {**os.environ, **ports.env(), **AS_RUN}
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    subscriber = context.socket(zmq.SUB)
    subscriber.subscribe(b"")
    subscriber.setsockopt(zmq.RCVTIMEO, 500)
    subscriber.connect(f"tcp://127.0.0.1:{ports.transcripts}")
    events = context.socket(zmq.SUB)
    events.subscribe(b"")
    events.setsockopt(zmq.RCVTIMEO, 500)
    events.connect(f"tcp://127.0.0.1:{ports.events}")
    # The default profile, as the README runs it: multilingual base model.
    process = subprocess.Popen(
        [sys.executable, "-m", "rtap_trio", "--source", "demo"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        transcript = None
        deadline = time.monotonic() + 120
        while transcript is None and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1][-3000:]
            try:
                topic, payload = subscriber.recv_multipart()
            except zmq.Again:
                continue
            message = parse_message(payload)
            if isinstance(message, TranscriptMessage):
                assert topic == f"transcript.{message.session_id}".encode()
                transcript = message
        assert transcript is not None, "no transcript within 120 s"
        assert word_error_rate(DEMO_TEXT, transcript.text) <= 0.3, transcript.text
        assert transcript.wake_word == "computer" and transcript.language == "en"
        assert transcript.model == "base"

        with urllib.request.urlopen(f"http://127.0.0.1:{ports.telemetry}/health", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.telemetry}/metrics", timeout=5) as r:
            assert b"rtap_pipeline_latency_seconds_count" in r.read()
        with socket.create_connection(("127.0.0.1", ports.websocket), timeout=5):
            pass  # the WebSocket port accepts connections (content is tested in-process)

        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
        stop_s = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        subscriber.close(linger=0)
    assert process.returncode == 0, stderr[-3000:]
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(entry["message"] == "RTAP stopped" for entry in logs)
    assert all({"timestamp", "level", "component", "session_id"} <= entry.keys() for entry in logs)
    # The demo prints transcripts on stdout; their text stays out of the logs.
    printed = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert printed and printed[0]["text"] == transcript.text
    assert transcript.text not in stderr
    stopping = []
    while True:
        try:
            _, payload = events.recv_multipart()
        except zmq.Again:
            break
        message = parse_message(payload)
        if isinstance(message, EventMessage) and message.type is EventType.SERVICE_STOPPING:
            stopping.append(message)
    events.close(linger=0)
    context.term()
    assert stopping, "no service_stopping event before exit"
    print(f"stopped {stop_s:.2f}s after SIGTERM")


def start_until_loading(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """The demo service, returned once it logs that its engines are loading."""
    import threading

    process = subprocess.Popen(
        [*rtap_command(), "--source", "demo", *args],
        cwd=REPO,
        env={**os.environ, **ServicePorts(0, 0, 0, 0, 0).env(), **AS_RUN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    loading = threading.Event()

    def read(stream: IO[str]) -> None:
        for line in stream:
            lines.append(line)
            if "loading engines" in line:
                loading.set()

    threading.Thread(target=read, args=(process.stderr,), daemon=True).start()
    assert loading.wait(60), "".join(lines)[-3000:]
    return process, lines


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]])
def test_signals_while_models_load_stop_the_printing_demo_promptly(
    signals: list[signal.Signals],
) -> None:
    # The demo prints transcripts: its printer used to wait forever for an
    # outbox that a stop during loading never closed; a second Ctrl-C then
    # gave a traceback.
    process, lines = start_until_loading("--profile", "default")
    try:
        sent = time.monotonic()
        for signum in signals:
            process.send_signal(signum)
            time.sleep(0.05)
        process.wait(timeout=15)
        stop_s = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    time.sleep(0.2)  # the reader thread takes the last lines
    stderr = "".join(lines)
    assert process.returncode in (0, 130), stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert all(line.startswith("{") for line in lines), stderr[-3000:]
    print(f"stopped {stop_s:.2f}s after {[s.name for s in signals]} during loading")
