"""Publishing a file atomically: it appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    # Makes a rename itself durable; best effort where directories can't be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A temp file next to ``path`` that replaces it when the block ends without error.

    The temp file is named ``.<name>.<random>.tmp``, so the cache's sweep of
    stale temps (``.<model name>.*.tmp``) also catches those of a crashed
    writer. Data is fsynced before the rename publishes the name, and the
    directory after it; on any exception the temp file is removed and ``path``
    is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600; a cache file is not a secret.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            # Data must be on disk before the rename publishes the name.
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
