"""Waiting for a ZeroMQ socket on trio's loop, without a thread.

A ZeroMQ socket's FD is edge-triggered and says only "look at ZMQ_EVENTS":
check the events first, wait on the FD only when nothing is there, and look
again after every wake-up. A periodic wake-up anyway makes a missed edge a
short delay instead of a hang. Close the socket with :func:`close` (trio is
told first, so a task waiting on the FD gets ClosedResourceError, not a hang).
"""

from __future__ import annotations

import trio
import zmq

__all__ = ["close", "receive_multipart"]

_POLL_S = 1.0


async def receive_multipart(socket: zmq.Socket[bytes]) -> list[bytes]:
    """The next message's frames; waits on trio's loop."""
    fd = int(socket.getsockopt(zmq.FD))
    while not int(socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
        with trio.move_on_after(_POLL_S):
            await trio.lowlevel.wait_readable(fd)
    frames: list[bytes] = socket.recv_multipart(zmq.NOBLOCK)
    await trio.lowlevel.checkpoint()
    return frames


def close(socket: zmq.Socket[bytes]) -> None:
    if not socket.closed:
        trio.lowlevel.notify_closing(int(socket.getsockopt(zmq.FD)))
        socket.close(linger=0)
