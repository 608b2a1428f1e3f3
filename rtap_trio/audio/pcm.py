"""int16 PCM and float32 audio in [-1, 1]: the one conversion, both ways.

Sources deliver int16 PCM (what the front-end, the VADs and the wake word
engine hear); whisper.cpp, Silero, soxr and the network's ``pcm_f32le`` speak
float32 in [-1, 1]. Full scale is 32768 both ways, so that a round trip gives
every int16 sample back unchanged. A module of its own because every layer
converts (sources, stages, engines, clients, benches) and each must get the
same samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..items import Float32, Samples

__all__ = ["float_to_pcm", "pcm_to_float"]

#: int16 full scale: -32768 is -1.0; 32767 is the largest sample, just under 1.0
_FULL_SCALE = 32768
#: the largest float that a sample represents (32767 / 32768)
_MAX_FLOAT = (_FULL_SCALE - 1) / _FULL_SCALE


def pcm_to_float(samples: npt.NDArray[np.int16]) -> Float32:
    """int16 samples (any shape) as float32 with full scale at 1.0.

    Exact: every int16 value times 2**-15 is a float32, so multiplying and
    dividing by 32768 give the same bits (``tests/test_pcm.py`` checks all
    65 536).
    """
    return samples.astype(np.float32) * (1.0 / _FULL_SCALE)


def float_to_pcm(audio: npt.NDArray[np.floating[Any]]) -> Samples:
    """Float audio in [-1, 1] (any shape) as int16: clipped to [-1, 32767/32768],
    scaled by 32768 and truncated towards zero, in ``audio``'s own precision.

    Truncation, not rounding, keeps the round trip exact and is what every
    source has always done; beyond full scale is clipping anyway.
    """
    pcm: Samples = (np.clip(audio, -1.0, _MAX_FLOAT) * _FULL_SCALE).astype(np.int16)
    return pcm
