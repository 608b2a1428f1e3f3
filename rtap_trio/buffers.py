"""Audio buffers and the back-pressure policies of the channels between stages.

Two ideas live here: the :class:`RingBuffer` of recent frames that gives an
utterance its pre-roll, and :func:`open_channel`, which opens a bounded trio
memory channel whose sender applies a stated policy when the channel is full.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import trio

from .items import Samples

__all__ = [
    "ChannelStatistics",
    "FullPolicy",
    "PolicySendChannel",
    "RingBuffer",
    "RingBufferStatistics",
    "open_channel",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RingBufferStatistics:
    capacity_frames: int
    frames_held: int
    oldest_index: int | None
    newest_index: int | None

    @property
    def utilization(self) -> float:
        return self.frames_held / self.capacity_frames if self.capacity_frames else 0.0


class RingBuffer:
    """The most recent ``capacity`` frames, addressable by absolute frame index.

    Storage is one preallocated 2-D array, so appending a frame is a row copy
    and never allocates on the per-frame path.
    """

    def __init__(self, capacity_frames: int, frame_samples: int) -> None:
        if capacity_frames < 1 or frame_samples < 1:
            raise ValueError("capacity_frames and frame_samples must be positive")
        self._data = np.zeros((capacity_frames, frame_samples), dtype=np.int16)
        self._capacity = capacity_frames
        self._frame_samples = frame_samples
        self._next_index = 0  # absolute index the next frame will get
        self._count = 0

    @property
    def capacity_frames(self) -> int:
        return self._capacity

    @property
    def next_index(self) -> int:
        return self._next_index

    @property
    def oldest_index(self) -> int:
        return self._next_index - self._count

    def append(self, samples: Samples, index: int | None = None) -> int:
        """Store one frame; returns its absolute index.

        ``index`` lets the caller keep the stream's own numbering: a gap (frames
        dropped upstream) is filled with silence so offsets stay true.
        """
        if samples.shape != (self._frame_samples,):
            raise ValueError(f"frame must have {self._frame_samples} samples, got {samples.shape}")
        if index is not None and index > self._next_index:
            gap = min(index - self._next_index, self._capacity)
            for _ in range(gap):
                self._write(np.zeros(self._frame_samples, dtype=np.int16))
            self._next_index = index
        elif index is not None and index < self._next_index:
            raise ValueError(f"frame index {index} goes backwards (next is {self._next_index})")
        return self._write(samples)

    def _write(self, samples: Samples) -> int:
        self._data[self._next_index % self._capacity] = samples
        index = self._next_index
        self._next_index += 1
        self._count = min(self._count + 1, self._capacity)
        return index

    def since(self, start_index: int, stop_index: int | None = None) -> Samples:
        """Samples of frames ``start_index`` up to (not including) ``stop_index``.

        The range is clipped to what is still held: asking for more pre-roll
        than the buffer has gives what there is.
        """
        stop = self._next_index if stop_index is None else min(stop_index, self._next_index)
        start = max(start_index, self.oldest_index)
        if stop <= start:
            return np.zeros(0, dtype=np.int16)
        rows = np.arange(start, stop) % self._capacity
        return self._data[rows].reshape(-1)

    def clear(self) -> None:
        self._count = 0

    def statistics(self) -> RingBufferStatistics:
        return RingBufferStatistics(
            capacity_frames=self._capacity,
            frames_held=self._count,
            oldest_index=self.oldest_index if self._count else None,
            newest_index=self._next_index - 1 if self._count else None,
        )


class FullPolicy(enum.Enum):
    """What a sender does when its channel is full."""

    #: wait for room: back-pressure, for sources that can wait (file replay)
    BLOCK = "block"
    #: discard the oldest queued item and count it: live capture never blocks
    DROP_OLDEST = "drop_oldest"


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    name: str
    policy: FullPolicy
    max_buffer_size: int
    current_buffer_used: int
    dropped: int
    sent: int

    @property
    def utilization(self) -> float:
        return self.current_buffer_used / self.max_buffer_size if self.max_buffer_size else 0.0


class PolicySendChannel(Generic[T]):
    """The send side of a bounded channel, with a full-channel policy.

    ``on_drop`` is called with each item discarded under ``DROP_OLDEST`` so the
    owner can count it or publish an event about it.
    """

    def __init__(
        self,
        name: str,
        send: trio.MemorySendChannel[T],
        receive: trio.MemoryReceiveChannel[T],
        policy: FullPolicy,
        on_drop: Callable[[T], None] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._send = send
        # A clone of the receive side lets the sender take the oldest item out.
        self._peek = receive.clone()
        self._on_drop = on_drop
        self._dropped = 0
        self._sent = 0

    def send_nowait(self, item: T) -> None:
        """Queue ``item`` now; under DROP_OLDEST a full channel loses its oldest item.

        Raises ``trio.WouldBlock`` under BLOCK when full, ``trio.ClosedResourceError``
        after :meth:`close`, ``trio.BrokenResourceError`` when nobody receives.
        """
        while True:
            try:
                self._send.send_nowait(item)
            except trio.WouldBlock:
                if self.policy is FullPolicy.BLOCK:
                    raise
                try:
                    dropped = self._peek.receive_nowait()
                except trio.WouldBlock:  # emptied meanwhile: retry
                    continue
                self._dropped += 1
                if self._on_drop is not None:
                    self._on_drop(dropped)
                continue
            self._sent += 1
            return

    async def send(self, item: T) -> None:
        if self.policy is FullPolicy.BLOCK:
            await self._send.send(item)
            self._sent += 1
        else:
            await trio.lowlevel.checkpoint()
            self.send_nowait(item)

    def close(self) -> None:
        self._send.close()
        self._peek.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> ChannelStatistics:
        stats = self._send.statistics()
        return ChannelStatistics(
            name=self.name,
            policy=self.policy,
            max_buffer_size=int(stats.max_buffer_size),
            current_buffer_used=stats.current_buffer_used,
            dropped=self._dropped,
            sent=self._sent,
        )


def open_channel(
    name: str,
    max_buffer_size: int,
    policy: FullPolicy,
    on_drop: Callable[[T], None] | None = None,
) -> tuple[PolicySendChannel[T], trio.MemoryReceiveChannel[T]]:
    """A bounded channel whose sender follows ``policy`` when it is full."""
    send, receive = trio.open_memory_channel[T](max_buffer_size)
    return PolicySendChannel(name, send, receive, policy, on_drop), receive
