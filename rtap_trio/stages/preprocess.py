"""Per-utterance clean-up before STT: high-pass (DC and rumble) and peak normalisation.

It runs once per utterance, not per frame, so it costs the live path nothing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..buffers import Samples
from ..settings import PreprocessSettings

__all__ = ["prepare_for_stt"]

Float32 = npt.NDArray[np.float32]


def prepare_for_stt(samples: Samples, sample_rate: int, settings: PreprocessSettings) -> Float32:
    """int16 PCM to the float32 [-1, 1] whisper.cpp wants, filtered and levelled."""
    audio = samples.astype(np.float32) / 32768.0
    if audio.size == 0:
        return audio
    if settings.highpass_hz > 0:
        audio = _highpass(audio, settings.highpass_hz, sample_rate)
    if settings.normalize:
        peak = float(np.max(np.abs(audio)))
        if peak > 1e-6:
            target = 10 ** (settings.target_peak_dbfs / 20)
            gain = min(target / peak, 10 ** (settings.max_gain_db / 20))
            audio = audio * np.float32(gain)
    clipped: Float32 = np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
    return clipped


def _highpass(audio: Float32, cutoff_hz: float, sample_rate: int) -> Float32:
    # Subtracting a moving average is a cheap linear-phase high-pass: vectorised,
    # no per-sample Python loop and no scipy at run time.
    window = max(1, int(sample_rate / cutoff_hz))
    n = audio.size
    sums = np.concatenate(([0.0], np.cumsum(audio, dtype=np.float64)))
    centre = np.arange(n)
    lo = np.clip(centre - window // 2, 0, n)
    hi = np.clip(centre + window - window // 2, 0, n)
    low = (sums[hi] - sums[lo]) / (hi - lo)
    filtered: Float32 = (audio - low).astype(np.float32)
    return filtered
