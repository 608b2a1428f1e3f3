"""When the front-end asks the end-of-turn detector, and what its answer does.

A pause of ``turn.pause_ms`` is a question to the detector (:mod:`.turn`),
asked again at four times that (400 ms by default) while the pause
lasts; the early transcription waits for the first answer, and the second
question for the early transcript (one after the other, not side by side on
the cores). Once both have answered: words that clearly go on ("and", a
comma) hold the utterance open as before; otherwise a turn judged complete
ends the utterance at once (its early transcript becomes the final), and one
judged incomplete is held open up to ``vad.max_hangover_ms``. The answer
acts through the endpointer's hangover for this pause; nothing here cuts
audio or ends an utterance itself.
"""

from __future__ import annotations

from collections.abc import Callable

from ..items import EarlyTranscript, Samples
from .endpointer import Endpointer
from .sentence import SentenceState, sentence_state
from .turn import TurnJudge, TurnQuestion

__all__ = ["TurnTaking"]


class TurnTaking:
    """One utterance's pauses as questions to the detector, and their answers."""

    def __init__(
        self,
        judge: TurnJudge,
        endpointer: Endpointer,
        *,
        pause_frames: int,
        max_hangover_frames: int,
        sentence_endpointing: bool,
    ) -> None:
        self._judge = judge
        self._endpointer = endpointer
        #: the pause lengths (frames) at which the turn is judged
        # Asked again only at 4x (600 ms, now 400: no more turns of the bench's
        # sets cut in six runs): at 300 ms unfinished thoughts drifted
        # towards "complete" ("I would like to order," 0.37-0.48) and were cut.
        self._at = (pause_frames, 4 * pause_frames)
        self._max_hangover = max_hangover_frames
        self._sentence_endpointing = sentence_endpointing
        self._question: TurnQuestion | None = None
        self._decided = False
        #: how many of the pause lengths in _at the detector was asked at
        self._asked = 0

    @property
    def pending(self) -> bool:
        """The detector was asked about this pause and has not answered yet."""
        question = self._question
        return question is not None and not question.done.is_set()

    def on_pause(
        self, silence: int, early: EarlyTranscript | None, audio: Callable[[int], Samples]
    ) -> None:
        """A frame of the pause (``silence`` frames so far): ask when a pause
        length is reached; ``audio(stop)`` is the utterance up to frame ``stop``."""
        # The second question waits for an early transcription still running:
        # the two side by side slowed it (frontend.py).
        if (
            self._asked < len(self._at)
            and silence >= self._at[self._asked]
            and (self._asked == 0 or early is None or early.done.is_set())
        ):
            self._asked += 1
            self._ask(silence, audio)

    def _ask(self, silence: int, audio: Callable[[int], Samples]) -> None:
        """The pause reached a length at which the detector is asked (again,
        unless it has already said the turn is over)."""
        question = self._question
        if question is not None and (not question.done.is_set() or question.complete):
            return  # still thinking, or already done
        if not self._endpointer.long_enough:
            # A blip too short to keep cannot be a finished turn: ended, it
            # would be discarded, and the speech after the pause cut from it
            # (the timer alone merges them).
            return
        last_voiced = self._endpointer.last_voiced_frame
        self._question = self._judge.judge(audio(last_voiced + 1 + silence))
        self._decided = False
        # Held while the detector thinks (up to vad.max_hangover_ms): on a busy
        # machine its answer (50-70 ms idle) took longer than the rest of the
        # hangover, and the timer then ended turns broken off at a comma that
        # the detector would have held (the quick bench's turn_taking, cut 1 of
        # 2 with three test workers on two cores). Late beats cut.
        self._endpointer.set_pause_hangover(self._max_hangover)

    def act(self, silence: int, early: EarlyTranscript | None, *, early_due: bool = False) -> None:
        """End or hold the utterance once the detector (and the early transcript,
        when there is one) have answered; ``early_due``: this pause's early
        transcription has not started yet, and will."""
        question = self._question
        if question is None or self._decided or not question.done.is_set():
            return
        if not question.complete:
            # Held at once: the words can only hold it longer, never end it.
            self._decided = True
            self._endpointer.set_pause_hangover(self._max_hangover)
            return
        if early_due or (early is not None and not early.done.is_set()):
            # Its words may yet say the sentence goes on; the timer as before.
            self._endpointer.default_pause_hangover()
            return
        self._decided = True
        words = early.result.text if early is not None and early.result is not None else ""
        if self._sentence_endpointing and sentence_state(words) is SentenceState.GOES_ON:
            return  # held open by the words (set where they were read)
        self._endpointer.set_pause_hangover(silence)  # ends on this frame

    def forget(self) -> None:
        """Speech resumed or the utterance ended: the question is moot."""
        if self._question is not None:
            self._judge.cancel()
        self._question = None
        self._decided = False
        self._asked = 0
