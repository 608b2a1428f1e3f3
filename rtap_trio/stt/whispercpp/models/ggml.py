"""whisper.cpp's legacy (pre-GGUF) ggml file: format constants, tensor sizes, and a checker.

A whisper ggml file is: magic, 11 int32 hyperparameters, the mel filterbank,
the token table, then tensors, each a header (rank, name length, type, dims,
name) followed by its data. whisper.cpp allocates every tensor from the
hyperparameters and reads the file into them; :func:`check_ggml_file` checks
the file against the same expectations before whisper.cpp sees it, because
pywhispercpp turns a refused file into a segfault and some inconsistencies
(head counts, the weight type) only surface later as a ggml assertion, i.e.
SIGABRT.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

from rtap_trio.errors import ModelError

from .mel import N_FFT

FType = Literal["f16", "f32", "q8_0", "q5_0"]

#: "ggml" as a little-endian int32: whisper.cpp's legacy (pre-GGUF) file magic.
GGML_MAGIC = 0x67676D6C

# ggml tensor type ids (ggml.h).
GGML_F32 = 0
GGML_F16 = 1
GGML_Q4_0 = 2
GGML_Q4_1 = 3
GGML_Q5_0 = 6
GGML_Q5_1 = 7
GGML_Q8_0 = 8
# q8_0: blocks of 32 weights along a row, each one f16 scale and 32 int8.
Q8_0_BLOCK = 32
Q8_0_DTYPE = np.dtype([("d", "<f2"), ("qs", "i1", (Q8_0_BLOCK,))])
# q5_0: blocks of 32, each one f16 scale, the fifth bits of the 32 weights in
# one little-endian uint32 (bit j: weight j), and their low four bits packed in
# 16 bytes (byte j: weight j below, weight j + 16 above).
Q5_0_BLOCK = 32
Q5_0_DTYPE = np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", (Q5_0_BLOCK // 2,))])
#: (elements per block, bytes per block) of every ggml tensor type a whisper
#: file may hold: f32, f16, and the quantised q4_0, q4_1, q5_0, q5_1, q8_0.
GGML_BLOCKS: Mapping[int, tuple[int, int]] = MappingProxyType(
    {
        GGML_F32: (1, 4),
        GGML_F16: (1, 2),
        GGML_Q4_0: (32, 18),
        GGML_Q4_1: (32, 20),
        GGML_Q5_0: (Q5_0_BLOCK, Q5_0_DTYPE.itemsize),
        GGML_Q5_1: (32, 24),
        GGML_Q8_0: (Q8_0_BLOCK, Q8_0_DTYPE.itemsize),
    }
)
# How many f16 fields open a block of each quantised type (ggml-common.h): the
# scale d, and the minimum m where there is one; where a NaN can hide.
_QUANT_HALF_FIELDS: Mapping[int, int] = MappingProxyType(
    {GGML_Q4_0: 1, GGML_Q4_1: 2, GGML_Q5_0: 1, GGML_Q5_1: 2, GGML_Q8_0: 1}
)


def ggml_nbytes(ggml_type: int, elements: int) -> int:
    block, block_bytes = GGML_BLOCKS[ggml_type]
    return elements // block * block_bytes


# whisper.cpp reads ftype as GGML_QNT_VERSION * 1000 + ggml_ftype for quantised
# files (quantize.cpp); GGML_FTYPE_MOSTLY_Q8_0 is 7, GGML_FTYPE_MOSTLY_Q5_0 8,
# the version 2.
HPARAM_FTYPE: Mapping[str, int] = MappingProxyType(
    {"f32": 0, "f16": 1, "q8_0": 2 * 1000 + 7, "q5_0": 2 * 1000 + 8}
)
_GGML_QNT_VERSION_FACTOR = 1000
_GGML_QNT_VERSION = 2
# ggml_ftype -> the ggml type whisper.cpp allocates the 2-D weights in
# (ggml_ftype_to_ggml_type), for the types GGML_BLOCKS knows.
_FTYPE_WEIGHT_TYPE: Mapping[int, int] = MappingProxyType(
    {0: GGML_F32, 1: GGML_F16, 2: GGML_Q4_0, 3: GGML_Q4_1, 7: GGML_Q8_0, 8: GGML_Q5_0, 9: GGML_Q5_1}
)

# Every Whisper model (tiny to large-v3, distil, turbo) has attention heads of
# 64 dimensions. A head count that does not fit the state width makes a ggml
# reshape assert, i.e. SIGABRT in the middle of the first transcription.
_HEAD_DIM = 64
# whisper.cpp derives its special tokens and language count from n_vocab:
# 51864 (English-only), 51865 (multilingual), 51866 (large-v3). Fewer puts
# <|startoftranscript|> past the embedding; more indexes past its language table.
_N_VOCAB_RANGE = range(51_864, 51_866 + 1)
_MAX_LAYERS = 64  # large has 32
_MAX_TOKEN_BYTES = 1024  # the longest GPT-2 token is far shorter; a larger length is damage
# Tensor data is scanned in reads of about this size: flat memory, any file size.
_SCAN_BYTES = 4 << 20


@dataclass(frozen=True)
class Hparams:
    """The hyperparameters in a ggml header, in file order (ftype kept apart)."""

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
        """The file's first 48 bytes: magic, these hparams, and ``ftype``'s code."""
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
            HPARAM_FTYPE[ftype],
        )


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as whisper.cpp allocates it: ggml dims (innermost first) and type."""

    dims: tuple[int, ...]
    ggml_type: int


