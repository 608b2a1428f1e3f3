"""pipecat's Smart Turn v3.2 (CPU, int8 ONNX) on onnxruntime: is the speaker done?

The model is a Whisper-tiny encoder with an attention-pooled classifier, trained
on 8 s windows that end where a turn is judged (pipecat-ai/smart-turn,
``smart_turn/train.py``). It reads prosody (the fall of the voice, the
lengthened last syllable), not words. Its one input, ``input_features``, is
``(batch, 80, 800)`` float32, the log-mel spectrogram of :mod:`.features`; its
one output, ``logits``, is ``(batch, 1)``: despite the name already a
probability (a sigmoid ends the graph) that the turn is complete.

Cost per call, one intra-op thread, on this 2-core machine (AMD EPYC, 2026-12-02;
a 3.4 s turn, but the window is always 8 s so the length does not matter; p50/p95
of 40 calls). CPU time is the same whatever else runs; wall time is not:

=====================================  ==================  ===================
                                       features (numpy)    inference (ORT)
=====================================  ==================  ===================
CPU time                               9.5 / 10 ms         69.5 / 71 ms
wall, machine idle                     9.5 / 10 ms         69.6 / 72 ms
wall, + 1 busy process (load ~3.5)     9.5 / 17.5 ms       69.7 / 143 ms
wall, + 2 busy processes (load ~4.5)   8.6 / 17 ms         93 / 140 ms
wall, + 1 busy, others' tests running  25 / 43 ms          212 / 294 ms
=====================================  ==================  ===================

Loading takes 0.28-0.36 s (the sha256 of the file, the session with its graph
optimisations, and one warm-up run) and adds about 50 MB of resident memory
(onnxruntime's import 20 MB more, shared with Silero when both are used);
without the memory arena it was 77 MB, not less.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from ..onnx_runtime import import_onnxruntime
from .base import TurnPrediction
from .features import N_FRAMES, N_MELS, WINDOW_SAMPLES, LogMel
from .model import check_model_file

__all__ = ["SmartTurnDetector"]

_INPUT: Final = "input_features"


class SmartTurnDetector:
    """The loaded model; ``threshold``: the probability above which a turn is complete.

    ``verify_digest`` checks the file against the pinned sha256 (the default
    model in the cache); a model file a user names is loaded as it is, but must
    still take ``input_features`` of ``(batch, 80, 800)``.
    """

    name = "smart_turn"
    active = True
    window_samples = WINDOW_SAMPLES

    def __init__(self, model_path: Path, threshold: float, *, verify_digest: bool = True) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold {threshold} is outside (0, 1)")
        check_model_file(model_path, verify_digest=verify_digest)
        self.model_path: Final = model_path
        self.threshold: Final = threshold
        try:
            onnxruntime = import_onnxruntime()

            options = onnxruntime.SessionOptions()
            # One call is ~50 ms of one core at a pause; more threads would
            # take the cores whisper.cpp is transcribing the same turn on.
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            # The memory pattern pre-plans every run's activations in one block:
            # 10 MB more resident for no speed (2026-12-04, one thread, ten runs:
            # 75.6 MB for import, session and runs with it, 65.8 without; 102
            # and 98 ms a run). The arena stays: without it runs took 33 MB more.
            options.enable_mem_pattern = False
            self._session: Any = onnxruntime.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except ImportError as exc:
            raise ModelError(f"turn.engine smart_turn needs onnxruntime: {exc}") from exc
        except Exception as exc:  # onnxruntime raises its own unexported types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"Smart Turn model {model_path} could not be loaded: {first}") from exc
        inputs = self._session.get_inputs()
        if (
            len(inputs) != 1
            or inputs[0].name != _INPUT
            or list(inputs[0].shape[1:])
            != [
                N_MELS,
                N_FRAMES,
            ]
        ):
            found = [(i.name, i.shape) for i in inputs]
            raise ModelError(
                f"{model_path} is not a Smart Turn v3 model: inputs {found}, "
                f"expected {_INPUT} (batch, {N_MELS}, {N_FRAMES})"
            )
        self._features = LogMel()
        # One run at load: a model that cannot run fails at startup, not at the
        # first pause, and the first run's allocations (80 ms against 70 for a
        # later one, measured) are not paid by the first turn.
        self.predict(np.zeros(0, dtype=np.float32))

    def predict(self, audio: npt.NDArray[np.float32]) -> TurnPrediction:
        """Judge the turn that ``audio`` ends with (its last 8 s count). Blocking."""
        started = time.perf_counter()
        features = self._features(audio)
        computed = time.perf_counter()
        outputs = self._session.run(None, {_INPUT: features[np.newaxis]})
        done = time.perf_counter()
        probability = float(np.asarray(outputs[0]).reshape(-1)[0])
        return TurnPrediction(
            probability=probability,
            complete=probability > self.threshold,
            features_ms=(computed - started) * 1000.0,
            inference_ms=(done - computed) * 1000.0,
        )
