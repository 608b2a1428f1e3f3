"""The per-user cache of converted models, and resolving a configured name or path to a file.

A cached model is trusted only if its content matches the sha256 recorded
when it was converted, kept next to it in ``ggml-<name>.bin.sha256`` (the
``sha256sum`` format, so ``sha256sum -c`` checks it too). Size and magic alone
let a file damaged in place (a bad sector, a stray write) through to
whisper.cpp, which can then abort the whole process.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import logging
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from rtap_trio.errors import ModelError

from .atomic import atomic_output
from .convert import convert_known_model
from .ggml import GGML_MAGIC, FType, check_ggml_file
from .registry import expected_size, find_vocabulary, is_known, known_model, require

log = logging.getLogger(__name__)

# sha256 rather than blake2b: with SHA-NI it is the faster of the two here. Measured
# with hashlib.file_digest on a warm page cache (2-core AMD EPYC, SHA-NI), best of 5:
# tiny.en q8_0 28 ms, tiny.en f16 50 ms, base q8_0 62 ms, base f16 104 ms (about
# 1.4 GB/s); blake2b took 1.7x as long. Paid once per resolve, i.e. at every start,
# next to a model load of several hundred ms; a cold cache reads the file from disk
# once more, which whisper.cpp then finds in the page cache.
_DIGEST = "sha256"
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class CacheState(enum.Enum):
    """What a cached model file turned out to be; the value says it in a message."""

    VERIFIED = "matches its recorded sha256"
    MISSING = "has not been converted yet"
    INCOMPLETE = "is incomplete or corrupt (wrong size, or not a ggml file)"
    UNRECORDED = "has no recorded sha256 (converted by an older RTAP, or its record was lost)"
    MISMATCH = "is corrupt: its sha256 differs from the one recorded at conversion"


def default_cache_dir() -> Path:
    """Where converted models are cached.

    ``$RTAP_MODEL_CACHE`` if set, else ``$XDG_CACHE_HOME/rtap/models``, else
    ``~/.cache/rtap/models``.
    """
    explicit = os.environ.get("RTAP_MODEL_CACHE", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "rtap" / "models"
    return Path.home() / ".cache" / "rtap" / "models"


def cached_model_path(name: str, cache_dir: Path | None = None, ftype: FType = "f16") -> Path:
    """Where the converted ``name`` lives (or will live) in the cache.

    Named as whisper.cpp names its files: ``ggml-base.bin``, ``ggml-base-q8_0.bin``.
    """
    known_model(name)
    suffix = "" if ftype == "f16" else f"-{ftype}"
    directory = cache_dir if cache_dir is not None else default_cache_dir()
    return directory / f"ggml-{name}{suffix}.bin"


def digest_path(model_file: Path) -> Path:
    """The record of ``model_file``'s sha256: ``<model file>.sha256``."""
    return model_file.with_name(f"{model_file.name}.{_DIGEST}")


def file_digest(path: Path) -> str:
    """Hex sha256 of a file's content (hashlib reads it in chunks, GIL released)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, _DIGEST).hexdigest()


def recorded_digest(model_file: Path) -> str | None:
    """The sha256 recorded for ``model_file``, or None if there is no readable record."""
    try:
        fields = digest_path(model_file).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    if not fields or not _HEX_DIGEST.fullmatch(fields[0]):
        return None
    return fields[0]


def record_digest(model_file: Path) -> str:
    """Hash ``model_file`` and record it next to it, atomically; returns the digest."""
    digest = file_digest(model_file)
    with atomic_output(digest_path(model_file)) as out:
        out.write(f"{digest}  {model_file.name}\n".encode("ascii"))
    return digest


def cache_state(target: Path, size: int) -> CacheState:
    """Whether ``target`` is the converted model it should be, checked cheapest first."""
    try:
        actual_size = target.stat().st_size
        with target.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        return CacheState.MISSING
    except OSError:
        return CacheState.INCOMPLETE
    if magic != struct.pack("<i", GGML_MAGIC) or actual_size != size:
        return CacheState.INCOMPLETE
    recorded = recorded_digest(target)
    if recorded is None:
        return CacheState.UNRECORDED
    try:
        actual = file_digest(target)
    except OSError:
        return CacheState.INCOMPLETE
    return CacheState.VERIFIED if actual == recorded else CacheState.MISMATCH


def _lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Inter-process lock; flock also excludes other threads with their own fd."""
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process converting into %s", lock_path.parent)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _state_after_converters(target: Path, size: int) -> CacheState:
    """The state once no converter holds the lock; for callers that may not convert.

    A converter publishes the model, then its record, under the exclusive
    lock; a reader between the two would see a mismatch. A shared lock waits
    that out without needing write access (the lock file is only opened).
    """
    try:
        with _lock_path(target).open("r") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            try:
                return cache_state(target, size)
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except OSError:  # no lock file: nobody ever converted here
        return cache_state(target, size)


