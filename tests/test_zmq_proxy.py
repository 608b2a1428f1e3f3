"""One stream for the agents (issue 19, item 4): ``python -m rtap_trio proxy``,
ZeroMQ's own XSUB/XPUB proxy, run as a real process in front of two real
services, each transcribing generated speech. One SUB connected to the proxy
alone hears both; each instance's catch-up still answers for its own; SIGTERM
stops the proxy with 0, and what it cannot serve is one line and an exit code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
import zmq

from rtap_trio.audio.file import FileSource
from rtap_trio.transport.schemas import EventMessage, TranscriptMessage, parse_message

from .forkserver import rtap_command
from .support import (
    REPO,
    GatedSource,
    ask_catchup,
    assert_one_line_error,
    in_process_service,
    rtap,
    service_settings,
)

pytestmark = pytest.mark.timeout(90)

#: what each instance says (tests/fixtures, without the wake word) and a word
#: tiny.en gets right in it
SAID = (("en_no_wake.wav", "door"), ("jarvis_lights.wav", "kitchen"))


def _subscribed(service: Any) -> bool:
    """Both of the service's publishers hold a subscription: the agent's, forwarded
    by the proxy (a test watching the service from outside, as /metrics would)."""
    publishers = service._zmq.publishers
    return len(publishers) == 2 and all(p.subscriptions for p, _ in publishers)


async def test_one_sub_on_the_proxy_hears_both_instances_and_sigterm_stops_it(
    speech: dict[str, Any],
) -> None:
    fixtures = Path(speech["dir"])
    settings = service_settings(
        "pc2", **{"wakeword.enabled": False, "output.heartbeat_interval_s": 0.2}
    )
    gate, hold = trio.Event(), trio.Event()
    services = [
        in_process_service(
            settings,
            source=GatedSource(
                FileSource(
                    fixtures / name,
                    frame_samples=settings.audio.frame_samples,
                    realtime=False,
                    trailing_silence_ms=1000,
                ),
                gate,
                hold,
            ),
        )
        for name, _ in SAID
    ]
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    agent = context.socket(zmq.SUB)
    agent.setsockopt(zmq.RCVTIMEO, 200)
    agent.setsockopt(zmq.LINGER, 0)
    agent.subscribe(b"")
    received: list[tuple[str, EventMessage | TranscriptMessage]] = []

    async def receive_until(predicate: Any, limit_s: float) -> None:
        with trio.fail_after(limit_s):
            while not predicate():
                try:
                    topic, payload = await trio.to_thread.run_sync(agent.recv_multipart)
                except zmq.Again:
                    continue
                message = parse_message(payload)
                assert isinstance(message, EventMessage | TranscriptMessage)
                received.append((topic.decode(), message))

    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as stderr:
        proxy: subprocess.Popen[str] | None = None
        try:
            async with trio.open_nursery() as nursery:
                ports = [await nursery.start(service.run) for service in services]
                command = [*rtap_command(), "proxy"]
                for bound in ports:
                    command += [
                        f"--events=tcp://127.0.0.1:{bound.zmq_events}",
                        f"--transcripts=tcp://127.0.0.1:{bound.zmq_transcripts}",
                    ]
                command += [
                    "--bind-events=tcp://127.0.0.1:0",
                    "--bind-transcripts=tcp://127.0.0.1:0",
                ]
                proxy = subprocess.Popen(  # noqa: ASYNC220 (starts in milliseconds)
                    command,
                    cwd=REPO,
                    env={**os.environ, "RTAP_LOG_LEVEL": "WARNING"},
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                )
                assert proxy.stdout is not None
                ready = await trio.to_thread.run_sync(proxy.stdout.readline)
                stderr.seek(0)
                assert ready, stderr.read()[-2000:]
                endpoints = json.loads(ready)
                # The agent knows the proxy alone: one SUB, both streams.
                agent.connect(endpoints["events"]["bound"])
                agent.connect(endpoints["transcripts"]["bound"])
                with trio.fail_after(10):  # its subscription reaches both instances
                    while not all(_subscribed(service) for service in services):
                        await trio.sleep(0.05)
                gate.set()

                def transcripts() -> list[TranscriptMessage]:
                    return [m for _, m in received if isinstance(m, TranscriptMessage)]

                await receive_until(lambda: len(transcripts()) >= 2, 60)
                beating = {service.service_id for service in services}
                await receive_until(
                    lambda: (
                        beating <= {m.session_id for t, m in received if t.startswith("heartbeat.")}
                    ),
                    10,
                )

                # Each transcript names its own instance's session; the
                # service-level events name each instance by its service id.
                by_session = {t.session_id: t for t in transcripts()}
                assert len(by_session) == 2
                for service, (_, word) in zip(services, SAID, strict=True):
                    transcript = by_session[service.local_session.id]
                    assert word in transcript.text.lower(), transcript.text
                    assert f"transcript.{service.local_session.id}" in {t for t, _ in received}
                assert len({service.service_id for service in services}) == 2

                # Catch-up stays per instance: each instance's own answers with
                # its service id and its own transcript, the one the proxy carried.
                for service, bound in zip(services, ports, strict=True):
                    reply = await trio.to_thread.run_sync(ask_catchup, bound.zmq_catchup)
                    assert reply.service_id == service.service_id
                    assert [t.utterance_id for t in reply.transcripts] == [
                        by_session[service.local_session.id].utterance_id
                    ]

                # SIGTERM: the proxies' own TERMINATE, exit 0, at once.
                proxy.send_signal(signal.SIGTERM)
                code = await trio.to_thread.run_sync(proxy.wait, 10)
                stderr.seek(0)
                assert code == 0, stderr.read()[-2000:]
                hold.set()
                for service in services:
                    service.stop()
        finally:
            if proxy is not None and proxy.poll() is None:
                proxy.kill()
                proxy.wait()
            context.destroy(linger=0)


def test_what_the_proxy_cannot_serve_is_one_line_and_an_exit_code() -> None:
    transcripts = "--transcripts=tcp://127.0.0.1:6563"
    # An endpoint libzmq would take and retry for ever: refused, exit 2.
    bad = rtap("proxy", "--events=tcp://127.0.0.1:99999", transcripts)
    assert_one_line_error(bad, 2, "--events", "tcp://127.0.0.1:99999")
    # Instance 0 on this host publishes where the proxy binds: it would loop.
    looped = rtap("proxy", "--instance", "0")
    assert_one_line_error(looped, 2, "--events", "forward its own messages")
    # A taken port: exit 5, as the service's own.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = rtap(
            "proxy",
            "--instance=1",
            "--bind-events=tcp://127.0.0.1:0",
            f"--bind-transcripts=tcp://127.0.0.1:{port}",
        )
    assert_one_line_error(busy, 5, "zmq proxy transcripts", str(port))
