"""Speculative transcription of an open utterance: early transcripts and partial ones.

The hangover (600 ms of silence before an utterance ends) is dead time for
the speaker. When the front-end has seen ``vad.early_ms`` of it, it hands the
utterance so far to this session's :class:`SpeculativeTranscriber`, which
transcribes it *early*: if the silence then holds, the utterance ends with
exactly that audio and this result is its transcript (nothing is transcribed
twice); if speech resumes, it is cancelled and forgotten. While the person
still speaks, the front-end also hands it the audio so far every
``stt.partial_interval_ms``: a *partial* transcript, published as a
``transcript_partial`` event with its stable prefix (LocalAgreement-2), as
long as this session's partials of the utterance have cost its engine less
than ``stt.partial_core_share`` of one core over the speech heard (engines
that cannot tell their CPU time are held to the interval alone). The first
of an utterance (``stt.first_partial_ms`` after its start) is never held back
by the share: it is the one a user sees first. Every partial counts, those
that came back without words too.

All of it is speculative work on the shared backend: after every final, on
an engine free at once (else skipped), given up when a final needs the
engine. One job runs at a time per session; an early request replaces a
partial one, which it outranks. A pause long enough for early work is
announced to the backend (:meth:`pause_began`): no session starts a partial
while a final is that near.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from ..clock import now
from ..errors import SttSkippedError, SttTimeoutError
from ..events import TranscriptPartial
from ..items import EarlyTranscript, Samples, SttResult
from ..session_context import SessionContext
from ..settings import PreprocessSettings, SttSettings
from ..stt import Decoding, SttBackend
from .partials import LocalAgreement, collapse_repeats, without_annotations
from .preprocess import prepare_for_stt

__all__ = ["SpeculativeTranscriber"]

_PAUSE_LIMIT_S = 10.0


@dataclass
class _OpenUtterance:
    """The utterance partials are being made for."""

    id: str
    agreement: LocalAgreement
    #: what its partials have cost the engine so far
    cpu_ms: float = 0.0
    #: whether one of them had words
    words: bool = False


@dataclass
class _PartialJob:
    utterance_id: str
    samples: Samples
    audio_end_s: float
    language: str | None


class SpeculativeTranscriber:
    """One session's early and partial transcriptions, one at a time."""

    def __init__(
        self,
        ctx: SessionContext,
        *,
        backend: SttBackend,
        stt: SttSettings,
        preprocess: PreprocessSettings,
        sample_rate: int,
        decoding: Decoding | None = None,
    ) -> None:
        self._ctx = ctx
        # An early transcript may become the final: it asks what a final asks.
        self._decoding = decoding or Decoding()
        self._backend = backend
        self._budget_s = stt.budget_ms / 1000
        self._core_share = stt.partial_core_share
        #: the first partial of an utterance, this long after its first voiced frame
        self.first_partial_ms = stt.first_partial_ms
        self._preprocess = preprocess
        self._sample_rate = sample_rate
        self._pending: EarlyTranscript | _PartialJob | None = None
        self._running: tuple[EarlyTranscript | _PartialJob, trio.CancelScope] | None = None
        self._wakeup = trio.Event()
        self._outcomes = ctx.metrics.early_transcriptions
        self._partials_made = ctx.metrics.partial_transcripts
        #: the utterance partials are being made for
        self._open: _OpenUtterance | None = None
        #: this session's announced pause (a final foreseen), if any
        self._foreseen: int | None = None

    # ------------------------------------------------------------------ requests

    def start(
        self, last_voiced_frame: int, samples: Samples, language: str | None
    ) -> EarlyTranscript:
        """Transcribe this audio early, in place of anything asked before. Never blocks."""
        self.cancel()
        early = EarlyTranscript(last_voiced_frame, samples, language)
        self._pending = early
        self._wakeup.set()
        return early

    def partial(
        self, utterance_id: str, samples: Samples, audio_end_s: float, language: str | None
    ) -> bool:
        """Transcribe the audio so far for a partial transcript, if nothing else is
        asked or running; whether it was taken."""
        if not self.ready_for_partial(utterance_id, samples.size):
            return False  # asked again on later frames
        if self._open is None or self._open.id != utterance_id:
            self._open = _OpenUtterance(utterance_id, LocalAgreement())
        self._pending = _PartialJob(utterance_id, samples, audio_end_s, language)
        self._wakeup.set()
        return True

    def ready_for_partial(self, utterance_id: str, heard_samples: int) -> bool:
        """Whether :meth:`partial` would take the utterance's audio so far
        (``heard_samples`` of it) now: nothing else asked or running, and its
        partials under their share of a core. Cheap: the front-end asks on
        every frame that is due one, before it gathers the audio."""
        if self._pending is not None or self._running is not None:
            return False
        open_utterance = self._open
        if open_utterance is None or open_utterance.id != utterance_id:
            return True
        heard_ms = heard_samples * 1000 / self._sample_rate
        return open_utterance.cpu_ms <= self._core_share * heard_ms

    def has_words(self, utterance_id: str) -> bool:
        """Whether a partial of this utterance has had words yet."""
        open_utterance = self._open
        return (
            open_utterance is not None
            and open_utterance.id == utterance_id
            and open_utterance.words
        )

    def pause_began(self) -> None:
        """The speaker paused: a final may follow within a hangover."""
        if self._foreseen is None:
            # A pause ends an utterance within vad.max_hangover_ms (10 s at
            # most): the bound keeps a lost withdrawal from muting partials.
            self._foreseen = self._backend.foreseen.announce(for_s=_PAUSE_LIMIT_S)

    def pause_ended(self, after_s: float = 0.0) -> None:
        """Speech resumed, or (``after_s``) the utterance ended and its final is
        about to ask for an engine."""
        if self._foreseen is not None:
            self._backend.foreseen.withdraw(self._foreseen, after_s)
            self._foreseen = None

    def cancel(self) -> None:
        """Speech resumed (or the front-end restarted): the early transcript is
        forgotten, and whatever runs is aborted."""
        for job in (self._pending, self._running[0] if self._running else None):
            if isinstance(job, EarlyTranscript) and not job.done.is_set():
                job.cancelled = True
                job.done.set()
        self._pending = None
        if self._running is not None:
            self._running[1].cancel()

    def utterance_ended(self, utterance_id: str) -> None:
        """No more partials for it: a late one is dropped; the final follows."""
        if self._open is not None and self._open.id == utterance_id:
            self._open = None
        if isinstance(self._pending, _PartialJob):
            self._pending = None
        if self._running is not None and isinstance(self._running[0], _PartialJob):
            self._running[1].cancel()

    # ------------------------------------------------------------------ work

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            self.pause_ended()

    async def _serve(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            job, self._pending = self._pending, None
            if job is None or (isinstance(job, EarlyTranscript) and job.done.is_set()):
                continue
            with trio.CancelScope() as scope:
                self._running = (job, scope)
                try:
                    if isinstance(job, EarlyTranscript):
                        await self._early(job)
                    else:
                        await self._partial(job)
                finally:
                    self._running = None
            if isinstance(job, EarlyTranscript):
                if scope.cancelled_caught:
                    self._outcomes.labels("cancelled").inc()
                job.done.set()

    async def _transcribe(
        self, samples: Samples, language: str | None, *, partial: bool = False
    ) -> tuple[SttResult | None, float, str]:
        """(result or None, preprocessing ms, outcome)."""
        started = now()
        audio = await trio.to_thread.run_sync(
            prepare_for_stt, samples, self._sample_rate, self._preprocess
        )
        preprocess_ms = (now() - started) * 1000
        decoding = self._decoding.for_partial() if partial else self._decoding
        try:
            result = await self._backend.transcribe(
                audio,
                budget_s=self._budget_s,
                language=language,
                speculative=True,
                partial=partial,
                prompt=decoding.prompt,
                words=decoding.words,
                task=decoding.task,
            )
        except SttSkippedError:
            return None, preprocess_ms, "skipped"
        except SttTimeoutError:
            return None, preprocess_ms, "timeout"
        return result, preprocess_ms, "done"

    async def _early(self, early: EarlyTranscript) -> None:
        early.result, early.preprocess_ms, outcome = await self._transcribe(
            early.samples, early.language
        )
        self._outcomes.labels(outcome).inc()

    async def _partial(self, job: _PartialJob) -> None:
        result, _, _ = await self._transcribe(job.samples, job.language, partial=True)
        if result is None:
            return
        open_utterance = self._open
        if open_utterance is None or open_utterance.id != job.utterance_id:
            return  # the utterance ended while this was transcribed: the final says it
        # Counted with words or without: the first partials of an utterance
        # are cheap (a 2.56 s window on one thread, ~110 ms of tiny.en), so
        # the share still lets the next ones come as soon as the engine is free.
        open_utterance.cpu_ms += result.cpu_ms or 0.0
        text = collapse_repeats(without_annotations(result.text))
        if not text:
            return  # Whisper makes nothing of a command's first half second or so
        open_utterance.words = True
        partial = open_utterance.agreement.update(text)
        self._partials_made.inc()
        self._ctx.outbox.event(
            TranscriptPartial(
                text=partial.text,
                stable=partial.stable,
                unstable=partial.unstable,
                stable_words=partial.stable_words,
                newly_stable=partial.newly_stable,
                audio_end_s=job.audio_end_s,
            ),
            job.utterance_id,
        )
