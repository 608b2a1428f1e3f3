"""Whisper's mel filterbank, as stored in every ggml file's header."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Whisper's front end is fixed: 16 kHz audio, 25 ms (400-sample) FFT window,
# so the filterbank has N_FFT // 2 + 1 = 201 columns.
SAMPLE_RATE = 16_000
N_FFT = 400


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


def mel_filters(n_mels: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> npt.NDArray[np.float32]:
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
