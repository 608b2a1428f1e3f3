"""The C allocator's one setting the service changes: big blocks go back to the OS.

glibc serves a block over ``M_MMAP_THRESHOLD`` (128 KiB at first) with its own
``mmap`` and unmaps it when it is freed; but each time such a block is freed it
raises the threshold to that block's size (up to 32 MiB), so the next blocks
of that size come from the heap, and a freed heap block below others stays in
the process for good. A service that now and then holds one big buffer (an
upload's file, up to 25 MB; a long utterance's audio) then keeps its RSS at
every high-water mark it ever reached, in steps.

Measured in the hostile soak (pc2, 40 s, 2 clients): RSS rose 226 -> 254 MB,
one 25 MB step after the second refused upload, and stayed there (10.9 % past
the first third; the soak allows 10 %). With the threshold pinned at 1 MiB the
same run stayed at 223-226 MB from start to end. What it costs: blocks over
1 MiB are mapped and unmapped each time (a few per utterance; whisper.cpp's
buffers are allocated once per context).

``MALLOC_MMAP_THRESHOLD_`` in the environment wins: an operator's choice is
left alone. Anything but glibc is left alone too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MMAP_THRESHOLD_BYTES", "pin_mmap_threshold"]

#: Blocks this size and over are mapped apart and given back when freed.
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold (which also stops it from moving); whether it was set.

    Called once at start, before the engines' threads allocate.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