def expected_tensors(hp: Hparams, weight_type: int) -> dict[str, TensorSpec]:
    """Every tensor whisper.cpp 1.8.5 creates for ``hp`` (whisper_model_load), by name.

    2-D weights take the file's weight type; the convolution kernels f16 (f32
    in an f32 file); biases, norms, positional embeddings and the conv biases
    (shaped (1, n) to broadcast over time) stay f32.
    """
    conv_type = GGML_F32 if weight_type == GGML_F32 else GGML_F16
    specs: dict[str, TensorSpec] = {}

    def f32(name: str, *dims: int) -> None:
        specs[name] = TensorSpec(dims, GGML_F32)

    def weight(name: str, *dims: int) -> None:
        specs[name] = TensorSpec(dims, weight_type)

    def linear(name: str, n_in: int, n_out: int, bias: bool = True) -> None:
        weight(f"{name}.weight", n_in, n_out)
        if bias:
            f32(f"{name}.bias", n_out)

    def norm(name: str, n: int) -> None:
        f32(f"{name}.weight", n)
        f32(f"{name}.bias", n)

    def attention(name: str, n: int) -> None:
        linear(f"{name}.query", n, n)
        linear(f"{name}.key", n, n, bias=False)
        linear(f"{name}.value", n, n)
        linear(f"{name}.out", n, n)

    def mlp(block: str, n: int) -> None:
        norm(f"{block}.mlp_ln", n)
        linear(f"{block}.mlp.0", n, 4 * n)
        linear(f"{block}.mlp.2", 4 * n, n)

    n = hp.n_audio_state
    f32("encoder.positional_embedding", n, hp.n_audio_ctx)
    specs["encoder.conv1.weight"] = TensorSpec((3, hp.n_mels, n), conv_type)
    f32("encoder.conv1.bias", 1, n)
    specs["encoder.conv2.weight"] = TensorSpec((3, n, n), conv_type)
    f32("encoder.conv2.bias", 1, n)
    norm("encoder.ln_post", n)
    for i in range(hp.n_audio_layer):
        block = f"encoder.blocks.{i}"
        mlp(block, n)
        norm(f"{block}.attn_ln", n)
        attention(f"{block}.attn", n)

    n = hp.n_text_state
    f32("decoder.positional_embedding", n, hp.n_text_ctx)
    weight("decoder.token_embedding.weight", n, hp.n_vocab)
    norm("decoder.ln", n)
    for i in range(hp.n_text_layer):
        block = f"decoder.blocks.{i}"
        mlp(block, n)
        norm(f"{block}.attn_ln", n)
        attention(f"{block}.attn", n)
        norm(f"{block}.cross_attn_ln", n)
        attention(f"{block}.cross_attn", n)
    return specs


