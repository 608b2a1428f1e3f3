"""Early transcription: the utterance so far, transcribed in a pause.

After ``vad.early_ms`` of a pause the audio up to it is transcribed while the
hangover runs: if the pause becomes the end, that transcript is the final
(its audio is the utterance's), and speech that resumes makes it stale. Its
words also move the end (``vad.sentence_endpointing``): a sentence that ended
shortens the hangover to ``vad.min_hangover_ms``, words that clearly go on
("and", a comma) hold it up to ``vad.max_hangover_ms``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..items import EarlyTranscript, Samples
from .endpointer import Endpointer
from .sentence import SentenceState, sentence_state
from .speculative import SpeculativeTranscriber

__all__ = ["EarlyTranscription"]


class EarlyTranscription:
    """One session's early transcript of the current pause, and what its words say."""

    def __init__(
        self,
        transcriber: SpeculativeTranscriber,
        endpointer: Endpointer,
        *,
        early_frames: int,
        min_hangover_frames: int,
        max_hangover_frames: int,
        sentence_endpointing: bool,
    ) -> None:
        self._transcriber = transcriber
        self._endpointer = endpointer
        self._early_frames = early_frames
        self._min_hangover = min_hangover_frames
        self._max_hangover = max_hangover_frames
        self._sentence_endpointing = sentence_endpointing
        #: this pause's early transcript (running or done); None before it starts
        self.current: EarlyTranscript | None = None
        #: its words have moved the hangover already
        self._judged = False

    def on_pause(
        self,
        silence: int,
        *,
        turn_pending: bool,
        audio: Callable[[int], Samples],
        language: str | None,
    ) -> None:
        """A frame of the pause (``silence`` frames so far); ``audio(stop)`` is
        the utterance up to frame ``stop``; ``turn_pending``: the end-of-turn
        detector has not answered this pause's question yet."""
        early = self.current
        # A blip too short to keep (it would be discarded if the pause
        # held) is not worth ~0.9 s of tiny.en that a partial then waits behind.
        # It starts once the detector has answered this pause's question:
        # beside the detector's inference, whisper.cpp's two threads on two
        # cores wait for each other at every step, and the early transcript
        # took 423-699 ms instead of 339-356 (pc2's latency bench, partials
        # off, 2026-12-03); in turn it starts ~90 ms later, on the same
        # audio as before (vad.early_ms of the pause, not all of it so far).
        if (
            silence >= self._early_frames
            and early is None
            and self._endpointer.long_enough
            and not turn_pending
        ):
            last_voiced = self._endpointer.last_voiced_frame
            self.current = self._transcriber.start(
                last_voiced, audio(last_voiced + 1 + self._early_frames), language
            )
        elif (
            early is not None
            and self._sentence_endpointing
            and not self._judged
            and early.done.is_set()
            and early.result is not None
        ):
            self._judged = True
            state = sentence_state(early.result.text)
            if state is SentenceState.ENDED and not turn_pending:
                self._endpointer.set_pause_hangover(self._min_hangover)
            elif state is SentenceState.GOES_ON:
                self._endpointer.set_pause_hangover(self._max_hangover)

    def speech_resumed(self) -> None:
        """The early transcript is stale: cancelled."""
        if self.current is not None:
            self._transcriber.cancel()
            self.current = None

    def take(self, last_voiced_frame: int) -> EarlyTranscript | None:
        """The utterance ended after ``last_voiced_frame``: its early transcript,
        if it heard all of it (None otherwise); the next pause starts afresh."""
        early, self.current = self.current, None
        self._judged = False
        if early is not None and early.last_voiced_frame != last_voiced_frame:
            return None  # it heard less than the utterance holds
        return early

    def reset(self) -> None:
        self.current = None
        self._judged = False
