"""Smart Turn's input: a Whisper log-mel spectrogram of the last 8 s of a turn, in numpy.

What the model was trained on (pipecat-ai/smart-turn ``smart_turn/train.py``, and the
inference side in the ``pipecat-ai`` 1.14.0 wheel,
``pipecat/audio/turn/smart_turn/local_smart_turn_v3.py``): 16 kHz mono audio cut to its
**last** 8 s, or padded with zeros **before** it up to 8 s (128 000 samples), so that
the end of the turn always sits at the end of the window; then Hugging Face's
``WhisperFeatureExtractor`` with ``do_normalize=True``:

1. the waveform is scaled to zero mean and unit variance over the whole window,
   padding included (``(x - mean) / sqrt(var + 1e-7)``);
2. a centred STFT (reflect padding of 200 samples each side), 400-sample periodic
   Hann window, hop 160: 801 frames; the power ``|X|^2``;
3. an 80-band Slaney mel filterbank (0-8 kHz, area-normalised, as librosa's
   default and Whisper's ``mel_filters.npz``);
4. ``log10`` of ``max(mel, 1e-10)``, the last frame dropped (800 frames, 10 ms
   each), values clamped to at most 8 below the window's maximum, then
   ``(x + 4) / 4``.

The result is ``(80, 800)`` float32, roughly in ``[-1, 1.5]``. This module is
RTAP's own implementation of those steps; ``tests/test_turn.py`` checks it
against faster-whisper's independent numpy port of Whisper's front end and the
filterbank against :func:`rtap_trio.stt.whispercpp.models.mel_filters`.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "N_FRAMES",
    "N_MELS",
    "SAMPLE_RATE",
    "WINDOW_SAMPLES",
    "Features",
    "LogMel",
    "fit_window",
    "log_mel",
    "mel_filterbank",
]

SAMPLE_RATE: Final = 16_000
#: The model sees 8 s: the end of the turn, left-padded with silence.
WINDOW_SAMPLES: Final = 8 * SAMPLE_RATE
N_FFT: Final = 400
HOP: Final = 160
N_MELS: Final = 80
#: 10 ms frames in the window (the STFT's 801st, centred on the last sample, is dropped).
N_FRAMES: Final = WINDOW_SAMPLES // HOP
_NORM_EPS: Final = 1e-7
_LOG_FLOOR: Final = 1e-10
_DYNAMIC_RANGE: Final = 8.0

Audio = npt.NDArray[np.float32]
Features = npt.NDArray[np.float32]


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Slaney's scale: 3 mels per 200 Hz up to 1 kHz (15 mels), logarithmic
    # above it with 27 mels per factor 6.4.
    return np.where(
        hz < 1000.0,
        hz * 3.0 / 200.0,
        15.0 + np.log(np.maximum(hz, 1000.0) / 1000.0) * (27.0 / np.log(6.4)),
    )


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where(
        mel < 15.0,
        mel * 200.0 / 3.0,
        1000.0 * np.exp((np.maximum(mel, 15.0) - 15.0) * (np.log(6.4) / 27.0)),
    )


def mel_filterbank(n_mels: int = N_MELS) -> npt.NDArray[np.float64]:
    """Triangular Slaney mel filters over 0-8 kHz, ``(n_mels, N_FFT // 2 + 1)``.

    Each triangle rises from the centre frequency of the band below to its own
    and falls to the one above; its height is ``2 / width`` so that every band
    has the same area (Slaney normalisation).
    """
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges_mel = np.linspace(0.0, float(_hz_to_mel(np.array(SAMPLE_RATE / 2.0))), n_mels + 2)
    edges = _mel_to_hz(edges_mel)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    filters: npt.NDArray[np.float64] = triangles * (2.0 / (upper - lower))
    return filters


def _periodic_hann(length: int) -> npt.NDArray[np.float64]:
    # Periodic (not symmetric) Hann, as torch.hann_window and Whisper use.
    window: npt.NDArray[np.float64] = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
    return window


def fit_window(audio: npt.ArrayLike) -> Audio:
    """The last 8 s of ``audio`` (16 kHz mono), zero-padded at the start if shorter."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio (one dimension), got shape {samples.shape}")
    if samples.size >= WINDOW_SAMPLES:
        return np.ascontiguousarray(samples[-WINDOW_SAMPLES:])
    window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    window[WINDOW_SAMPLES - samples.size :] = samples
    return window


class LogMel:
    """The feature extractor, with its window and filterbank computed once."""

    def __init__(self) -> None:
        self._window = _periodic_hann(N_FFT)
        # Each filter's non-zero run of FFT bins, and its weights there. The mel
        # step is summed band by band instead of one (80, 201) @ (201, 800)
        # product: that product goes to OpenBLAS, which splits it over every
        # core and then waits for a busy one (measured on this 2-core machine
        # with the other core loaded: 21 ms, 1.1 ms on one thread; the bands
        # take 2.4 ms with the same load, on one thread whatever the library).
        filters = mel_filterbank()
        self._bands: list[tuple[int, int, npt.NDArray[np.float64]]] = []
        for weights in filters:
            nonzero = np.flatnonzero(weights)
            low, high = int(nonzero[0]), int(nonzero[-1]) + 1
            self._bands.append((low, high, weights[low:high, np.newaxis].copy()))

    def __call__(self, audio: npt.ArrayLike) -> Features:
        """Features of the turn ``audio`` ends with: ``(N_MELS, N_FRAMES)`` float32."""
        window = fit_window(audio)
        # Normalised in float32, as the reference does before its float64 STFT.
        normalised = (window - window.mean()) / np.sqrt(window.var() + np.float32(_NORM_EPS))
        padded = np.pad(normalised.astype(np.float64), N_FFT // 2, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
        spectrum = np.fft.rfft(frames * self._window, axis=-1)
        # (201 bins, 800 frames): the STFT's last frame is not used.
        power = np.ascontiguousarray((spectrum.real**2 + spectrum.imag**2)[:-1].T)
        mel = np.empty((N_MELS, N_FRAMES), dtype=np.float64)
        for band, (low, high, weights) in enumerate(self._bands):
            mel[band] = (weights * power[low:high]).sum(axis=0)
        log_spec = np.log10(np.maximum(mel, _LOG_FLOOR))
        log_spec = np.maximum(log_spec, log_spec.max() - _DYNAMIC_RANGE)
        features: Features = ((log_spec + 4.0) / 4.0).astype(np.float32)
        return features


def log_mel(audio: npt.ArrayLike) -> Features:
    """One-off :class:`LogMel` (a detector keeps its own, built once)."""
    return LogMel()(audio)