def _hparams_problem(hp: Hparams, raw_ftype: int) -> str | None:
    """Why whisper.cpp would crash on these hyperparameters, or None."""
    sizes = (hp.n_audio_ctx, hp.n_audio_state, hp.n_text_ctx, hp.n_text_state, hp.n_mels)
    if min(sizes) <= 0:
        return f"implausible header (a size is {min(sizes)})"
    if hp.n_vocab not in _N_VOCAB_RANGE:
        return (
            f"implausible header: n_vocab {hp.n_vocab} is not a Whisper vocabulary "
            f"({_N_VOCAB_RANGE.start} to {_N_VOCAB_RANGE.stop - 1})"
        )
    for side, layers in (("audio", hp.n_audio_layer), ("text", hp.n_text_layer)):
        if not 0 < layers <= _MAX_LAYERS:
            return f"implausible header: {layers} {side} layers"
    for side, state, heads in (
        ("audio", hp.n_audio_state, hp.n_audio_head),
        ("text", hp.n_text_state, hp.n_text_head),
    ):
        if heads <= 0 or state != heads * _HEAD_DIM:
            return (
                f"implausible header: {heads} {side} heads for a state of {state} "
                f"(Whisper heads are {_HEAD_DIM} wide)"
            )
    if hp.n_audio_state != hp.n_text_state:
        # Cross-attention multiplies the encoder output by decoder weights.
        return f"implausible header: audio state {hp.n_audio_state} != text {hp.n_text_state}"
    version, ftype = divmod(raw_ftype, _GGML_QNT_VERSION_FACTOR)
    if ftype not in _FTYPE_WEIGHT_TYPE or not 0 <= version <= _GGML_QNT_VERSION:
        return f"implausible header: unknown weight type (ftype {raw_ftype})"
    if ftype == 0:
        # See convert_ct2_to_ggml: loads, then aborts at the first transcription.
        return "f32 weights abort whisper.cpp 1.8.5 (its CPU convolution asserts f16); use f16"
    return None


def _chunk_has_non_finite(chunk: npt.NDArray[np.uint8], ggml_type: int) -> bool:
    """Whether whole values or blocks of ``ggml_type`` in ``chunk`` hold a NaN or an infinity."""
    # Floats with an all-ones exponent are the infinities and NaNs.
    if ggml_type == GGML_F32:
        return bool(np.any((chunk.view("<u4") & 0x7F800000) == 0x7F800000))
    halves = chunk.view("<u2")
    if ggml_type != GGML_F16:
        per_block = GGML_BLOCKS[ggml_type][1] // 2
        halves = halves.reshape(-1, per_block)[:, : _QUANT_HALF_FIELDS[ggml_type]]
    return bool(np.any((halves & 0x7C00) == 0x7C00))


def _has_non_finite(f: io.BufferedReader, ggml_type: int, nbytes: int, buf: bytearray) -> bool:
    """Whether the next ``nbytes`` of ``f`` (one tensor's data) hold a NaN or an infinity.

    Checks every f32 and f16 value, and the f16 fields of quantised blocks
    (the int8/int4 quants themselves are always finite). A NaN weight does not
    crash whisper.cpp but poisons every later step: the decoder then runs to
    its token limit without answering (minutes, past any budget).
    """
    block_bytes = GGML_BLOCKS[ggml_type][1]
    step = len(buf) // block_bytes * block_bytes
    view = memoryview(buf)
    left = nbytes
    while left > 0:
        want = min(step, left)
        if f.readinto(view[:want]) != want:
            raise EOFError
        if _chunk_has_non_finite(np.frombuffer(buf, dtype=np.uint8, count=want), ggml_type):
            return True
        left -= want
    return False


