"""The client helper for a primary and its hot standby: each utterance once.

A downstream agent subscribes to both publishers (main_pc and pc2) through
:class:`FailoverSubscriber` and reads transcripts from it as from one::

    with FailoverSubscriber([Publisher("main-pc", 6552, 6553),
                             Publisher("pc2", 7552, 7553)]) as feed:
        for transcript in feed:
            agent.handle(transcript.text)

Normally only the primary publishes. Around a switch both may publish the same
utterance (the standby's take-over, the primary's return); the helper hands
the agent the first transcript of each piece of speech and drops any later one
of the same speech (matched by when it was spoken: :class:`SpeechSpan`). It
needs only pyzmq and is synchronous, so it fits any agent; it also records the
heartbeats and switches it saw.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import zmq

from .transport.schemas import EventMessage, EventType, TranscriptMessage, parse_message
from .transport.spans import SpeechSpan

__all__ = ["FailoverSubscriber", "Publisher", "Switch"]

#: Delivered utterances remembered for matching: minutes of speech.
_REMEMBERED = 1024
_SWITCHES = (EventType.STANDBY_TAKEOVER, EventType.STANDBY_HANDBACK)


@dataclass(frozen=True, slots=True)
class Publisher:
    host: str
    events_port: int = 6552
    transcripts_port: int = 6553


@dataclass(frozen=True, slots=True)
class Switch:
    """A ``standby_takeover`` or ``standby_handback`` as the helper received it."""

    publisher: int
    event: EventMessage
    received_at: float  # time.monotonic()


@dataclass(slots=True)
class _Seen:
    #: time.monotonic() of the last heartbeat from each publisher
    heartbeats: dict[int, float] = field(default_factory=dict)
    #: time.monotonic() of the first transcript or switch from each publisher
    first_message: dict[int, float] = field(default_factory=dict)


class FailoverSubscriber:
    def __init__(
        self,
        publishers: Sequence[Publisher],
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self._context = context or zmq.Context.instance()
        self._sockets: list[zmq.Socket[bytes]] = []
        self._poller = zmq.Poller()
        for publisher in publishers:
            socket = self._context.socket(zmq.SUB)
            socket.setsockopt(zmq.LINGER, 0)
            for port in (publisher.events_port, publisher.transcripts_port):
                socket.connect(f"tcp://{publisher.host}:{port}")
            for topic in (b"transcript", b"heartbeat", b"standby_"):
                socket.subscribe(topic)
            self._sockets.append(socket)
            self._poller.register(socket, zmq.POLLIN)
        self._delivered: deque[SpeechSpan] = deque(maxlen=_REMEMBERED)
        self.seen = _Seen()
        self.switches: list[Switch] = []
        #: transcripts dropped as a second publisher's copy of the same speech
        self.duplicates = 0
        #: which publisher each delivered transcript came from, in order
        self.sources: list[int] = []

    def receive(self, timeout_s: float | None = None) -> TranscriptMessage | None:
        """The next utterance not delivered before; None if none came in ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = dict(self._poller.poll(None if left is None else int(left * 1000)))
            if not ready:
                return None
            for index, socket in enumerate(self._sockets):
                if socket not in ready:
                    continue
                _, payload = socket.recv_multipart()
                transcript = self._take(index, payload)
                if transcript is not None:
                    return transcript

    def _take(self, index: int, payload: bytes) -> TranscriptMessage | None:
        message = parse_message(payload)
        now = time.monotonic()
        if isinstance(message, EventMessage):
            if message.type is EventType.HEARTBEAT:
                self.seen.heartbeats[index] = now
            elif message.type in _SWITCHES:
                self.seen.first_message.setdefault(index, now)
                self.switches.append(Switch(index, message, now))
            return None
        if not isinstance(message, TranscriptMessage):
            return None
        self.seen.first_message.setdefault(index, now)
        span = SpeechSpan.of(message)
        if any(span.same_speech(done) for done in self._delivered):
            self.duplicates += 1
            return None
        self._delivered.append(span)
        self.sources.append(index)
        return message

    def __iter__(self) -> Iterator[TranscriptMessage]:
        while True:
            transcript = self.receive()
            if transcript is not None:
                yield transcript

    def close(self) -> None:
        for socket in self._sockets:
            socket.close(linger=0)

    def __enter__(self) -> FailoverSubscriber:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
