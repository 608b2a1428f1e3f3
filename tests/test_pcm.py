"""The one int16 <-> float32 conversion gives the very bits each place computed before."""

from __future__ import annotations

import numpy as np

from rtap_trio.audio.pcm import float_to_pcm, pcm_to_float

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)


def test_pcm_to_float_is_bit_exact_with_dividing_and_multiplying() -> None:
    # The preprocessor, Silero, the network source, the evaluation and the
    # benches divided by 32768.0; the front-end's level meter multiplied by 1/32768.
    converted = pcm_to_float(ALL_INT16)
    assert converted.dtype == np.float32
    divided = ALL_INT16.astype(np.float32) / 32768.0
    multiplied = ALL_INT16.astype(np.float32) * (1.0 / 32768.0)
    assert np.array_equal(converted.view(np.uint32), divided.view(np.uint32))
    assert np.array_equal(converted.view(np.uint32), multiplied.view(np.uint32))
    assert pcm_to_float(ALL_INT16.reshape(-1, 2)).shape == (32768, 2)  # stereo as it comes


def test_float_to_pcm_is_bit_exact_with_the_inline_conversion() -> None:
    rng = np.random.default_rng(17)
    edges = [-2.0, -1.0, -0.99999, -1e-9, -0.0, 0.0, 1e-9, 0.5, 32767 / 32768, 0.99999, 1.0, 2.0]
    for dtype in (np.float32, np.float64):
        audio = np.concatenate((np.array(edges), rng.uniform(-1.2, 1.2, 100_000))).astype(dtype)
        before = (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
        after = float_to_pcm(audio)
        assert after.dtype == np.int16
        assert np.array_equal(after, before)
        # The client's wire bytes: little-endian int16, as it wrote them.
        wire = (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
        assert float_to_pcm(audio).astype("<i2", copy=False).tobytes() == wire


def test_clipping_truncation_and_the_round_trip() -> None:
    audio = np.array([-2.0, -1.0, 1.0, 2.0, 0.5 / 32768, -0.5 / 32768, 1.5 / 32768], np.float32)
    assert float_to_pcm(audio).tolist() == [-32768, -32768, 32767, 32767, 0, 0, 1]
    assert np.array_equal(float_to_pcm(pcm_to_float(ALL_INT16)), ALL_INT16)
