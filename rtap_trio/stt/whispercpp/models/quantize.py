"""ggml's q8_0 quantisation, byte for byte as whisper.cpp's quantize tool does it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .ggml import Q8_0_BLOCK, Q8_0_DTYPE


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