def _looks_like_path(text: str) -> bool:
    # Decides between "file not found" and "unknown model name" for the error.
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    return (
        any(sep in text for sep in separators)
        or text.startswith(("~", "."))
        or Path(text).suffix.lower() in {".bin", ".ggml", ".gguf"}
    )


def resolve_whisper_model(
    name_or_path: str,
    cache_dir: Path | None = None,
    *,
    convert: bool = True,
    ftype: FType = "f16",
) -> Path:
    """A ggml file whisper.cpp can load, for a configured name or a path.

    * An existing file path is checked with :func:`check_ggml_file` and
      returned as given (after ``~`` expansion).
    * A known name (see :data:`KNOWN_MODELS`) maps to
      ``<cache>/ggml-<name>.bin`` (``ggml-<name>-q8_0.bin`` for q8_0, likewise q5_0). It is
      used if its size and its sha256 match (the hash recorded at conversion
      in ``<file>.sha256``); otherwise, missing, damaged or unrecorded, it is
      converted (again) from its wheel and the hash recorded.
      ``convert=False`` turns that conversion into an error.
    * Anything else raises :class:`ModelError`.

    ``ftype`` applies to known names only: "f16", "q8_0" or "q5_0". An f32 model
    would load and then abort the whole process in whisper.cpp 1.8.5 (see
    :func:`convert_ct2_to_ggml`), so it is refused here, at startup.

    Hashing takes 30-100 ms and conversion seconds; both block, so call this
    from a worker thread (``trio.to_thread.run_sync``) if an event loop is running.
    """
    if not is_known(name_or_path):
        path = Path(name_or_path).expanduser()
        if path.is_file():
            check_ggml_file(path)
            return path
        if path.exists():
            raise ModelError(f"Whisper model path {path} is not a regular file")
        if _looks_like_path(name_or_path):
            raise ModelError(f"Whisper model file not found: {path}")
        known_model(name_or_path)  # raises, listing the known names

    model = known_model(name_or_path)
    size = expected_size(model, ftype)
    target = cached_model_path(model.name, cache_dir, ftype)
    state = cache_state(target, size)
    if state is CacheState.VERIFIED:
        return target
    if not convert:
        state = _state_after_converters(target, size)
        if state is CacheState.VERIFIED:
            return target
        dtype = "" if ftype == "f16" else f" --dtype {ftype}"
        raise ModelError(
            f"Whisper model {model.name!r} {state.value} ({target}); "
            f"run `python -m rtap_trio models convert{dtype} {model.name}`"
        )
    # Fail on a missing wheel before touching the cache directory.
    for part in model.model_parts:
        require(part, model.name)
    find_vocabulary(model)

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(_lock_path(target)):
            # Another process may have finished the job while we waited.
            state = cache_state(target, size)
            if state is CacheState.VERIFIED:
                return target
            # Temp files of a crashed converter; only the lock holder writes these.
            for stale in target.parent.glob(f".{target.name}.*.tmp"):
                stale.unlink(missing_ok=True)
            if state is not CacheState.MISSING:
                log.warning(
                    "cached Whisper model %s %s; converting it again from its wheel",
                    target,
                    state.value,
                )
            convert_known_model(model.name, target, ftype)
            # Recorded only after the size check in convert_known_model passed;
            # a crash before this line leaves no (or the old) record: reconverted.
            record_digest(target)
    except OSError as exc:
        raise ModelError(f"cannot use the model cache {target.parent}: {exc}") from exc
    return target
