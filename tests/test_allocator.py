"""The pinned mmap threshold: a freed big buffer leaves the process, every time.

Run in a child process of its own: the allocator's state is per process, and
the test's own must stay as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .support import REPO

# Four 25 MB buffers (an upload's file at the limit), each freed while small
# allocations are made beside it; the RSS growth in MiB is printed.
_PROGRAM = """
import sys
from pathlib import Path
from rtap_trio.allocator import pin_mmap_threshold

def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

pinned = pin_mmap_threshold() if sys.argv[1] == "pin" else False
before, kept = rss_mib(), []
for _ in range(4):
    buffer = bytearray(25 << 20)
    buffer[::4096] = b"\\1" * len(buffer[::4096])  # every page touched
    kept.append(bytearray(1000))
    del buffer
print(pinned, rss_mib() - before)
"""


def _growth_mib(mode: str, **env: str) -> tuple[bool, int]:
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode],
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    pinned, growth = done.stdout.split()
    return pinned == "True", int(growth)


def test_without_the_pin_a_freed_big_buffer_stays_and_with_it_it_goes() -> None:
    pinned, growth = _growth_mib("none")
    assert not pinned and growth >= 20  # glibc's moving threshold kept one
    pinned, growth = _growth_mib("pin")
    assert pinned and growth <= 5


def test_an_operators_malloc_setting_is_left_alone() -> None:
    pinned, _ = _growth_mib("pin", MALLOC_MMAP_THRESHOLD_="4194304")
    assert not pinned
