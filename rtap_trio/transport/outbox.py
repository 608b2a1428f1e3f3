"""The outbox: the one place messages are numbered, serialised and fanned out.

Stages hand events (:mod:`rtap_trio.events`) and transcripts to :class:`Outbox`;
it stamps each with the next sequence number of its stream, serialises it once
(an event's typed fields become its message's ``data``), and queues it to every
subscriber of that stream (the ZeroMQ and WebSocket emitters, a replay printer,
a test). Each subscriber has its own bounded channel that drops its oldest
message when full, so one slow consumer never stalls the pipeline or the others.

It also keeps the last ``history`` transcripts, so that a subscriber that was
away (an agent reconnecting, the console after a restart of its page) can ask
for what it missed by sequence number: ZeroMQ catch-up and ``/api/transcripts``.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from ..buffers import FullPolicy, PolicySendChannel, open_channel
from ..events import Event
from .schemas import (
    CatchupReply,
    CatchupRequest,
    EventMessage,
    LevelMessage,
    Stream,
    TranscriptMessage,
)

__all__ = ["Outbox", "OutboxStatistics", "Published", "SessionOutbox", "Subscription"]


@dataclass(frozen=True, slots=True)
class Published:
    """One message as it goes on the wire: topic frame and JSON frame; for an
    in-process subscriber, an event's message also as the typed event it was
    made from (None for transcripts and levels)."""

    stream: Stream
    topic: str
    payload: bytes
    message: EventMessage | TranscriptMessage | LevelMessage
    event: Event | None = None


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    published: dict[str, int]
    subscribers: int
    dropped: int


@dataclass(slots=True)
class _Subscriber:
    streams: frozenset[Stream]
    channel: PolicySendChannel[Published]
    #: only these sessions' messages; None: every session's
    sessions: frozenset[str] | None
    dropped: int = 0


class Subscription:
    """A subscriber's end: ``receive`` yields messages; closing unsubscribes.

    The sending side keeps a clone of the receive channel (to drop the oldest
    message), so closing the receiver alone would not tell the outbox; closing
    the subscription does.
    """

    def __init__(self, outbox: Outbox, key: int, receive: trio.MemoryReceiveChannel[Published]):
        self._outbox = outbox
        self._key = key
        self.receive = receive

    @property
    def dropped(self) -> int:
        """Messages this subscriber lost because its queue was full (oldest first)."""
        return self._outbox._dropped_by(self._key)

    def update(self, streams: Iterable[Stream], sessions: Iterable[str] | None) -> None:
        """From now on: these streams, of these sessions (None: all)."""
        self._outbox._update(self._key, streams, sessions)

    def close(self) -> None:
        self._outbox._unsubscribe(self._key)
        self.receive.close()

    def end(self) -> None:
        """No more messages: ``receive`` ends once what is queued has been read."""
        self._outbox._unsubscribe(self._key)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Outbox:
    def __init__(
        self,
        *,
        on_drop: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        history: int = 1000,
    ) -> None:
        self._seq = {stream: itertools.count() for stream in Stream}
        self._published = dict.fromkeys(Stream, 0)
        self._subscribers: dict[int, _Subscriber] = {}
        self._ids = itertools.count()
        self._on_drop = on_drop
        self._clock = clock
        self._closed = False
        self._dropped = 0
        self._history: deque[TranscriptMessage] = deque(maxlen=history)

    def subscribe(
        self,
        name: str,
        streams: Iterable[Stream],
        max_buffer_size: int,
        *,
        session_id: str | None = None,
        sessions: Iterable[str] | None = None,
    ) -> Subscription:
        """A new bounded channel that receives every later message of ``streams``
        (of one session only, if ``session_id`` is given; of ``sessions``).

        After :meth:`close` the channel is closed at the sending end, so
        receiving ends once what is queued has been read.
        """
        key = next(self._ids)

        def dropped(_: Published) -> None:
            self._dropped += 1
            subscriber = self._subscribers.get(key)
            if subscriber is not None:
                subscriber.dropped += 1
            if self._on_drop is not None:
                self._on_drop(name)

        send, receive = open_channel(name, max_buffer_size, FullPolicy.DROP_OLDEST, dropped)
        if session_id is not None:
            sessions = (session_id,)
        if self._closed:
            send.close()
        else:
            self._subscribers[key] = _Subscriber(
                frozenset(streams), send, frozenset(sessions) if sessions is not None else None
            )
        return Subscription(self, key, receive)

    def _dropped_by(self, key: int) -> int:
        subscriber = self._subscribers.get(key)
        return subscriber.dropped if subscriber is not None else 0

    def _update(self, key: int, streams: Iterable[Stream], sessions: Iterable[str] | None) -> None:
        subscriber = self._subscribers.get(key)
        if subscriber is not None:
            subscriber.streams = frozenset(streams)
            subscriber.sessions = frozenset(sessions) if sessions is not None else None

    def wants(self, stream: Stream, session_id: str) -> bool:
        """Whether any subscriber would receive a message of ``stream`` from this session:
        what is costly to produce (levels) is produced only then."""
        return any(
            stream in s.streams and (s.sessions is None or session_id in s.sessions)
            for s in self._subscribers.values()
        )

    def catch_up(self, request: CatchupRequest, service_id: str) -> CatchupReply:
        """The kept transcripts after ``request.after_seq``, and what is lost for good."""
        kept = self._history
        oldest = kept[0].seq if kept else -1
        next_seq = self._published[Stream.TRANSCRIPTS]
        after = request.after_seq
        if after >= next_seq:  # a seq this service never gave: a restart or a bad client
            after = -1
        lost = max(0, oldest - after - 1) if kept else max(0, next_seq - after - 1)
        return CatchupReply(
            service_id=service_id,
            transcripts=[m for m in kept if m.seq > after][: request.limit],
            oldest_seq=oldest,
            next_seq=next_seq,
            lost=lost,
        )

    def _unsubscribe(self, key: int) -> None:
        subscriber = self._subscribers.pop(key, None)
        if subscriber is not None:
            subscriber.channel.close()

    def session(self, session_id: str) -> SessionOutbox:
        """The outbox as one session publishes: its id and its own sequence numbers."""
        return SessionOutbox(self, session_id)

    def event(
        self,
        event: Event,
        session_id: str,
        utterance_id: str | None = None,
        *,
        session_seq: int = 0,
    ) -> EventMessage:
        message = EventMessage(
            seq=next(self._seq[Stream.EVENTS]),
            session_seq=session_seq,
            session_id=session_id,
            utterance_id=utterance_id,
            emitted_at=self._clock(),
            type=event.type,
            data=event.wire_data(),
        )
        self._fan_out(Stream.EVENTS, message.topic, message, event)
        return message

    def transcript(self, *, session_seq: int = 0, **fields: Any) -> TranscriptMessage:
        message = TranscriptMessage(
            seq=next(self._seq[Stream.TRANSCRIPTS]),
            session_seq=session_seq,
            emitted_at=self._clock(),
            **fields,
        )
        self._history.append(message)
        self._fan_out(Stream.TRANSCRIPTS, message.topic, message)
        return message

    def level(self, session_id: str, *, session_seq: int = 0, **fields: Any) -> LevelMessage:
        message = LevelMessage(
            seq=next(self._seq[Stream.LEVELS]),
            session_seq=session_seq,
            session_id=session_id,
            emitted_at=self._clock(),
            **fields,
        )
        self._fan_out(Stream.LEVELS, message.topic, message)
        return message

    def _fan_out(
        self,
        stream: Stream,
        topic: str,
        message: EventMessage | TranscriptMessage | LevelMessage,
        event: Event | None = None,
    ) -> None:
        self._published[stream] += 1
        if self._closed:
            return
        item: Published | None = None
        for subscriber in self._subscribers.values():
            if stream in subscriber.streams and (
                subscriber.sessions is None or message.session_id in subscriber.sessions
            ):
                if item is None:  # serialised once, and only if someone takes it
                    payload = message.model_dump_json().encode()
                    item = Published(stream, topic, payload, message, event)
                subscriber.channel.send_nowait(item)

    def close(self) -> None:
        """No more messages: every subscriber's channel ends after what is queued."""
        self._closed = True
        for subscriber in self._subscribers.values():
            subscriber.channel.close()
        self._subscribers.clear()

    def statistics(self) -> OutboxStatistics:
        return OutboxStatistics(
            published={stream.value: count for stream, count in self._published.items()},
            subscribers=len(self._subscribers),
            dropped=self._dropped,
        )


class SessionOutbox:
    """One session's way into the :class:`Outbox`: its id on every message, and
    ``session_seq`` counting its own messages per stream, so that a subscriber
    following one session sees a gap as a gap."""

    def __init__(self, outbox: Outbox, session_id: str) -> None:
        self.session_id = session_id
        self._outbox = outbox
        self._seq = {stream: itertools.count() for stream in Stream}

    def event(self, event: Event, utterance_id: str | None = None) -> EventMessage:
        return self._outbox.event(
            event, self.session_id, utterance_id, session_seq=next(self._seq[Stream.EVENTS])
        )

    def transcript(self, **fields: Any) -> TranscriptMessage:
        return self._outbox.transcript(
            session_id=self.session_id, session_seq=next(self._seq[Stream.TRANSCRIPTS]), **fields
        )

    @property
    def wants_levels(self) -> bool:
        return self._outbox.wants(Stream.LEVELS, self.session_id)

    def level(self, **fields: Any) -> LevelMessage:
        return self._outbox.level(
            self.session_id, session_seq=next(self._seq[Stream.LEVELS]), **fields
        )
