"""Converting a CTranslate2 Whisper model to whisper.cpp's ggml file.

The output has exactly the size of the official ggml files (tiny.en f16:
77,704,715 bytes; base f16: 147,951,465 bytes), and for q8_0 and q5_0 the bytes of
whisper.cpp's own quantize tool. Only numpy is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rtap_trio.errors import ModelError

from .atomic import atomic_output
from .ct2 import Ct2Model, Ct2Source, open_ct2
from .ggml import GGML_F16, HPARAM_FTYPE, FType
from .mel import mel_filters
from .plan import TensorPlan, hparams_of, plan_tensors
from .quantize import QUANTIZERS
from .registry import expected_size, find_vocabulary, known_model, require
from .vocabulary import VocabularySource, encode_vocabulary, load_tokens

log = logging.getLogger(__name__)

# Copying in 1 MiB steps keeps joining split model parts flat in memory.
_COPY_CHUNK = 1 << 20
# Rows of a tensor converted and written per step.
_BLOCK_BYTES = 4 << 20


def _write_tensor(out: BinaryIO, ct2: Ct2Model, plan: TensorPlan) -> None:
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
    want = np.dtype("<f2" if plan.ggml_type == GGML_F16 else "<f4")
    bf16 = ct2.is_bf16(plan.source)
    quantize = QUANTIZERS.get(plan.ggml_type)
    for start in range(first, last, rows_per_block):
        stop = min(start + rows_per_block, last)
        block = src[start:stop]
        if bf16:
            # bf16 is the top half of an f32; numpy has no bf16 dtype.
            block = (block.astype(np.uint32) << 16).view(np.float32)
        if quantize is not None:
            # whisper-quantize works from the f16 file: quantise f16 values,
            # so an f32 source gives the same bytes as an f16 one.
            f16 = block.astype("<f2", copy=False)
            out.write(quantize(f16.astype(np.float32)).data)
        else:
            # copy=False: an f16 -> f16 block is written straight from the mapping.
            out.write(np.ascontiguousarray(block.astype(want, copy=False)).data)
        ct2.release()


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

    ``ftype="q8_0"`` (or ``"q5_0"``) writes what whisper.cpp's ``quantize``
    tool makes of the f16 file: 2-D weights in q8_0 (q5_0), the rest as in f16.

    ``ftype="f32"`` writes the layout convert-pt-to-ggml.py writes with
    ``use-f32``, but whisper.cpp 1.8.5's CPU backend cannot run it: its 1-D
    convolution goes through an f16-only im2col, and the process dies on
    ``GGML_ASSERT(src0->type == GGML_TYPE_F16)`` (an abort, not an exception)
    at the first transcription. Only f16, q8_0 and q5_0 are used for whisper.cpp.
    """
    if ftype not in HPARAM_FTYPE:
        raise ModelError(f"unsupported ggml ftype {ftype!r}; use one of {', '.join(HPARAM_FTYPE)}")
    out_path = Path(out_path)
    with open_ct2(ct2_model_bin) as (buf, label):
        ct2 = Ct2Model(buf, label)
        hp = hparams_of(ct2)
        plans = plan_tensors(ct2, hp, ftype)
        is_path = isinstance(vocabulary, (str, os.PathLike))
        vocab_label = str(vocabulary) if is_path else "<token list>"
        tokens = encode_vocabulary(load_tokens(vocabulary), vocab_label)
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
    plans: Sequence[TensorPlan],
    ct2: Ct2Model,
    expected: int,
) -> None:
    with atomic_output(out_path) as out:
        out.write(header)
        out.write(tokens)
        for plan in plans:
            out.write(plan.header())
            _write_tensor(out, ct2, plan)
        written = out.tell()
        if written != expected:
            raise ModelError(f"{out_path}: wrote {written} bytes, expected {expected}")


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

    Does no locking and records no content hash; :func:`resolve_whisper_model`
    is the concurrency-safe entry that also records one for the cache.
    """
    model = known_model(name)
    expected = expected_size(model, ftype)
    parts = [require(part, name) for part in model.model_parts]
    vocabulary = find_vocabulary(model)
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
