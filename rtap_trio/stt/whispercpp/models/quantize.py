"""ggml's q8_0 and q5_0 quantisations, byte for byte as whisper.cpp's quantize tool does them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from .ggml import GGML_Q5_0, GGML_Q8_0, Q5_0_BLOCK, Q5_0_DTYPE, Q8_0_BLOCK, Q8_0_DTYPE


def quantize_q8_0(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.void]:
    """ggml's reference q8_0 of ``rows`` (each a multiple of 32 long).

    Per block of 32: scale d = max|x| / 127 stored as f16, and each weight as
    round(x / d) in int8, rounding halves away from zero as C's roundf does
    (numpy's round would go to even). The scale divides in f32 before its f16
    rounding, as quantize_row_q8_0_ref does, so the bytes match whisper.cpp's
    own quantize tool.
    """
    blocks = np.asarray(rows, dtype=np.float32).reshape(-1, Q8_0_BLOCK)
    amax = np.abs(blocks).max(axis=1)
    d = amax / np.float32(127.0)
    with np.errstate(divide="ignore"):
        inverse = np.where(d > 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    scaled = blocks * inverse[:, None]
    rounded = np.rint(scaled)
    whole = np.trunc(scaled)
    halves = np.abs(scaled - whole) == np.float32(0.5)
    rounded[halves] = whole[halves] + np.sign(scaled[halves])
    out = np.empty(blocks.shape[0], dtype=Q8_0_DTYPE)
    out["d"] = d.astype(np.float16)
    out["qs"] = rounded.astype(np.int8)
    return out


def quantize_q5_0(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.void]:
    """ggml's reference q5_0 of ``rows`` (each a multiple of 32 long).

    Per block of 32: the weight of largest magnitude (the first, on a tie) sets
    the scale d = that weight / -16, stored as f16, so it maps to -16 exactly;
    each weight becomes min(31, trunc(x / d + 16.5)), 0..31, in five bits: the
    low four packed two to a byte (weight j below weight j + 16), the fifth bits
    in one uint32. Multiplying by 1 / d in f32, as quantize_row_q5_0_ref does,
    keeps the bytes whisper.cpp's quantize tool writes.
    """
    blocks = np.asarray(rows, dtype=np.float32).reshape(-1, Q5_0_BLOCK)
    largest = np.abs(blocks).argmax(axis=1)
    d = blocks[np.arange(blocks.shape[0]), largest] / np.float32(-16.0)
    with np.errstate(divide="ignore"):
        inverse = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    # x / d lies in [-16, 16], so x / d + 16.5 is positive: truncating floors it.
    levels = np.trunc(blocks * inverse[:, None] + np.float32(16.5))
    levels = np.minimum(levels, 31).astype(np.uint32)
    half = Q5_0_BLOCK // 2
    out = np.empty(blocks.shape[0], dtype=Q5_0_DTYPE)
    out["d"] = d.astype(np.float16)
    out["qs"] = (levels[:, :half] & 0x0F) | ((levels[:, half:] & 0x0F) << 4)
    out["qh"] = (((levels >> 4) & 1) << np.arange(Q5_0_BLOCK, dtype=np.uint32)).sum(
        axis=1, dtype=np.uint32
    )
    return out


#: The quantiser of each quantised ggml type the converter writes.
QUANTIZERS: Mapping[int, Callable[[npt.NDArray[np.float32]], npt.NDArray[np.void]]] = (
    MappingProxyType({GGML_Q8_0: quantize_q8_0, GGML_Q5_0: quantize_q5_0})
)
