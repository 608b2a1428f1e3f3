"""The outbox: the one place messages are numbered, serialised and fanned out.

Stages hand events and transcripts to :class:`Outbox`; it stamps each with the
next sequence number of its stream, serialises it once, and queues it to every
subscriber of that stream (the ZeroMQ and WebSocket emitters, a replay printer,
a test). Each subscriber has its own bounded channel that drops its oldest
message when full, so one slow consumer never stalls the pipeline or the others.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from ..buffers import FullPolicy, PolicySendChannel, open_channel
from .schemas import EventMessage, EventType, Stream, TranscriptMessage

__all__ = ["Outbox", "OutboxStatistics", "Published", "SessionOutbox", "Subscription"]


@dataclass(frozen=True, slots=True)
class Published:
    """One message as it goes on the wire: topic frame and JSON frame."""

    stream: Stream
    topic: str
    payload: bytes
    message: EventMessage | TranscriptMessage


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    published: dict[str, int]
    subscribers: int
    dropped: int


@dataclass(slots=True)
class _Subscriber:
    streams: frozenset[Stream]
    channel: PolicySendChannel[Published]
    #: only this session's messages; None: every session's
    session_id: str | None


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
    ) -> None:
        self._seq = {stream: itertools.count() for stream in Stream}
        self._published = dict.fromkeys(Stream, 0)
        self._subscribers: dict[int, _Subscriber] = {}
        self._ids = itertools.count()
        self._on_drop = on_drop
        self._clock = clock
        self._closed = False
        self._dropped = 0

    def subscribe(
        self,
        name: str,
        streams: Iterable[Stream],
        max_buffer_size: int,
        *,
        session_id: str | None = None,
    ) -> Subscription:
        """A new bounded channel that receives every later message of ``streams``
        (of one session only, if ``session_id`` is given).

        After :meth:`close` the channel is closed at the sending end, so
        receiving ends once what is queued has been read.
        """
        key = next(self._ids)

        def dropped(_: Published) -> None:
            self._dropped += 1
            if self._on_drop is not None:
                self._on_drop(name)

        send, receive = open_channel(name, max_buffer_size, FullPolicy.DROP_OLDEST, dropped)
        if self._closed:
            send.close()
        else:
            self._subscribers[key] = _Subscriber(frozenset(streams), send, session_id)
        return Subscription(self, key, receive)

    def _unsubscribe(self, key: int) -> None:
        subscriber = self._subscribers.pop(key, None)
        if subscriber is not None:
            subscriber.channel.close()

    def session(self, session_id: str) -> SessionOutbox:
        """The outbox as one session publishes: its id and its own sequence numbers."""
        return SessionOutbox(self, session_id)

    def event(
        self,
        type: EventType,
        session_id: str,
        utterance_id: str | None = None,
        *,
        session_seq: int = 0,
        **data: Any,
    ) -> EventMessage:
        message = EventMessage(
            seq=next(self._seq[Stream.EVENTS]),
            session_seq=session_seq,
            session_id=session_id,
            utterance_id=utterance_id,
            emitted_at=self._clock(),
            type=type,
            data=data,
        )
        self._fan_out(Stream.EVENTS, message.topic, message)
        return message

    def transcript(self, *, session_seq: int = 0, **fields: Any) -> TranscriptMessage:
        message = TranscriptMessage(
            seq=next(self._seq[Stream.TRANSCRIPTS]),
            session_seq=session_seq,
            emitted_at=self._clock(),
            **fields,
        )
        self._fan_out(Stream.TRANSCRIPTS, message.topic, message)
        return message

    def _fan_out(
        self, stream: Stream, topic: str, message: EventMessage | TranscriptMessage
    ) -> None:
        self._published[stream] += 1
        if self._closed:
            return
        item = Published(stream, topic, message.model_dump_json().encode(), message)
        for subscriber in self._subscribers.values():
            if stream in subscriber.streams and subscriber.session_id in (
                None,
                message.session_id,
            ):
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

    def event(self, type: EventType, utterance_id: str | None = None, **data: Any) -> EventMessage:
        return self._outbox.event(
            type,
            self.session_id,
            utterance_id,
            session_seq=next(self._seq[Stream.EVENTS]),
            **data,
        )

    def transcript(self, **fields: Any) -> TranscriptMessage:
        return self._outbox.transcript(
            session_id=self.session_id, session_seq=next(self._seq[Stream.TRANSCRIPTS]), **fields
        )
