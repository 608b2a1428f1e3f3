"""Many sessions in one service: ``/v1/audio`` clients beside the local source.

Real engines (pc2's tiny.en), real sockets, generated speech streamed by real
WebSocket clients at different rates and formats.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from rtap_trio.app import BoundPorts, Service
from rtap_trio.audio.base import AudioSource
from rtap_trio.audio.file import DemoSource, load_audio
from rtap_trio.client import AudioSessionClient, open_audio_session
from rtap_trio.devtools.textmetrics import word_error_rate
from rtap_trio.health import count_trio_tasks
from rtap_trio.items import Float32
from rtap_trio.session_context import SessionContext
from rtap_trio.transport.schemas import EventType

from .forkserver import rtap_command
from .support import ZmqCollector, http_get, in_process_service, service_settings

pytestmark = pytest.mark.timeout(240)


def fixture(speech: dict[str, Any], name: str, rate: int = 16_000) -> Float32:
    """A generated fixture as float32 mono at ``rate``."""
    audio = load_audio(Path(speech["dir"]) / name, 16_000).astype(np.float32) / 32768
    if rate != 16_000:
        audio = soxr.resample(audio, 16_000, rate).astype(np.float32)
    return audio


def text_of(speech: dict[str, Any], name: str) -> str:
    return " ".join(u["text"] for u in speech["by_file"][name]["utterances"])


@asynccontextmanager
async def running(
    settings_overrides: dict[str, Any] | None = None,
    source: AudioSource | None = None,
    **service_args: Any,
) -> AsyncIterator[tuple[Service, BoundPorts]]:
    overrides = {"audio.source": "none", **(settings_overrides or {})}
    settings = service_settings("pc2", **overrides)
    service = in_process_service(settings, source=source, **service_args)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(service.run)
        yield service, ports
        service.stop()


async def talk(
    port: int, audio: Float32, into: dict[str, AudioSessionClient], key: str, **start: Any
) -> None:
    async with open_audio_session(port, **start) as client:
        into[key] = client
        await client.send_audio(audio)
        await client.stop()
        await client.wait_closed()


@pytest.mark.slow
async def test_three_clients_at_different_rates_get_their_own_words_beside_the_local_demo(
    speech: dict[str, Any],
) -> None:
    plan = {
        # (fixture, rate, start message options)
        "garage": ("computer_garage.wav", 22_050, {"channels": 2}),
        "lights": (
            "jarvis_lights.wav",
            48_000,
            {"encoding": "pcm_f32le", "channels": 2, "keywords": ["jarvis"]},
        ),
        "door": ("en_no_wake.wav", 11_025, {"wake_word": False}),
    }
    settings = service_settings("pc2")
    demo = DemoSource(frame_samples=settings.audio.frame_samples, loop=True, loop_gap_ms=500)
    clients: dict[str, AudioSessionClient] = {}
    async with running({"audio.source": "demo", "audio.loop_demo": True}, source=demo) as (
        service,
        ports,
    ):
        assert ports.zmq_transcripts is not None
        transcripts = ZmqCollector(ports.zmq_transcripts)
        try:
            await transcripts.wait_connected()
            async with trio.open_nursery() as nursery:
                for key, (name, rate, options) in plan.items():
                    nursery.start_soon(
                        lambda k=key, n=name, r=rate, o=options: talk(
                            ports.websocket, fixture(speech, n, r), clients, k, sample_rate=r, **o
                        )
                    )
            local = service.local_session
            assert local is not None
            # The local demo went on beside them: its transcript reaches ZeroMQ.
            await transcripts.collect_until(
                lambda m: m.session_id == local.id and m.kind == "transcript", 120
            )
        finally:
            transcripts.close()

    ids = {key: client.session_id for key, client in clients.items()}
    assert len(set(ids.values()) | {local.id}) == 4, ids
    for key, (name, _, _) in plan.items():
        client = clients[key]
        assert {m.session_id for m in client.messages} == {ids[key]}, "another session's message"
        said = " ".join(m.text for m in client.transcripts)
        wer = word_error_rate(text_of(speech, name), said)
        print(f"{key}: {said!r} WER {wer:.2f}")
        assert wer <= 0.25, (key, said)
        types = [m.type for m in client.events]
        assert types[0] is EventType.SESSION_STARTED and types[-1] is EventType.SESSION_ENDED
        assert client.events[-1].data["reason"] == "stop"
        assert client.closed == (1000, "stop"), client.closed
        # session_seq counts this session's messages per stream, with no gap.
        for kind in ("event", "transcript"):
            seqs = [m.session_seq for m in client.messages if m.kind == kind]
            assert seqs == list(range(len(seqs)))
    assert clients["lights"].transcripts[0].wake_word == "jarvis"
    assert clients["garage"].transcripts[0].wake_word == "computer"
    assert clients["door"].transcripts[0].wake_word is None


async def test_a_session_whose_stage_keeps_crashing_ends_alone(speech: dict[str, Any]) -> None:
    first: list[str] = []

    async def crash_all_but_the_first_session(ctx: SessionContext | None, stage: str) -> None:
        if ctx is None:  # the service's own tasks
            return
        first[:] = first or [ctx.session_id]
        if ctx.session_id != first[0] and stage == "frontend":
            raise RuntimeError("injected fault")

    overrides = {"supervisor.backoff_initial_s": 0.01, "supervisor.max_restarts": 2}
    async with running(overrides, fault_hook=crash_all_but_the_first_session) as (_, ports):
        async with open_audio_session(ports.websocket, wake_word=False) as healthy:
            async with open_audio_session(ports.websocket, wake_word=False) as failing:
                code, _ = await failing.wait_closed()
            errors = [m for m in failing.events if m.type is EventType.STAGE_ERROR]
            assert len(errors) == 3 and errors[0].data["stage"] == "frontend"
            assert failing.events[-1].type is EventType.SESSION_FAILED
            assert code == 1011
            # The other session and the service go on.
            await healthy.send_audio(fixture(speech, "en_no_wake.wav"))
            await healthy.stop()
        status, body = await http_get(ports.telemetry, "/health")
        _, metrics = await http_get(ports.telemetry, "/metrics")
    said = " ".join(m.text for m in healthy.transcripts)
    assert word_error_rate(text_of(speech, "en_no_wake.wav"), said) <= 0.25, said
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert 'rtap_sessions_total{kind="websocket",outcome="failed"} 1.0' in metrics
    assert 'rtap_sessions_total{kind="websocket",outcome="ended"} 1.0' in metrics


async def test_sessions_max_refuses_with_1013_and_frees_the_slot() -> None:
    async with running({"sessions.max": 1}) as (_, ports):
        async with open_audio_session(ports.websocket) as first:
            assert first.session_id is not None
            async with open_audio_session(ports.websocket) as second:
                assert (await second.wait_closed())[0] == 1013
            await first.stop()
        async with open_audio_session(ports.websocket) as third:  # the slot is free again
            assert third.session_id is not None
            await third.stop()


async def test_a_silent_client_is_closed_after_the_idle_timeout() -> None:
    async with (
        running({"sessions.idle_timeout_s": 0.5}) as (_, ports),
        open_audio_session(ports.websocket) as client,
    ):
        code, reason = await client.wait_closed()
    assert client.events[-1].type is EventType.SESSION_ENDED
    assert client.events[-1].data["reason"] == "idle_timeout"
    assert (code, reason) == (1000, "idle for 0.5 s")


def start_message(**fields: Any) -> str:
    base = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1}
    return json.dumps({**base, **fields})


@pytest.mark.parametrize(
    ("first", "code", "needle"),
    [
        (b"\x00\x01", 1003, "text start message"),
        ("not json", 1008, "not JSON"),
        (start_message(encoding="mp3"), 1008, "encoding"),
        (start_message(sample_rate=4000), 1008, "sample_rate"),
        (start_message(x=1), 1008, "unknown field"),
        (start_message(keywords=["hey_toaster"]), 1008, "hey_toaster"),
        (start_message(language="de"), 1008, "English-only"),
    ],
    ids=["binary", "not-json", "encoding", "rate", "unknown-field", "keyword", "language"],
)
async def test_a_bad_start_message_is_closed_with_a_reason(
    first: str | bytes, code: int, needle: str
) -> None:
    async with running() as (service, ports):
        async with open_websocket_url(f"ws://127.0.0.1:{ports.websocket}/v1/audio") as ws:
            await ws.send_message(first)
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
        assert len(service.sessions or []) == 0
    assert closed.value.reason.code == code, closed.value.reason
    assert needle in (closed.value.reason.reason or ""), closed.value.reason


async def test_audio_that_does_not_fit_the_format_is_closed_with_1003() -> None:
    async with (
        running() as (_, ports),
        open_audio_session(ports.websocket, channels=2) as client,
    ):
        await client.ws.send_message(b"\x00" * 6)  # 1.5 stereo s16 frames
        code, reason = await client.wait_closed()
    assert code == 1003 and "not whole samples" in (reason or "")


async def test_a_client_that_leaves_mid_utterance_leaves_nothing_running(
    speech: dict[str, Any],
) -> None:
    audio = fixture(speech, "en_no_wake.wav")
    async with running() as (service, ports):
        await trio.sleep(0.2)
        before = count_trio_tasks()
        manager, backend = service.sessions, service._engines.stt  # type: ignore[union-attr]
        async with open_audio_session(ports.websocket, wake_word=False) as client:
            # Mid-utterance: the speech has started and nothing has ended it.
            await client.send_audio(audio[: audio.size // 2])
            with trio.fail_after(30):
                while not any(m.type is EventType.SPEECH_START for m in client.events):
                    await trio.sleep(0.01)
            await client.ws.aclose()
        with trio.fail_after(10):
            while len(manager) or backend.statistics().busy or count_trio_tasks() > before:
                await trio.sleep(0.02)
    assert client.transcripts == []


@pytest.mark.slow
def test_source_none_and_four_clients_at_real_time_pace_each_get_their_own_words(
    speech: dict[str, Any],
) -> None:
    """The issue's "done when", as a user runs it: the command, then four clients."""
    import os
    import signal
    import subprocess

    from rtap_trio.bench.common import ServicePorts

    from .support import REPO

    plan = {
        "garage": ("computer_garage.wav", {}),
        "lights": ("jarvis_lights.wav", {"keywords": ["jarvis"]}),
        "door": ("en_no_wake.wav", {"wake_word": False}),
        "calendar": ("two_utterances.wav", {}),
    }
    ports = ServicePorts.free()
    process = subprocess.Popen(
        [*rtap_command(), "--source", "none", "--profile", "pc2"],
        cwd=REPO,
        env={**os.environ, **ports.env()},
        stderr=subprocess.PIPE,
        text=True,
    )
    clients: dict[str, AudioSessionClient] = {}

    async def talk_in_real_time(key: str, name: str, options: dict[str, Any]) -> None:
        async with open_audio_session(ports.websocket, **options) as client:
            clients[key] = client
            await client.send_audio(fixture(speech, name), chunk_s=0.02, realtime=True)
            await client.stop()
            await client.wait_closed()

    async def main() -> dict[str, Any]:
        with trio.fail_after(120):
            while True:  # until the service is up
                try:
                    status, body = await http_get(ports.telemetry, "/health")
                except OSError:
                    status = 0
                if status == 200:
                    break
                assert process.poll() is None
                await trio.sleep(0.2)
        assert json.loads(body)["source"] == "none"
        async with trio.open_nursery() as nursery:
            for key, (name, options) in plan.items():
                nursery.start_soon(talk_in_real_time, key, name, options)
        return dict(json.loads((await http_get(ports.telemetry, "/health"))[1]))

    try:
        health = trio.run(main)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    assert health["sessions"]["active"] == 0
    assert len({client.session_id for client in clients.values()}) == 4
    for key, (name, _) in plan.items():
        client = clients[key]
        assert {m.session_id for m in client.messages} == {client.session_id}
        said = " ".join(m.text for m in client.transcripts)
        wer = word_error_rate(text_of(speech, name), said)
        print(f"{key}: {said!r} WER {wer:.2f}")
        assert wer <= 0.25, (key, said)
