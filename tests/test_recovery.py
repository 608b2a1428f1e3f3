"""The design's recovery strategies, each proven by injecting its fault (issue 12, part 2).

Faults come in through settings (a GPU that is not there, a port still taken)
or through the service's fault hook, awaited before each start of a
supervised task (a stalled stage, a state machine driven wrong, a server that
keeps crashing); nothing is monkeypatched. For each, the service keeps
running (or stops gracefully, for a restart), the counters move, and the
transcripts before and after arrive exactly once.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from rtap_trio.audio.file import DemoSource
from rtap_trio.devtools.textmetrics import word_error_rate
from rtap_trio.errors import PortInUseError, RestartsExhaustedError, find_error
from rtap_trio.session_context import SessionContext
from rtap_trio.session_state import PipelineState
from rtap_trio.supervisor import Saboteur
from rtap_trio.transport.schemas import EventMessage, EventType, TranscriptMessage

from .support import ZmqCollector, in_process_service, run_service, service_settings

pytestmark = pytest.mark.timeout(180)

DEMO_TEXT = "What is the weather in Berlin today?"


def demo(settings: Any, *, realtime: bool = False, loop: bool = False) -> DemoSource:
    return DemoSource(
        frame_samples=settings.audio.frame_samples, realtime=realtime, loop=loop, loop_gap_ms=500
    )


def events_of(run: Any, kind: EventType) -> list[EventMessage]:
    return [m for m in run.events if m.type is kind]


def exactly_once(transcripts: list[TranscriptMessage]) -> None:
    assert [m.seq for m in transcripts] == list(range(len(transcripts)))
    for transcript in transcripts:
        assert word_error_rate(DEMO_TEXT, transcript.text) <= 0.2, transcript.text


@pytest.mark.slow
async def test_cuda_asked_on_a_cpu_build_falls_back_to_the_cpu_and_says_so() -> None:
    settings = service_settings("pc2", **{"stt.whispercpp.device": "cuda"})
    run = await run_service(settings, demo(settings), expected_transcripts=1)
    # service_started (before any subscriber connects) says so too; and the log.
    assert "rtap_stt_device_fallback 1.0" in run.metrics
    exactly_once(run.transcripts)


async def test_a_port_taken_for_a_while_is_retried_until_it_is_free() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    settings = service_settings(
        "pc2",
        **{
            "audio.source": "none",
            "output.websocket_port": port,
            "supervisor.bind_retry_s": 10,
        },
    )
    service = in_process_service(settings)
    async with trio.open_nursery() as nursery:

        async def release_later() -> None:
            await trio.sleep(1.0)  # the previous process lets go of the port
            holder.close()

        nursery.start_soon(release_later)
        ports = await nursery.start(service.run)
        assert ports.websocket == port
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            assert ws.is_client
        service.stop()
    # Without the retry, the same start fails at once with the port named.
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the TIME_WAIT
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        impatient = service_settings(
            "pc2",
            **{"audio.source": "none", "output.websocket_port": port, "supervisor.bind_retry_s": 0},
        )
        with pytest.raises(BaseException) as refused:
            async with trio.open_nursery() as nursery:
                await nursery.start(in_process_service(impatient).run)
        assert str(port) in str(find_error(refused.value, PortInUseError))
    finally:
        holder.close()


@pytest.mark.slow
async def test_a_stalled_front_end_drops_the_oldest_frames_counted_and_evented() -> None:
    settings = service_settings(
        "pc2", **{"audio.realtime": True, "audio.loop_demo": True, "audio.capture_queue_frames": 2}
    )
    stalled = False

    async def stall_the_front_end_once(ctx: SessionContext | None, stage: str) -> None:
        nonlocal stalled
        if ctx is not None and stage == "frontend" and not stalled:
            stalled = True
            await trio.sleep(1.0)  # the live microphone goes on meanwhile

    run = await run_service(
        settings,
        demo(settings, realtime=True, loop=True),
        expected_transcripts=1,
        limit_s=60,
        fault_hook=stall_the_front_end_once,
    )
    dropped = events_of(run, EventType.FRAMES_DROPPED)
    assert dropped and dropped[0].data["dropped_total"] >= 1
    assert 'rtap_frames_dropped_total{edge="capture"}' in run.metrics
    exactly_once(run.transcripts)  # and the service went on


@pytest.mark.slow
async def test_state_corruption_resets_to_idle_and_the_transcripts_go_on() -> None:
    settings = service_settings("pc2")

    async def corrupt_the_state(ctx: SessionContext | None, stage: str) -> Saboteur | None:
        if ctx is None or stage != "language":
            return None
        state = ctx.state

        async def once_listening() -> None:
            while state.state is not PipelineState.LISTENING:  # the wake word was heard
                await trio.sleep(0.005)
            state.emit_started()  # emitting, with nothing in flight: LISTENING -> EMIT
            await trio.sleep_forever()

        return once_listening

    run = await run_service(
        settings, demo(settings), expected_transcripts=1, fault_hook=corrupt_the_state
    )
    (reset,) = events_of(run, EventType.STATE_RESET)
    assert (reset.data["from"], reset.data["attempted"]) == ("LISTENING", "EMIT")
    assert "rtap_state_resets_total 1.0" in run.metrics
    # After the reset the machine walks its cycle again.
    changes = [(e.data["from"], e.data["to"]) for e in events_of(run, EventType.STATE_CHANGED)]
    assert ("EMIT", "IDLE") in changes and changes[-1][1] == PipelineState.SHUTDOWN
    exactly_once(run.transcripts)


@pytest.mark.slow
async def test_a_server_that_keeps_crashing_stops_the_service_gracefully_for_a_restart() -> None:
    settings = service_settings(
        "pc2", **{"supervisor.max_restarts": 2, "supervisor.backoff_initial_s": 0.01}
    )
    transcript_out = trio.Event()

    async def crash_the_websocket_server(ctx: SessionContext | None, task: str) -> Saboteur | None:
        if ctx is None and task == "websocket":

            async def crash_after_the_transcript() -> None:
                await transcript_out.wait()
                raise RuntimeError("injected fault")

            return crash_after_the_transcript
        return None

    # A microphone-like source that goes on: the service stops because of the fault alone.
    source = demo(settings, realtime=True, loop=True)
    service = in_process_service(settings, source=source, fault_hook=crash_the_websocket_server)
    ended: list[BaseException] = []

    async def run_service_to_its_end(*, task_status: trio.TaskStatus[Any]) -> None:
        try:
            await service.run(task_status=task_status)
        except BaseException as exc:
            ended.append(exc)

    async with trio.open_nursery() as nursery:
        ports = await nursery.start(run_service_to_its_end)
        assert ports.zmq_transcripts and ports.zmq_events
        transcripts = ZmqCollector(ports.zmq_transcripts)
        events = ZmqCollector(ports.zmq_events)
        try:
            await transcripts.wait_connected()
            await events.wait_connected()
            await transcripts.collect_until(lambda m: m.kind == "transcript", 60)
            transcript_out.set()
            await events.collect_until(
                lambda m: isinstance(m, EventMessage) and m.type is EventType.SERVICE_STOPPING,
                30,
            )
        finally:
            transcripts.close()
            events.close()
    (raised,) = ended
    # After the drain the service ends with the error (exit code 6 from the CLI),
    # for systemd or podman to restart it.
    failure = find_error(raised, RestartsExhaustedError)
    assert failure is not None and failure.task == "websocket"
    kinds = [m.type for _, m in events.messages if isinstance(m, EventMessage)]
    assert kinds.index(EventType.SERVICE_FAILING) < kinds.index(EventType.SERVICE_STOPPING)
    # The local session drained before the stop: its end was said.
    assert EventType.SESSION_ENDED in kinds
    exactly_once([m for _, m in transcripts.messages if isinstance(m, TranscriptMessage)])