def check_ggml_file(path: Path) -> None:
    """Refuse a file whisper.cpp would crash on rather than reject.

    pywhispercpp does not check whisper.cpp's load result, so a file whisper.cpp
    refuses (not ggml, cut short, a tensor it does not expect) ends the process
    with a segfault, and one it accepts with inconsistent hyperparameters (head
    counts, weight type) aborts on a ggml assertion later. This reads the
    header and checks the hyperparameters are a Whisper model's, the mel
    filterbank and every tensor value are finite, the vocabulary is well
    formed, and the tensors are exactly the set whisper.cpp allocates for
    those hyperparameters (names, dims, types), ending exactly at the end of
    the file. It reads the whole file once: 50-60 ms for tiny.en and base q8_0,
    100 ms for base f16 (measured warm, 2-core AMD EPYC), about what hashing costs.

    Finite but wrong weights (a flipped bit in a weight, a corrupted token
    string) still pass: only a recorded content hash, as the model cache
    keeps, catches those.
    """

    def fail(reason: str) -> ModelError:
        return ModelError(f"{path} is not a usable whisper.cpp ggml model: {reason}")

    size = path.stat().st_size
    with path.open("rb") as f:
        ints = _int_reader(f, fail)
        (magic,) = ints(1)
        if magic != GGML_MAGIC:
            raise fail("wrong magic number (not a ggml file)")
        raw = ints(11)
        hp = Hparams(*raw[:10])
        problem = _hparams_problem(hp, raw[10])
        if problem is not None:
            raise fail(problem)
        weight_type = _FTYPE_WEIGHT_TYPE[raw[10] % _GGML_QNT_VERSION_FACTOR]

        mel_rows, mel_cols = ints(2)
        if (mel_rows, mel_cols) != (hp.n_mels, N_FFT // 2 + 1):
            raise fail(f"implausible header (mel filterbank {mel_rows}x{mel_cols})")
        raw_filters = f.read(4 * mel_rows * mel_cols)
        if len(raw_filters) != 4 * mel_rows * mel_cols:
            raise fail("the file ends early")
        filters = np.frombuffer(raw_filters, dtype="<f4")
        if not (np.isfinite(filters).all() and (filters >= 0).all()):
            raise fail("corrupt mel filterbank (negative or non-finite values)")

        (tokens,) = ints(1)
        if not 0 < tokens <= hp.n_vocab:
            raise fail(f"corrupt vocabulary ({tokens} tokens for n_vocab {hp.n_vocab})")
        for _ in range(tokens):
            (length,) = ints(1)
            if not 0 <= length < _MAX_TOKEN_BYTES:
                raise fail("corrupt vocabulary")
            f.seek(length, 1)

        _check_tensors(f, size, expected_tensors(hp, weight_type), ints, fail)


def _int_reader(
    f: io.BufferedReader, fail: Callable[[str], ModelError]
) -> Callable[[int], tuple[int, ...]]:
    def ints(count: int) -> tuple[int, ...]:
        raw = f.read(4 * count)
        if len(raw) != 4 * count:
            raise fail("the file ends early")
        return struct.unpack(f"<{count}i", raw)

    return ints


def _check_tensors(
    f: io.BufferedReader,
    size: int,
    expected: Mapping[str, TensorSpec],
    ints: Callable[[int], tuple[int, ...]],
    fail: Callable[[str], ModelError],
) -> None:
    seen: set[str] = set()
    buf = bytearray(_SCAN_BYTES)
    while f.tell() < size:
        start = f.tell()
        n_dims, name_length, tensor_type = ints(3)
        if not (1 <= n_dims <= 4 and 0 < name_length < 256):
            raise fail(f"corrupt tensor header at byte {start}")
        dims = ints(n_dims)
        raw_name = f.read(name_length)
        if len(raw_name) != name_length:
            raise fail("the file ends early")
        try:
            name = raw_name.decode("ascii")
        except UnicodeDecodeError:
            raise fail(f"corrupt tensor header at byte {start}") from None
        if tensor_type not in GGML_BLOCKS:
            raise fail(f"unknown tensor type {tensor_type}")
        spec = expected.get(name)
        if spec is None:
            raise fail(f"unexpected tensor {name!r} at byte {start}")
        if name in seen:
            raise fail(f"tensor {name!r} appears twice")
        seen.add(name)
        # whisper.cpp compares ne[0..3], where absent dimensions are 1.
        padded = (*dims, *(1,) * (4 - len(dims)))
        want = (*spec.dims, *(1,) * (4 - len(spec.dims)))
        if padded != want:
            raise fail(f"tensor {name!r} has dims {dims}, the header's hparams give {spec.dims}")
        if tensor_type != spec.ggml_type:
            raise fail(
                f"tensor {name!r} has ggml type {tensor_type}, whisper.cpp expects {spec.ggml_type}"
            )
        elements = int(np.prod(dims, dtype=np.int64))
        nbytes = ggml_nbytes(tensor_type, elements)
        end = f.tell() + nbytes
        if end > size:
            raise fail(f"the last tensor runs past the end ({end} > {size} bytes)")
        try:
            if _has_non_finite(f, tensor_type, nbytes, buf):
                raise fail(f"tensor {name!r} holds NaN or infinite values")
        except EOFError:
            raise fail("the file ends early") from None
        f.seek(end)
    missing = [name for name in expected if name not in seen]
    if missing:
        raise fail(f"{len(missing)} tensor(s) missing, the first {missing[0]!r}")
