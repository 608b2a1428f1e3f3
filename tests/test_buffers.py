from __future__ import annotations

import numpy as np
import pytest
import trio

from rtap_trio.buffers import FullPolicy, RingBuffer, open_channel


def frame(value: int, n: int = 4) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def test_ring_buffer_keeps_most_recent_frames() -> None:
    ring = RingBuffer(capacity_frames=3, frame_samples=4)
    for i in range(5):
        assert ring.append(frame(i)) == i
    stats = ring.statistics()
    assert (stats.frames_held, stats.oldest_index, stats.newest_index) == (3, 2, 4)
    assert stats.utilization == 1.0
    assert ring.since(0).tolist() == [2] * 4 + [3] * 4 + [4] * 4  # clipped to what is held
    assert ring.since(3, 4).tolist() == [3] * 4
    assert ring.since(5).size == 0


def test_ring_buffer_fills_gaps_with_silence_and_rejects_going_back() -> None:
    ring = RingBuffer(capacity_frames=8, frame_samples=2)
    ring.append(frame(1, 2), index=0)
    ring.append(frame(2, 2), index=3)  # frames 1 and 2 were dropped upstream
    assert ring.since(0).tolist() == [1, 1, 0, 0, 0, 0, 2, 2]
    with pytest.raises(ValueError, match="backwards"):
        ring.append(frame(3, 2), index=2)
    with pytest.raises(ValueError, match="samples"):
        ring.append(np.zeros(3, dtype=np.int16))


def test_ring_buffer_partial_fill_utilization() -> None:
    ring = RingBuffer(capacity_frames=4, frame_samples=2)
    ring.append(frame(1, 2))
    assert ring.statistics().utilization == 0.25
    ring.clear()
    assert ring.statistics().frames_held == 0 and ring.since(0).size == 0


async def test_drop_oldest_channel_counts_and_keeps_newest() -> None:
    dropped: list[int] = []
    send, receive = open_channel("t", 2, FullPolicy.DROP_OLDEST, dropped.append)
    for i in range(5):
        send.send_nowait(i)
    assert dropped == [0, 1, 2]
    stats = send.statistics()
    assert (stats.dropped, stats.sent, stats.current_buffer_used) == (3, 5, 2)
    assert [receive.receive_nowait(), receive.receive_nowait()] == [3, 4]
    send.close()
    with pytest.raises(trio.EndOfChannel):
        await receive.receive()
    with pytest.raises(trio.ClosedResourceError):
        send.send_nowait(9)


async def test_block_channel_waits_for_room() -> None:
    send, receive = open_channel("t", 1, FullPolicy.BLOCK)
    send.send_nowait(1)
    with pytest.raises(trio.WouldBlock):
        send.send_nowait(2)
    received: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, 2)
        await trio.testing.wait_all_tasks_blocked()
        received.append(await receive.receive())
        received.append(await receive.receive())
    assert received == [1, 2]
    assert send.statistics().dropped == 0
