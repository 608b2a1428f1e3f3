"""Early transcription: the utterance so far, transcribed in its trailing silence.

The hangover (600 ms of silence before an utterance ends) is dead time for
the speaker. When the front-end has seen ``vad.early_ms`` of it, it hands the
utterance so far to this session's :class:`EarlyTranscriber`, which
transcribes it speculatively on the shared backend: after every final, on an
engine free at once, given up when a final needs the engine. If the silence
then holds, the utterance ends with exactly that audio and its transcript is
this result: nothing is transcribed twice. If speech resumes, the early
transcription is cancelled and forgotten.

What the early words say also moves the end (sentence-aware endpointing):
:func:`sentence_state` reads whether they end a sentence ("... today?") or
clearly go on ("... and", "... the", a trailing comma).
"""

from __future__ import annotations

import enum
import re

import trio

from ..errors import SttSkippedError, SttTimeoutError
from ..items import EarlyTranscript, Samples
from ..session import SessionContext
from ..settings import PreprocessSettings, SttSettings
from ..stt import SttBackend
from ..telemetry import now
from .preprocess import prepare_for_stt

__all__ = ["EarlyTranscriber", "SentenceState", "sentence_state"]


class SentenceState(enum.Enum):
    ENDED = "ended"
    GOES_ON = "goes_on"
    UNSURE = "unsure"


# Terminal punctuation (also the CJK full stops and marks Whisper writes), and
# closing quotes or brackets after it.
_ENDS = re.compile(r"[.!?\u3002\uff01\uff1f\u2026]['\")\]\u00bb]*$")
_GOES_ON_MARK = re.compile(r"[,;:\-\u2013\u2014]$")
# Words a sentence hardly ends on, in the languages RTAP's users speak most:
# conjunctions even before a full stop (Whisper's period is a guess there) ...
_CONJUNCTIONS = frozenset(
    {"and", "or", "but", "because", "und", "oder", "aber", "weil", "dass"}
    | {"y", "o", "pero", "porque", "que"}
)
# ... and, without one, articles and prepositions too.
_UNFINISHED = (
    _CONJUNCTIONS
    | {"so", "if", "then", "that", "which", "who", "when", "while", "the", "a", "an", "to"}
    | {"of", "for", "with", "in", "at", "by", "from", "into", "as", "than", "is", "are"}
    | {"der", "die", "das", "den", "dem", "eine", "zu", "mit", "von", "für", "auf"}
    | {"el", "la", "los", "las", "un", "una", "de", "con", "para", "en", "por"}
)


def sentence_state(text: str) -> SentenceState:
    """Whether ``text`` ends a sentence, clearly goes on, or cannot tell.

    Whisper punctuates what it hears: a full stop, question or exclamation
    mark after the last word is its judgement that the sentence is complete,
    trusted unless that word is a conjunction.
    """
    text = text.strip()
    if not text:
        return SentenceState.UNSURE
    last_word = re.sub(r"[^\w']", "", text.rsplit(maxsplit=1)[-1]).lower()
    if _ENDS.search(text):
        return SentenceState.GOES_ON if last_word in _CONJUNCTIONS else SentenceState.ENDED
    if _GOES_ON_MARK.search(text) or last_word in _UNFINISHED:
        return SentenceState.GOES_ON
    return SentenceState.UNSURE


class EarlyTranscriber:
    """Runs one session's early transcriptions, one at a time, latest first."""

    def __init__(
        self,
        ctx: SessionContext,
        *,
        backend: SttBackend,
        stt: SttSettings,
        preprocess: PreprocessSettings,
        sample_rate: int,
    ) -> None:
        self._ctx = ctx
        self._backend = backend
        self._budget_s = stt.budget_ms / 1000
        self._preprocess = preprocess
        self._sample_rate = sample_rate
        self._pending: EarlyTranscript | None = None
        self._running: tuple[EarlyTranscript, trio.CancelScope] | None = None
        self._wakeup = trio.Event()
        self._outcomes = ctx.metrics.early_transcriptions

    def start(
        self, last_voiced_frame: int, samples: Samples, language: str | None
    ) -> EarlyTranscript:
        """Transcribe this audio early (in place of any earlier request). Never blocks."""
        self.cancel()
        early = EarlyTranscript(last_voiced_frame, samples, language)
        self._pending = early
        self._wakeup.set()
        return early

    def cancel(self) -> None:
        """Speech resumed: what was asked is forgotten, what runs is aborted."""
        for early in (self._pending, self._running[0] if self._running else None):
            if early is not None and not early.done.is_set():
                early.cancelled = True
                early.done.set()
        self._pending = None
        if self._running is not None:
            self._running[1].cancel()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            early, self._pending = self._pending, None
            if early is None or early.done.is_set():
                continue
            with trio.CancelScope() as scope:
                self._running = (early, scope)
                try:
                    await self._transcribe(early)
                finally:
                    self._running = None
            if scope.cancelled_caught:
                self._outcomes.labels("cancelled").inc()
            early.done.set()

    async def _transcribe(self, early: EarlyTranscript) -> None:
        started = now()
        audio = await trio.to_thread.run_sync(
            prepare_for_stt, early.samples, self._sample_rate, self._preprocess
        )
        early.preprocess_ms = (now() - started) * 1000
        try:
            early.result = await self._backend.transcribe(
                audio, budget_s=self._budget_s, language=early.language, speculative=True
            )
        except SttSkippedError:
            self._outcomes.labels("skipped").inc()
            return
        except SttTimeoutError:
            self._outcomes.labels("timeout").inc()
            return
        self._outcomes.labels("done").inc()
