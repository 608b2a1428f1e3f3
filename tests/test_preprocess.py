"""The per-utterance clean-up: high-pass by a centred moving average, then peak levelling."""

from __future__ import annotations

import numpy as np
import pytest

from rtap_trio.settings import PreprocessSettings
from rtap_trio.stages.preprocess import _highpass, prepare_for_stt

RATE = 16_000


def _moving_average_by_definition(audio: np.ndarray, window: int) -> np.ndarray:
    # Sample i averages [i - window // 2, i + window - window // 2), clipped to the signal.
    half = window // 2
    n = audio.size
    return np.array([audio[max(0, i - half) : min(n, i + window - half)].mean() for i in range(n)])


@pytest.mark.parametrize("n", [1, 7, 99, 100, 101, 200, 201, 1000])
@pytest.mark.parametrize("cutoff_hz", [80.0, 1000.0])
def test_highpass_subtracts_the_centred_moving_average_edges_included(
    n: int, cutoff_hz: float
) -> None:
    audio = (np.random.default_rng(n).standard_normal(n) * 0.1).astype(np.float32)
    window = int(RATE / cutoff_hz)
    expected = audio - _moving_average_by_definition(audio.astype(np.float64), window)
    np.testing.assert_allclose(_highpass(audio, cutoff_hz, RATE), expected, atol=1e-6)


def test_highpass_removes_dc_and_keeps_speech_band() -> None:
    t = np.arange(RATE) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 1000 * t)
    out = _highpass((tone + 0.2).astype(np.float32), 80.0, RATE)
    middle = slice(RATE // 4, 3 * RATE // 4)
    assert abs(float(out[middle].mean())) < 1e-3
    # A 12.5 ms boxcar leaks about 2.5 % of a 1 kHz tone through its sidelobe.
    assert np.std(out[middle]) == pytest.approx(np.std(tone[middle]), rel=0.05)


def test_prepare_levels_quiet_speech_to_the_target_peak_within_the_gain_cap() -> None:
    quiet = (np.sin(np.arange(8000) / 5) * 1000).astype(np.int16)  # about -30 dBFS
    out = prepare_for_stt(quiet, RATE, PreprocessSettings(highpass_hz=0))
    assert out.dtype == np.float32
    assert float(np.max(np.abs(out))) == pytest.approx(10 ** (-3 / 20), rel=1e-3)
    silence = prepare_for_stt(np.zeros(800, np.int16), RATE, PreprocessSettings())
    assert not silence.any()
