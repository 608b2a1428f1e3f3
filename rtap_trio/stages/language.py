"""Language and sentiment of a transcript, with fastText."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from ..clock import now
from ..events import UtteranceDiscarded
from ..items import Transcription
from ..models.fasttext_models import LanguageIdentifier, SentimentClassifier
from ..session_context import SessionContext
from ..settings import LanguageSettings
from ..transport.schemas import LatencyBreakdown, TranscriptWord

__all__ = ["LanguageAnalyzer", "LanguageStage", "TextAnalysis", "pipeline_overhead_ms"]


@dataclass(frozen=True, slots=True)
class TextAnalysis:
    language: str
    language_confidence: float
    sentiment: str
    sentiment_confidence: float


UNKNOWN = TextAnalysis("und", 0.0, "neutral", 0.0)


class LanguageAnalyzer:
    def __init__(self, lid: LanguageIdentifier | None, sentiment: SentimentClassifier | None):
        self._lid = lid
        self._sentiment = sentiment

    @classmethod
    async def load(cls, settings: LanguageSettings) -> LanguageAnalyzer:
        if not settings.enabled:
            return cls(None, None)
        lid = await trio.to_thread.run_sync(LanguageIdentifier, settings.lid_model_path)
        sentiment = None
        if settings.sentiment_enabled:
            sentiment = await trio.to_thread.run_sync(
                SentimentClassifier, settings.sentiment_model_path
            )
        return cls(lid, sentiment)

    @property
    def identifies(self) -> bool:
        """Language ID is on: its confidence means something."""
        return self._lid is not None

    def analyze(self, text: str) -> TextAnalysis:
        """Blocking but fast (tens of microseconds); callers run it in a thread."""
        if not text.strip():
            return UNKNOWN
        language, language_confidence = UNKNOWN.language, UNKNOWN.language_confidence
        if self._lid is not None:
            guess = self._lid.identify(text)
            language, language_confidence = guess.language, guess.confidence
        sentiment, sentiment_confidence = UNKNOWN.sentiment, UNKNOWN.sentiment_confidence
        # The sentiment model was trained on English only: elsewhere it would guess.
        if self._sentiment is not None and language == "en":
            mood = self._sentiment.classify(text)
            sentiment, sentiment_confidence = mood.label, mood.confidence
        return TextAnalysis(language, language_confidence, sentiment, sentiment_confidence)


class LanguageStage:
    """Transcriptions in; language and sentiment added; the transcript published.

    It is the last stage, so it also hands the transcript to the outbox and
    observes the end-to-end pipeline latency. A transcript whose language
    fastText cannot tell (under ``language.min_confidence``: what Whisper
    makes of noise, "1/2 tbc") is discarded as an event instead.
    """

    def __init__(
        self,
        ctx: SessionContext,
        *,
        analyzer: LanguageAnalyzer,
        settings: LanguageSettings,
        model_name: str,
        log_transcripts: bool,
        transcriptions: trio.MemoryReceiveChannel[Transcription],
    ) -> None:
        self._ctx = ctx
        self._settings = settings
        self._analyzer = analyzer
        self._model_name = model_name
        self._log_transcripts = log_transcripts
        self._transcriptions = transcriptions
        self._budget_s = settings.budget_ms / 1000
        metrics = ctx.metrics
        self._language_time = metrics.stage_time.labels("language")
        self._emit_time = metrics.stage_time.labels("emit")
        self._latency = metrics.pipeline_latency.labels(ctx.kind)
        self._speech_end_to_emit = metrics.speech_end_to_emit.labels(ctx.kind)
        self._overhead = metrics.pipeline_overhead.labels(ctx.kind)

    async def run(self) -> None:
        async for transcription in self._transcriptions:
            await self._handle(transcription)

    async def _handle(self, item: Transcription) -> None:
        utterance = item.utterance
        ctx = self._ctx
        started = now()
        analysis = UNKNOWN
        try:
            with trio.move_on_after(self._budget_s) as scope:
                analysis = await trio.to_thread.run_sync(
                    self._analyzer.analyze, item.text, abandon_on_cancel=True
                )
            if scope.cancelled_caught:
                ctx.metrics.budget_exceeded.labels("language").inc()
                ctx.metrics.errors.labels("language", "timeout").inc()
            analysed = now()
            self._language_time.observe(analysed - started)
            if self._analyzer.identifies and (
                analysis.language_confidence < self._settings.min_confidence
            ):
                self._discard(item, analysis)
                return
            ctx.state.emit_started()
            stt = item.stt
            latency = self._breakdown(item, started, analysed)
            ctx.outbox.transcript(
                utterance_id=utterance.id,
                text=item.text,
                language=analysis.language,
                language_confidence=round(analysis.language_confidence, 4),
                sentiment=analysis.sentiment,
                sentiment_confidence=round(analysis.sentiment_confidence, 4),
                wake_word=utterance.wake_word,
                audio_start_s=utterance.start_s,
                audio_end_s=utterance.end_s,
                model=self._model_name,
                latency_ms=latency,
                stt_language=stt.language or None,
                stt_language_probability=_rounded(stt.language_probability),
                no_speech_probability=_rounded(stt.no_speech_probability),
                words=[
                    TranscriptWord(word=w.word, start=w.start, end=w.end)
                    for w in (word.shifted(utterance.start_s) for word in stt.words)
                ]
                or None,
                stt_engine=stt.engine,
            )
        except BaseException:
            ctx.state.utterance_done("language_failed")
            raise
        emitted = now()
        self._emit_time.observe(emitted - analysed)
        self._latency.observe(emitted - utterance.endpointed_at)
        self._speech_end_to_emit.observe(latency.speech_end_to_emit / 1000)
        self._overhead.observe(pipeline_overhead_ms(latency) / 1000)
        ctx.metrics.utterances.labels(ctx.kind, "transcribed").inc()
        ctx.state.emit_finished()
        log = ctx.log.bind(
            component="language",
            stage="emit",
            utterance_id=utterance.id,
            latency_ms=round((emitted - utterance.endpointed_at) * 1000, 1),
        )
        if self._log_transcripts:
            log.info("transcript [{}]: {}", analysis.language, item.text)
        else:
            log.info("transcript emitted ({} words)", len(item.text.split()))

    def _discard(self, item: Transcription, analysis: TextAnalysis) -> None:
        ctx = self._ctx
        ctx.metrics.utterances.labels(ctx.kind, "low_confidence").inc()
        ctx.outbox.event(
            UtteranceDiscarded(
                reason="low_confidence",
                text=item.text,
                language=analysis.language,
                language_confidence=round(analysis.language_confidence, 4),
            ),
            item.utterance.id,
        )
        ctx.state.utterance_done("low_confidence")

    def _breakdown(self, item: Transcription, started: float, analysed: float) -> LatencyBreakdown:
        emit_ms = (now() - analysed) * 1000
        total_ms = (now() - item.utterance.endpointed_at) * 1000
        return LatencyBreakdown(
            endpoint=item.utterance.hangover_ms,
            queue=round(item.waited_ms + item.early_lost_ms + item.stt.queue_ms, 2),
            preprocess=round(item.preprocess_ms, 2),
            stt=round(item.stt.stt_ms, 2),
            language=round((analysed - started) * 1000, 3),
            emit=round(emit_ms, 3),
            total=round(total_ms, 2),
            speech_end_to_emit=round(item.utterance.hangover_ms + total_ms, 2),
            early=item.early_wait_ms is not None,
            early_wait=round(item.early_wait_ms or 0.0, 2),
        )


def pipeline_overhead_ms(latency: LatencyBreakdown) -> float:
    """What the pipeline itself adds: end of speech detected to emit, less the
    wait for a free STT engine and the transcription itself (or, when the early
    transcript was used, the wait for it). The design's "<= 150 ms p95"."""
    stt = latency.early_wait if latency.early else latency.stt
    return max(0.0, latency.total - latency.queue - stt)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
