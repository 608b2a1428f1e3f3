"""The STT stage of one session: its utterances through the service's shared backend.

Each utterance is cleaned up (high-pass, normalisation) in a worker thread and
handed to the :class:`~rtap_trio.stt.SttBackend` with the time its speech ended
as its priority, so the backend serves every session's speech in the order it
ended. A session runs ``sessions.max_in_flight`` of these stages, which caps
how many of its utterances the backend holds at once. A transcription over
``stt.budget_ms`` (counted from when an engine took it) becomes an
``stt_timeout`` event; one the model itself thinks was no speech
(``stt.no_speech_threshold``), or whose text repeats itself like a looping
decode (``stt.max_compression_ratio``, what Whisper makes of music), an
``utterance_discarded`` event (:mod:`rtap_trio.stt.hallucination`).
"""

from __future__ import annotations

import trio

from ..clock import now
from ..errors import SttTimeoutError
from ..events import SttTimeout, UtteranceDiscarded
from ..items import SttResult, Transcription, Utterance
from ..session_context import SessionContext
from ..settings import PreprocessSettings, SttSettings
from ..stt import Decoding, SttBackend
from ..stt.hallucination import compression_ratio, discard_reason
from .preprocess import prepare_for_stt

__all__ = ["SttStage"]


class SttStage:
    """Utterances in, transcriptions out."""

    def __init__(
        self,
        ctx: SessionContext,
        *,
        backend: SttBackend,
        stt: SttSettings,
        preprocess: PreprocessSettings,
        sample_rate: int,
        utterances: trio.MemoryReceiveChannel[Utterance],
        transcriptions: trio.MemorySendChannel[Transcription],
        decoding: Decoding | None = None,
    ) -> None:
        """``decoding``: the session's prompt, word times and task (default: none)."""
        self._ctx = ctx
        self._decoding = decoding or Decoding()
        self._backend = backend
        self._stt = stt
        self._preprocess = preprocess
        self._sample_rate = sample_rate
        self._utterances = utterances
        self._transcriptions = transcriptions
        self._budget_s = stt.budget_ms / 1000
        metrics = ctx.metrics
        self._stt_time = metrics.stage_time.labels("stt")
        self._preprocess_time = metrics.stage_time.labels("preprocess")
        self._queue_wait = metrics.stt_queue_wait.labels(ctx.kind)

    async def run(self) -> None:
        async for utterance in self._utterances:
            await self._handle(utterance)
        await self._transcriptions.aclose()

    async def _handle(self, utterance: Utterance) -> None:
        done = False
        try:
            started = now()
            result, preprocess_ms = await self._early_result(utterance)
            early_wait_ms = (now() - started) * 1000 if result is not None else None
            early_lost_ms = 0.0
            if result is None:
                # An early transcript that came back empty-handed (a final of
                # another session took its engine, or its budget ran out) held
                # this final as long as it ran: time spent waiting for an
                # engine, counted as such, not as preprocessing (where it once
                # showed as "preprocess 7.7 s" on a busy machine, issue 18).
                preparing = now()
                early_lost_ms = (preparing - started) * 1000
                audio = await trio.to_thread.run_sync(
                    prepare_for_stt, utterance.samples, self._sample_rate, self._preprocess
                )
                prepared = now()
                preprocess_ms = (prepared - preparing) * 1000
                self._preprocess_time.observe(prepared - preparing)
                try:
                    result = await self._backend.transcribe(
                        audio,
                        priority=utterance.endpointed_at,
                        budget_s=self._budget_s,
                        language=utterance.language,
                        prompt=self._decoding.prompt,
                        words=self._decoding.words,
                        task=self._decoding.task,
                    )
                except SttTimeoutError as exc:
                    self._queue_wait.observe((early_lost_ms + exc.queue_ms) / 1000)
                    self._stt_time.observe(exc.elapsed_ms / 1000)
                    self._timed_out(utterance, exc)
                    done = True
                    return
                self._queue_wait.observe((early_lost_ms + result.queue_ms) / 1000)
                self._stt_time.observe(result.stt_ms / 1000)
            if result.decoded_again:
                self._ctx.metrics.stt_decoded_again.inc()
            reason = discard_reason(result.text, result.no_speech_probability, self._stt)
            if reason is not None:
                self._discard(utterance, reason, result.text, result.no_speech_probability)
                done = True
                return
            await self._transcriptions.send(
                Transcription(
                    utterance=utterance,
                    stt=result,
                    waited_ms=(started - utterance.endpointed_at) * 1000,
                    preprocess_ms=preprocess_ms,
                    early_wait_ms=early_wait_ms,
                    early_lost_ms=early_lost_ms,
                )
            )
            done = True
        finally:
            if not done:  # crashed or cancelled mid-way: the utterance is gone
                self._ctx.state.utterance_done("stt_failed")

    async def _early_result(self, utterance: Utterance) -> tuple[SttResult | None, float]:
        """The early transcript of exactly this utterance, if it was (or is being) made.

        It runs, or ran, on the engine in the utterance's trailing silence: waiting
        for it is never longer than transcribing again. Skipped or preempted, it
        has no result and the utterance is transcribed now.
        """
        early = utterance.early
        if early is None:
            return None, 0.0
        await early.done.wait()
        if early.result is None:
            return None, 0.0
        self._ctx.metrics.early_transcriptions.labels("used").inc()
        self._queue_wait.observe(early.result.queue_ms / 1000)
        self._stt_time.observe(early.result.stt_ms / 1000)
        return early.result, early.preprocess_ms

    def _discard(
        self, utterance: Utterance, reason: str, text: str, no_speech: float | None
    ) -> None:
        self._ctx.metrics.utterances.labels(self._ctx.kind, reason).inc()
        event = UtteranceDiscarded(reason=reason)
        if text:  # what was not published, for whoever tunes the thresholds
            event = UtteranceDiscarded(
                reason=reason,
                text=text,
                no_speech_probability=round(no_speech or 0.0, 4),
                compression_ratio=compression_ratio(text),
            )
        self._ctx.outbox.event(event, utterance.id)
        self._ctx.state.utterance_done(reason)

    def _timed_out(self, utterance: Utterance, exc: SttTimeoutError) -> None:
        metrics = self._ctx.metrics
        metrics.budget_exceeded.labels("stt").inc()
        metrics.errors.labels("stt", "timeout").inc()
        metrics.utterances.labels(self._ctx.kind, "stt_timeout").inc()
        self._ctx.outbox.event(
            SttTimeout(
                budget_ms=self._stt.budget_ms,
                elapsed_ms=round(exc.elapsed_ms, 1),
                queue_ms=round(exc.queue_ms, 1),
                audio_s=round(utterance.samples.size / self._sample_rate, 3),
            ),
            utterance.id,
        )
        self._ctx.log.bind(component="stt", stage="stt", utterance_id=utterance.id).warning(
            "transcription over budget ({} ms): aborted", self._stt.budget_ms
        )
        self._ctx.state.utterance_done("stt_timeout")
