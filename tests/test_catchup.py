"""ZeroMQ for agents: the heartbeat, catch-up by sequence number, and the shipped
example subscriber run as an agent would run it. Real service, real speech,
real ZeroMQ sockets; the JSON Schemas in docs/ are the models' own."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from rtap_trio.audio.file import FileSource, load_audio
from rtap_trio.client import open_audio_session
from rtap_trio.protocol import json_schemas
from rtap_trio.transport.schemas import EventMessage

from .support import (
    REPO,
    GatedSource,
    ZmqCollector,
    ask_catchup,
    in_process_service,
    service_settings,
)

pytestmark = pytest.mark.timeout(180)


async def test_an_agent_fills_its_gap_by_sequence_number_and_hears_the_heartbeat(
    speech: dict[str, Any],
) -> None:
    fixtures = Path(speech["dir"])
    settings = service_settings(
        "pc2", **{"wakeword.enabled": False, "output.heartbeat_interval_s": 0.2}
    )
    gate, hold = trio.Event(), trio.Event()
    file = FileSource(
        fixtures / "two_utterances.wav",
        frame_samples=settings.audio.frame_samples,
        realtime=False,
        trailing_silence_ms=1000,
    )
    source = GatedSource(file, gate, hold)
    service = in_process_service(settings, source=source)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(service.run)
        assert ports.zmq_catchup and ports.zmq_transcripts and ports.zmq_events
        events = ZmqCollector(ports.zmq_events)
        transcripts = ZmqCollector(ports.zmq_transcripts)
        try:
            await events.wait_connected()
            await transcripts.wait_connected()
            gate.set()
            await transcripts.collect_until(lambda _: len(transcripts.messages) >= 2, 90)
            said = [m for _, m in transcripts.messages]

            # Catch-up answers from the kept transcripts, by seq.
            everything = await trio.to_thread.run_sync(ask_catchup, ports.zmq_catchup, b"{}")
            assert [t.seq for t in everything.transcripts] == [0, 1]
            assert everything.transcripts == said and everything.lost == 0
            assert everything.service_id == service.service_id
            ask = partial(trio.to_thread.run_sync, ask_catchup, ports.zmq_catchup)
            after = await ask(b'{"after_seq": 0}')
            assert [t.text for t in after.transcripts] == [said[1].text]
            assert after.next_seq == 2
            bad = await ask(b'{"after_seq": "x"}')
            assert bad.error and "after_seq" in bad.error

            # The example subscriber, started late, prints the two it missed
            # (catch-up), then the next one live: each exactly once, in order.
            agent = subprocess.Popen(  # noqa: ASYNC220 (starts in milliseconds)
                [
                    sys.executable,
                    str(REPO / "docs" / "examples" / "subscriber.py"),
                    f"--transcripts-port={ports.zmq_transcripts}",
                    f"--catchup-port={ports.zmq_catchup}",
                    "--count=3",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            await trio.sleep(2)  # it has subscribed and caught up
            audio = load_audio(fixtures / "en_no_wake.wav", 16_000).astype(np.float32) / 32768
            assert ports.websocket
            async with open_audio_session(ports.websocket, wake_word=False) as client:
                await client.send_audio(audio)
                await client.stop()
            out, err = await trio.to_thread.run_sync(lambda: agent.communicate(timeout=60))
            assert agent.returncode == 0, err
            lines = [json.loads(line) for line in out.splitlines()]
            assert [line["seq"] for line in lines] == [0, 1, 2]
            assert [line["text"] for line in lines[:2]] == [m.text for m in said]
            assert lines[2]["text"] == client.transcripts[0].text

            # Heartbeats go on while nobody speaks, and say where the streams stand.
            await events.collect_until(
                lambda m: m.type == "heartbeat" and m.data["next_seq"]["transcripts"] == 3, 10
            )
        finally:
            events.close()
            transcripts.close()
        hold.set()
        service.stop()
    beats = [m for _, m in events.messages if isinstance(m, EventMessage) and m.type == "heartbeat"]
    assert all(b.session_id == service.service_id for b in beats)
    assert [b.data["uptime_s"] for b in beats] == sorted(b.data["uptime_s"] for b in beats)
    assert len(beats) >= 3


def test_the_published_json_schemas_are_the_models_own() -> None:
    folder = REPO / "docs" / "schemas"
    generated = json_schemas()
    committed = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    assert committed == generated, "run: python -m rtap_trio schemas --out docs/schemas"
    protocol = (REPO / "docs" / "protocol.md").read_text()
    for stem in generated:
        assert f"schemas/{stem}.json" in protocol, stem
