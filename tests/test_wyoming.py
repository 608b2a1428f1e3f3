"""The Wyoming server, driven by the ``wyoming`` package's own async TCP client.

The service is the real command (``--source none``, pc2's tiny.en, Wyoming on);
the client is what Home Assistant's Wyoming integration uses. It is asyncio
code, so these tests are plain functions that run it with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.vad import VoiceStarted, VoiceStopped
from wyoming.wake import Detect, Detection, NotDetected

from rtap_trio.devtools.textmetrics import word_error_rate

from .support import free_port, service_process

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def wyoming_port() -> Iterator[int]:
    port = free_port()
    env = {
        "RTAP_WYOMING__ENABLED": "true",
        "RTAP_WYOMING__PORT": str(port),
        "RTAP_WYOMING__MAX_PAYLOAD_BYTES": "65536",
    }
    with service_process("--source", "none", "--profile", "pc2", env=env):
        yield port


def pcm16(path: Path) -> tuple[bytes, int, int]:
    audio, rate = soundfile.read(path, dtype="int16", always_2d=True)
    return audio.tobytes(), rate, audio.shape[1]


async def stream(client: AsyncTcpClient, path: Path, chunk_samples: int = 1024) -> None:
    """audio-start, chunks of 1024 samples (as Home Assistant sends), audio-stop."""
    audio, rate, channels = pcm16(path)
    step = chunk_samples * 2 * channels
    await client.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
    for start in range(0, len(audio), step):
        chunk = AudioChunk(rate=rate, width=2, channels=channels, audio=audio[start : start + step])
        await client.write_event(chunk.event())
    await client.write_event(AudioStop().event())


async def events_until(client: AsyncTcpClient, *types: str) -> list[Event]:
    received: list[Event] = []
    while True:
        event = await client.read_event()
        assert event is not None, f"closed before {types}: {received}"
        received.append(event)
        if event.type in types:
            return received


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 120))


def test_describe_lists_the_asr_model_and_the_wake_words(wyoming_port: int) -> None:
    async def main() -> Info:
        async with AsyncTcpClient("127.0.0.1", wyoming_port) as client:
            await client.write_event(Describe().event())
            event = await client.read_event()
            assert event is not None and Info.is_type(event.type)
            return Info.from_event(event)

    info = run(main())
    (asr,) = info.asr
    assert [(m.name, m.languages) for m in asr.models] == [("tiny.en", ["en"])]
    assert asr.supports_transcript_streaming  # pc2 makes partial transcripts
    assert asr.models[0].attribution.name == "OpenAI" and asr.models[0].installed
    wake_words = {model.name for program in info.wake for model in program.models}
    assert {"computer", "jarvis", "porcupine"} <= wake_words


@pytest.mark.parametrize(
    "name", ["en_no_wake.wav", "jarvis_lights_44k_stereo.wav"], ids=["16k-mono", "44k-stereo"]
)
def test_transcribe_gives_the_words_with_voice_events(
    wyoming_port: int, speech: dict[str, Any], name: str
) -> None:
    async def main() -> list[Event]:
        async with AsyncTcpClient("127.0.0.1", wyoming_port) as client:
            await client.write_event(Transcribe(language="en").event())
            await stream(client, Path(speech["dir"]) / name)
            return await events_until(client, "transcript")

    events = run(main())
    types = [event.type for event in events]
    assert types.index("voice-started") < types.index("voice-stopped") < types.index("transcript")
    if "transcript-chunk" in types:  # partials streamed (Wyoming 1.7): started first
        assert types.index("transcript-start") < types.index("transcript-chunk")
    started = VoiceStarted.from_event(events[types.index("voice-started")])
    stopped = VoiceStopped.from_event(events[types.index("voice-stopped")])
    assert started.timestamp is not None and stopped.timestamp is not None
    assert 0 <= started.timestamp < stopped.timestamp
    transcript = Transcript.from_event(events[-1])
    expected = " ".join(u["text"] for u in speech["by_file"][name]["utterances"])
    # The wake word is spoken too in the jarvis fixture: Wyoming ASR hears everything.
    said = transcript.text.replace("Jarovis,", "").replace("Jarvis,", "")
    assert word_error_rate(expected, said) <= 0.25, transcript.text
    assert transcript.language == "en"


def test_detect_finds_the_wake_word_or_says_not_detected(
    wyoming_port: int, speech: dict[str, Any]
) -> None:
    async def detect(name: str) -> list[Event]:
        async with AsyncTcpClient("127.0.0.1", wyoming_port) as client:
            await client.write_event(Detect(names=["computer"]).event())
            await stream(client, Path(speech["dir"]) / name)
            return await events_until(client, "detection", "not-detected")

    hit = run(detect("computer_garage.wav"))[-1]
    assert Detection.is_type(hit.type)
    detection = Detection.from_event(hit)
    entry = speech["by_file"]["computer_garage.wav"]["utterances"][0]
    assert detection.name == "computer" and detection.timestamp is not None
    # Porcupine says so within half a second of the keyword's end.
    assert 0 < detection.timestamp / 1000 - entry["wake_end_s"] < 0.5
    miss = run(detect("en_no_wake.wav"))[-1]
    assert NotDetected.is_type(miss.type)


def test_bad_input_gets_an_error_and_the_server_keeps_serving(wyoming_port: int) -> None:
    async def main() -> tuple[Event | None, Event | None, Event | None, Event | None]:
        reader, writer = await asyncio.open_connection("127.0.0.1", wyoming_port)
        writer.write(b"this is not JSON\n")  # a malformed header line: an error, read on
        writer.write(json.dumps({"type": "describe"}).encode() + b"\n")
        await writer.drain()
        client = AsyncTcpClient("127.0.0.1", wyoming_port)
        client._reader, client._writer = reader, writer  # the client's own event reader
        malformed, info = await client.read_event(), await client.read_event()
        # A payload over the limit: an error, then the connection is closed.
        header = {"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}}
        header["payload_length"] = 10_000_000
        writer.write(json.dumps(header).encode() + b"\n")
        await writer.drain()
        oversized, after = await client.read_event(), await client.read_event()
        writer.close()
        return malformed, info, oversized, after

    malformed, info, oversized, after = run(main())
    assert malformed is not None and Error.is_type(malformed.type)
    assert "malformed header" in Error.from_event(malformed).text
    assert info is not None and Info.is_type(info.type)
    assert oversized is not None and Error.from_event(oversized).code == "too_large"
    assert after is None  # closed
    # A new connection is served as before.
    test_describe_lists_the_asr_model_and_the_wake_words(wyoming_port)
