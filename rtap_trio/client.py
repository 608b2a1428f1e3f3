"""A ``/v1/audio`` client: stream audio into a running service, collect what comes back.

What the bench and the tests use to be the many clients of one service, and a
reference for writing one (docs/protocol.md has the few-line version)::

    async with open_audio_session(port, sample_rate=16000) as session:
        await session.send_audio(samples)          # float32 mono, any length
        await session.stop()
        for message in session.transcripts: print(message.text)

and, for a client that must go on when its instance goes away (a balancer in
front of several, ``ops/haproxy``), :func:`stream_audio`: one recording
through as many sessions as it takes, nothing said lost or answered twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from .audio.framing import pace
from .audio.pcm import float_to_pcm
from .errors import only_errors
from .items import Float32
from .transport.schemas import (
    EventMessage,
    EventType,
    LevelMessage,
    TranscriptMessage,
    WatcherNotice,
    parse_message,
)

__all__ = [
    "AudioSessionClient",
    "StreamReport",
    "StreamedTranscript",
    "encode_audio",
    "open_audio_session",
    "stream_audio",
]

#: A stream that moved this often is not getting through: given up.
_MAX_MOVES = 100
#: What a connection that cannot be made, or is lost, raises.
_GONE = (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError)


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


@dataclass(frozen=True, slots=True)
class StreamedTranscript:
    """A transcript of :func:`stream_audio`, placed in the whole recording."""

    message: TranscriptMessage
    #: where the utterance lies in the recording (the message's offsets are
    #: its session's, which began wherever that session's audio did)
    start_s: float
    end_s: float


@dataclass
class StreamReport:
    """What :func:`stream_audio` did: the transcripts, and each move."""

    transcripts: list[StreamedTranscript] = field(default_factory=list)
    #: every session the recording went through, in order
    sessions: list[str] = field(default_factory=list)
    #: how each connection but the last ended: (code, reason); 1006 when lost
    moves: list[tuple[int, str | None]] = field(default_factory=list)
    #: from each move until the next session started, seconds
    reconnect_s: list[float] = field(default_factory=list)
    #: audio sent again after moves: what the old session had not answered
    resent_s: float = 0.0
    #: connections refused (busy, draining, no instance up) before one was had
    refused: int = 0
    #: what the service said it dropped or gave up on, falling behind
    #: (utterance_dropped, frames_dropped, stt_timeout): lost by the service, not by a move
    dropped: int = 0
    #: utterances the service heard and found nothing in (utterance_discarded
    #: other than too_short: no_text, no_speech, a hallucination)
    discarded: int = 0

    @property
    def texts(self) -> list[str]:
        return [t.message.text for t in self.transcripts]


async def stream_audio(
    port: int,
    audio: Float32,
    *,
    host: str = "127.0.0.1",
    sample_rate: int = 16_000,
    chunk_s: float = 0.1,
    realtime: bool = True,
    reconnect_for_s: float = 30.0,
    catch_up: float = 2.0,
    token: str | None = None,
    **options: Any,
) -> StreamReport:
    """Stream ``audio`` (float32 mono) to ``/v1/audio`` as a microphone would,
    moving to a new session whenever the one it has ends before the audio does.

    A session ends early when its instance drains (close 1001 at a pause
    between utterances), is killed (the connection is lost) or refuses (1013,
    busy or stopping). The client then connects again (through a balancer:
    to another instance), for up to ``reconnect_for_s``, and sends again
    everything after the end of the last utterance the old session answered:
    the utterance in flight on a killed instance is transcribed by the next
    one instead of lost, and none is answered twice. Paced (``realtime``),
    each chunk is due when it "has been heard"; after a move the backlog goes
    out ``catch_up`` times faster than real time, not at once: a service
    drops the oldest audio of a live stream it cannot keep up with. The
    transcripts come back placed in the whole recording.
    """
    size = max(1, int(sample_rate * chunk_s))
    report = StreamReport()
    base = 0  # where the current session's audio begins in the recording
    pace = _Pace(trio.current_time(), sample_rate, catch_up) if realtime else None
    moved_at: float | None = None
    for _ in range(_MAX_MOVES):
        attempt = await _stream_once(
            port,
            host,
            sample_rate,
            token,
            options,
            audio,
            base,
            size,
            pace,
            reconnect_for_s,
            report,
        )
        client = attempt.client
        assert client.session_id is not None
        report.sessions.append(client.session_id)
        if moved_at is not None:
            report.reconnect_s.append(attempt.started_at - moved_at)
        _place(report, client, base, sample_rate)
        report.dropped += sum(
            e.type in (EventType.UTTERANCE_DROPPED, EventType.FRAMES_DROPPED, EventType.STT_TIMEOUT)
            for e in client.events
        )
        report.discarded += sum(
            e.type is EventType.UTTERANCE_DISCARDED and e.data.get("reason") != "too_short"
            for e in client.events
        )
        if not attempt.moved:
            return report
        code, reason = client.closed or (1006, "connection lost")
        report.moves.append((int(code), reason))
        moved_at = trio.current_time()
        answered = [t.audio_end_s for t in client.transcripts]
        resume = base + (int(max(answered) * sample_rate) if answered else 0)
        resume = min(resume, attempt.cursor)
        report.resent_s += (attempt.cursor - resume) / sample_rate
        base = resume
    raise RuntimeError(f"the stream moved {_MAX_MOVES} times without getting through")


@dataclass(frozen=True, slots=True)
class _Pace:
    """When each chunk of a paced stream is due: as it "has been heard" from
    ``started`` on, or, behind that after a move, ``catch_up`` times faster
    than real time from when the new session began."""

    started: float
    sample_rate: int
    catch_up: float

    def due(self, stop: int, base: int, session_started: float) -> float:
        heard = self.started + stop / self.sample_rate
        caught_up = session_started + (stop - base) / self.sample_rate / self.catch_up
        return max(heard, caught_up)


@dataclass
class _Attempt:
    """One session of :func:`stream_audio`: how far it got, whether it moved on."""

    client: AudioSessionClient
    started_at: float
    cursor: int
    moved: bool


async def _stream_once(
    port: int,
    host: str,
    sample_rate: int,
    token: str | None,
    options: dict[str, Any],
    audio: Float32,
    base: int,
    size: int,
    pace: _Pace | None,
    reconnect_for_s: float,
    report: StreamReport,
) -> _Attempt:
    """Connect until a session starts (tried again 0.1 s later, doubling to
    1 s, for ``reconnect_for_s``), then stream from ``base`` through it."""
    deadline = trio.current_time() + reconnect_for_s
    wait = 0.1
    while True:
        attempt: _Attempt | None = None
        try:
            async with open_audio_session(
                port, host=host, sample_rate=sample_rate, token=token, **options
            ) as client:
                if client.session_id is not None:
                    attempt = _Attempt(client, trio.current_time(), base, True)
                    attempt.cursor, attempt.moved = await _send(client, audio, base, size, pace)
        except BaseException as exc:  # maybe in the session's nursery's group
            if not only_errors(exc, *_GONE):
                raise
            # not connected, or lost as it closed: what it got is kept
        if attempt is not None:
            return attempt
        report.refused += 1
        if trio.current_time() + wait > deadline:
            raise trio.TooSlowError(f"no session within {reconnect_for_s:g} s")
        await trio.sleep(wait)
        wait = min(1.0, wait * 2)


async def _send(
    client: AudioSessionClient,
    audio: Float32,
    base: int,
    size: int,
    pace: _Pace | None,
) -> tuple[int, bool]:
    """Audio from ``base`` until it is all sent and answered (returns
    ``(end, False)``) or the session ends first (``(where it got to, True)``)."""
    cursor = base
    session_started = trio.current_time()
    try:
        while cursor < audio.size and not client.ended.is_set():
            stop = min(cursor + size, audio.size)
            if pace is not None:
                await trio.sleep_until(pace.due(stop, base, session_started))
            chunk = audio[cursor:stop]
            await client.ws.send_message(encode_audio(chunk, client.encoding, client.channels))
            cursor = stop
        if not client.ended.is_set():
            await client.stop()
    except BaseException as exc:
        if not only_errors(exc, *_GONE):
            raise
    # Ended as asked ("stop"), or moved on: by a drain (session_ended, then
    # the close, 1001) or a lost connection.
    reasons = [e.data.get("reason") for e in client.events if e.type is EventType.SESSION_ENDED]
    moved = reasons[-1:] != ["stop"]
    if moved:  # the close frame is the receiving task's to read, a moment later
        with trio.move_on_after(1.0):
            await client.gone.wait()
    return cursor, moved


def _place(report: StreamReport, client: AudioSessionClient, base: int, sample_rate: int) -> None:
    offset = base / sample_rate
    for message in client.transcripts:
        report.transcripts.append(
            StreamedTranscript(
                message,
                round(offset + message.audio_start_s, 3),
                round(offset + message.audio_end_s, 3),
            )
        )
