"""One session's end-of-turn judgements: is the speaker done, asked at pauses.

The front-end asks (:meth:`TurnJudge.judge`) when a pause reaches
``turn.pause_ms``, and again at four times that while the pause lasts (once
the early transcription is back); this session's task runs each question on
the shared :class:`~rtap_trio.turn.TurnDetector` in a worker thread, before
the early transcription starts, and the front-end reads the answer on a later frame
(:class:`TurnQuestion`). One question runs at a time and the latest wins:
speech that resumes makes the question moot (:meth:`TurnJudge.cancel`). A
question costs ~10 ms of features and 50-70 ms of inference on one thread
(93-250 ms of wall time beside a busy STT engine, measured), so a pause costs
at most two; nothing runs per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trio

from ..items import Samples
from ..metrics import Metrics
from ..turn import TurnDetector, TurnPrediction

__all__ = ["TurnJudge", "TurnQuestion"]

#: int16 PCM to the float32 in [-1, 1] the detector takes
_PCM_SCALE = 1 / 32768


@dataclass(eq=False)
class TurnQuestion:
    """Whether the turn that ends with this audio is over; answered in the background."""

    samples: Samples
    #: set when answered or given up (speech resumed, the session ended)
    done: trio.Event = field(default_factory=trio.Event)
    prediction: TurnPrediction | None = None

    @property
    def complete(self) -> bool:
        """Answered, and judged over."""
        return self.prediction is not None and self.prediction.complete


class TurnJudge:
    """One session's questions to the shared end-of-turn detector, one at a time."""

    def __init__(self, detector: TurnDetector, *, sample_rate: int, metrics: Metrics) -> None:
        if sample_rate != 16_000:
            raise ValueError("the end-of-turn detector takes 16 kHz audio")
        self._detector = detector
        self._window = detector.window_samples
        self._pending: TurnQuestion | None = None
        self._wakeup = trio.Event()
        self._outcomes = metrics.turn_judgements
        self._time = metrics.turn_judgement_time

    def judge(self, samples: Samples) -> TurnQuestion:
        """Ask about the turn that ends with ``samples`` (replacing a question not
        yet started). Never blocks."""
        self.cancel()
        # Only the detector's window counts (its features see no more).
        question = TurnQuestion(samples[-self._window :] if self._window else samples)
        self._pending = question
        self._wakeup.set()
        return question

    def cancel(self) -> None:
        """Speech resumed: a question not started is dropped (one running
        finishes in its thread, which cannot be interrupted, and is ignored)."""
        if self._pending is not None:
            self._pending.done.set()
            self._pending = None

    async def run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                question, self._pending = self._pending, None
                if question is None or question.done.is_set():
                    continue
                try:
                    audio = question.samples.astype(np.float32) * _PCM_SCALE
                    prediction = await trio.to_thread.run_sync(self._detector.predict, audio)
                    question.prediction = prediction
                    self._outcomes.labels("complete" if prediction.complete else "incomplete").inc()
                    self._time.observe(prediction.elapsed_ms / 1000)
                finally:
                    question.done.set()
        finally:
            self.cancel()
