"""What the endpointer will know of an end-of-turn detector.

A :class:`TurnDetector` is loaded once and shared by every session: it holds no
per-stream state (the audio of the turn is passed to each call), and
onnxruntime's ``InferenceSession.run`` may be called from several threads.
:meth:`TurnDetector.predict` blocks for tens of milliseconds, so it is meant to
run in a worker thread (``trio.to_thread.run_sync``), at pauses, never per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["NoTurnDetector", "TurnDetector", "TurnPrediction"]


@dataclass(frozen=True, slots=True)
class TurnPrediction:
    """One judgement of whether the turn that ends with the audio given is over."""

    #: the model's probability that the speaker is done, 0..1
    probability: float
    #: ``probability`` above the detector's threshold
    complete: bool
    #: the log-mel features, and the model run, in milliseconds of wall time
    features_ms: float = 0.0
    inference_ms: float = 0.0

    @property
    def elapsed_ms(self) -> float:
        return self.features_ms + self.inference_ms


class TurnDetector(Protocol):
    """A loaded detector, shared by sessions."""

    #: ``none`` or ``smart_turn``: what ``turn.engine`` names
    @property
    def name(self) -> str: ...

    #: False for ``none``: the endpointer then never asks, and the silence
    #: timer alone ends utterances, exactly as before the detector
    @property
    def active(self) -> bool: ...

    #: the longest audio that counts, in samples at 16 kHz (older audio is ignored)
    @property
    def window_samples(self) -> int: ...

    def predict(self, audio: npt.NDArray[np.float32]) -> TurnPrediction:
        """Whether the turn in ``audio`` (float32 mono 16 kHz in [-1, 1], the
        turn so far including the pause that prompted the question) is over.
        Blocking."""
        ...


class NoTurnDetector:
    """``turn.engine: none``: no model, no opinion."""

    name = "none"
    active = False
    window_samples = 0

    def predict(self, audio: npt.NDArray[np.float32]) -> TurnPrediction:
        """Never "complete": an endpointer that asks anyway ends no utterance
        sooner (it should not ask: :attr:`active` is False)."""
        return TurnPrediction(probability=0.0, complete=False)
