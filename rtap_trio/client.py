"""A ``/v1/audio`` client: stream audio into a running service, collect what comes back.

What the bench and the tests use to be the many clients of one service, and a
reference for writing one (docs/protocol.md has the few-line version)::

    async with open_audio_session(port, sample_rate=16000) as session:
        await session.send_audio(samples)          # float32 mono, any length
        await session.stop()
        for message in session.transcripts: print(message.text)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from .audio.framing import pace
from .audio.pcm import float_to_pcm
from .items import Float32
from .transport.schemas import (
    EventMessage,
    EventType,
    LevelMessage,
    TranscriptMessage,
    WatcherNotice,
    parse_message,
)

__all__ = ["AudioSessionClient", "encode_audio", "open_audio_session"]


def encode_audio(audio: Float32, encoding: str, channels: int) -> bytes:
    """Float32 mono in [-1, 1] as the wire format announced (stereo: both channels alike)."""
    if channels == 2:
        audio = np.repeat(audio[:, None], 2, axis=1).reshape(-1)
    if encoding == "pcm_f32le":
        return audio.astype("<f4").tobytes()
    return float_to_pcm(audio).astype("<i2", copy=False).tobytes()


@dataclass
class AudioSessionClient:
    """One connected ``/v1/audio`` session; messages arrive in the background."""

    ws: WebSocketConnection
    sample_rate: int
    encoding: str
    channels: int
    messages: list[EventMessage | TranscriptMessage] = field(default_factory=list)
    session_id: str | None = None
    started: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)
    #: set when the server closed: (code, reason)
    closed: tuple[int, str | None] | None = None
    gone: trio.Event = field(default_factory=trio.Event)
    #: when each transcript arrived (trio's clock), by utterance id
    arrived_at: dict[str, float] = field(default_factory=dict)
    #: when send_audio began (trio's clock)
    stream_started: float = 0.0

    @property
    def transcripts(self) -> list[TranscriptMessage]:
        return [m for m in self.messages if isinstance(m, TranscriptMessage)]

    @property
    def events(self) -> list[EventMessage]:
        return [m for m in self.messages if isinstance(m, EventMessage)]

    async def send_audio(
        self, audio: Float32, *, chunk_s: float = 0.1, realtime: bool = False
    ) -> None:
        """Send ``audio`` (float32 mono at the announced rate) in chunks, paced or not.

        Paced like a microphone, each chunk goes out once all of it "has been
        heard": offset ``x`` of the audio is sent by ``stream_started + x``
        (trio's clock), which is when the speaker said it.
        """
        size = max(1, int(self.sample_rate * chunk_s))
        chunks = [audio[i : i + size] for i in range(0, audio.size, size)]
        self.stream_started = trio.current_time()
        if realtime:
            await trio.sleep(chunk_s)
            async for chunk in pace(chunks, chunk_s):
                await self.ws.send_message(encode_audio(chunk, self.encoding, self.channels))
        else:
            for chunk in chunks:
                await self.ws.send_message(encode_audio(chunk, self.encoding, self.channels))

    async def stop(self, limit_s: float = 60.0) -> None:
        """Ask for the end; wait for ``session_ended`` (or the close) within ``limit_s``."""
        await self.ws.send_message(json.dumps({"type": "stop"}))
        with trio.fail_after(limit_s):
            await self.ended.wait()

    async def _receive(self) -> None:
        try:
            while True:
                message = parse_message(await self.ws.get_message())
                if isinstance(message, LevelMessage | WatcherNotice):  # not for audio sessions
                    continue
                self.messages.append(message)
                if isinstance(message, TranscriptMessage) and message.utterance_id:
                    self.arrived_at[message.utterance_id] = trio.current_time()
                if isinstance(message, EventMessage):
                    if message.type is EventType.SESSION_STARTED:
                        self.session_id = message.session_id
                        self.started.set()
                    elif message.type in (EventType.SESSION_ENDED, EventType.SESSION_FAILED):
                        self.ended.set()
        except ConnectionClosed as exc:
            if exc.reason is not None:
                self.closed = (exc.reason.code, exc.reason.reason)
        finally:
            self.started.set()
            self.ended.set()
            self.gone.set()

    async def wait_closed(self, limit_s: float = 30.0) -> tuple[int, str | None]:
        """Until the server has closed the connection: its code and reason."""
        with trio.fail_after(limit_s):
            await self.gone.wait()
        return self.closed or (1006, "no close frame")


@asynccontextmanager
async def open_audio_session(
    port: int,
    *,
    host: str = "127.0.0.1",
    sample_rate: int = 16_000,
    encoding: str = "pcm_s16le",
    channels: int = 1,
    token: str | None = None,
    **options: Any,
) -> AsyncIterator[AudioSessionClient]:
    """Connect (with ``token`` when the service has one), send the start message
    (``options``: wake_word, keywords, language), and yield once the server has
    said ``session_started`` (or closed)."""
    start = {
        "type": "start",
        "sample_rate": sample_rate,
        "encoding": encoding,
        "channels": channels,
        **options,
    }
    # A header, not the query: it stays out of proxies' access logs.
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else None
    async with open_websocket_url(f"ws://{host}:{port}/v1/audio", extra_headers=headers) as ws:
        client = AudioSessionClient(ws, sample_rate, encoding, channels)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._receive)
            await ws.send_message(json.dumps(start))
            await client.started.wait()
            yield client
            nursery.cancel_scope.cancel()
