"""Wiring of one session: source -> capture -> front-end -> STT -> language -> outbox.

Stages are connected by bounded channels, each with a stated full-channel
policy, and each stage runs as a supervised task named ``<session>/<stage>``.
Data flows one way; when the source ends (or :meth:`SessionPipeline.stop` is
called) each stage drains what is queued, closes its output and finishes, so a
stop flushes what is in flight. The engines are the service's, shared by every
session; everything else here is the session's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from .audio.base import AudioSource
from .buffers import FullPolicy, PolicySendChannel, open_channel
from .events import FramesDropped, UtteranceDropped
from .items import AudioFrame, Transcription, TurnEnd, Utterance
from .session_context import SessionContext
from .settings import Settings
from .stages.capture import CaptureStage
from .stages.frontend import FrontEnd
from .stages.language import LanguageAnalyzer, LanguageStage
from .stages.speculative import SpeculativeTranscriber
from .stages.stt import SttStage
from .stages.turn import TurnJudge
from .stages.wakeword import WakeWordDetector
from .stt import Decoding, SttBackend
from .supervisor import Supervisor
from .turn import NoTurnDetector, TurnDetector
from .vad import VadEngine
from .wakeword import load_wakeword

__all__ = ["Engines", "PipelineStatistics", "SessionPipeline"]

_DROP_EVENT_INTERVAL_S = 1.0


@dataclass(slots=True)
class Engines:
    """Loaded models, shared by every session of a service."""

    stt: SttBackend
    analyzer: LanguageAnalyzer
    vad: VadEngine
    #: the end-of-turn detector (``turn.engine``; none: the silence timer alone)
    turn: TurnDetector = field(default_factory=NoTurnDetector)


@dataclass(frozen=True, slots=True)
class PipelineStatistics:
    frames_queued: int
    frames_dropped: int
    utterances_queued: int
    utterances_dropped: int


class SessionPipeline:
    def __init__(
        self,
        ctx: SessionContext,
        settings: Settings,
        *,
        source: AudioSource,
        engines: Engines,
        supervisor: Supervisor,
        language: str | None = None,
        wake_only: bool = False,
        client_turns: bool = False,
        decoding: Decoding | None = None,
    ) -> None:
        """``settings`` are the session's own (its wake word choice applied);
        ``decoding`` what its transcriptions ask of the decoder (prompt, words, task).

        ``client_turns``: the client ends each utterance itself (a Realtime
        manual commit; see :class:`~rtap_trio.stages.frontend.FrontEnd`): no
        wake word, no early or partial transcripts, and every utterance waits
        for its transcription, as the client waits for each answer.

        Raises ConfigError or ModelError when the wake word cannot be set up.
        """
        self.ctx = ctx
        self.source = source
        decoding = decoding or Decoding()
        self._supervisor = supervisor
        metrics = ctx.metrics
        # Frames: a live source must never wait, so its channel drops the oldest
        # frame; a replayed file or a network client waits and loses nothing.
        # Utterances: where someone waits for each answer (a microphone, a
        # network client), the oldest waiting one is dropped with an event when
        # STT falls behind; a replayed file, or a client that ends its own turns
        # and waits for every one, waits and loses nothing.
        frame_policy = FullPolicy.DROP_OLDEST if source.live else FullPolicy.BLOCK
        utterance_policy = (
            FullPolicy.DROP_OLDEST if source.interactive and not client_turns else FullPolicy.BLOCK
        )
        self._dropped_frames = metrics.frames_dropped.labels("capture")
        self._last_drop_event = -float("inf")
        frames_send: PolicySendChannel[AudioFrame | TurnEnd]
        frames_receive: trio.MemoryReceiveChannel[AudioFrame | TurnEnd]
        frames_send, frames_receive = open_channel(
            "frames", settings.audio.capture_queue_frames, frame_policy, self._frame_dropped
        )
        utterances_send: PolicySendChannel[Utterance]
        utterances_receive: trio.MemoryReceiveChannel[Utterance]
        utterances_send, utterances_receive = open_channel(
            "utterances",
            settings.pipeline.utterance_queue_size,
            utterance_policy,
            self._utterance_dropped,
        )
        transcriptions_send, transcriptions_receive = trio.open_memory_channel[Transcription](
            settings.pipeline.utterance_queue_size
        )
        self.frames = frames_send
        self.utterances = utterances_send
        wakeword = settings.wakeword
        self.wake = (
            WakeWordDetector(load_wakeword(wakeword))
            if wakeword.enabled and not client_turns
            else None
        )
        self.capture = CaptureStage(source, frames_send)
        partial_ms = settings.stt.partial_interval_ms if settings.stt.partials else 0
        self.speculative = (
            SpeculativeTranscriber(
                ctx,
                backend=engines.stt,
                stt=settings.stt,
                preprocess=settings.preprocess,
                sample_rate=settings.audio.sample_rate,
                decoding=decoding,
            )
            # Speculative work only where someone waits for each answer: a
            # recording sent at once (an upload, Wyoming, a replay) reaches its
            # hangover at once too, so an early transcript was preempted by its
            # own final (5 of 12 uploads took 627-1202 ms instead of ~390).
            if (settings.vad.early_ms or partial_ms)
            and source.interactive
            and not (wake_only or client_turns)
            else None
        )
        # Only where someone waits for each answer: a file replayed or
        # uploaded gains nothing from ending turns sooner, and its utterances
        # would hang on how soon a busy machine answers.
        self.turn = (
            TurnJudge(engines.turn, sample_rate=settings.audio.sample_rate, metrics=ctx.metrics)
            if engines.turn.active and source.interactive and not (wake_only or client_turns)
            else None
        )
        self.frontend = FrontEnd(
            ctx,
            audio=settings.audio,
            vad=settings.vad,
            listen_timeout_ms=wakeword.listen_timeout_ms,
            budget_ms=settings.pipeline.frontend_budget_ms,
            wake=self.wake,
            voice=engines.vad.stream(settings.vad),
            frames=frames_receive,
            utterances=utterances_send,
            language=language,
            wake_only=wake_only,
            early_transcriber=self.speculative,
            partial_interval_ms=partial_ms,
            # A microphone was live before we listened; a file or a network
            # client starts with its own beginning.
            live_from_start=source.joins_mid_stream,
            client_turns=client_turns,
            turn_judge=self.turn,
            turn=settings.turn,
        )
        self.stt = [
            SttStage(
                ctx,
                backend=engines.stt,
                stt=settings.stt,
                preprocess=settings.preprocess,
                sample_rate=settings.audio.sample_rate,
                utterances=utterances_receive.clone(),
                transcriptions=transcriptions_send.clone(),
                decoding=decoding,
            )
            for _ in range(settings.sessions.max_in_flight)
        ]
        utterances_receive.close()
        transcriptions_send.close()
        self.language = LanguageStage(
            ctx,
            analyzer=engines.analyzer,
            settings=settings.language,
            model_name=engines.stt.name,
            log_transcripts=settings.telemetry.log_transcripts,
            transcriptions=transcriptions_receive,
        )
        self._capture_scope = trio.CancelScope()

    def _frame_dropped(self, frame: AudioFrame | TurnEnd) -> None:
        # Counted every time; said at most once a second (a stalled front-end
        # drops 50 frames a second), with the session's total so far.
        self._dropped_frames.inc()
        now = trio.current_time()
        if now - self._last_drop_event >= _DROP_EVENT_INTERVAL_S:
            self._last_drop_event = now
            self.ctx.outbox.event(
                FramesDropped(dropped_total=self.frames.statistics().dropped, reason="queue_full")
            )

    def _utterance_dropped(self, utterance: Utterance) -> None:
        self.ctx.metrics.utterances.labels(self.ctx.kind, "dropped").inc()
        self.ctx.outbox.event(UtteranceDropped(reason="queue_full"), utterance.id)
        self.ctx.state.utterance_done("dropped")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every stage until the source ends or :meth:`stop`, then drain.

        A stage that exhausts its restart policy ends the session: the
        :class:`~rtap_trio.errors.RestartsExhaustedError` propagates (in an
        exception group) after the other stages are cancelled.
        """
        supervise = self._supervisor.supervise
        name = self.ctx.session_id
        try:
            async with trio.open_nursery() as helpers:
                if self.speculative is not None:
                    await helpers.start(supervise, f"{name}/speculative", self.speculative.run)
                if self.turn is not None:
                    await helpers.start(supervise, f"{name}/turn", self.turn.run)
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._run_capture)
                    await nursery.start(supervise, f"{name}/frontend", self.frontend.run)
                    for number, stage in enumerate(self.stt):
                        await nursery.start(supervise, f"{name}/stt-{number}", stage.run)
                    await nursery.start(supervise, f"{name}/language", self.language.run)
                    task_status.started()
                # Drained: what serves the stages (speculative work) never ends by itself.
                helpers.cancel_scope.cancel()
        finally:
            if self.wake is not None:
                self.wake.close()

    async def _run_capture(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with self._capture_scope:
                await self._supervisor.supervise(
                    f"{self.ctx.session_id}/capture",
                    self.capture.run,
                    task_status=task_status,
                )
            if self._capture_scope.cancelled_caught:
                self.ctx.log.bind(component="pipeline").info("capture stopped; draining")
        finally:
            self.capture.stop()
            with trio.CancelScope(shield=True):
                await self.source.aclose()

    def stop(self) -> None:
        """Stop capturing; what is already queued still goes through."""
        self._capture_scope.cancel()

    def statistics(self) -> PipelineStatistics:
        frames, utterances = self.frames.statistics(), self.utterances.statistics()
        return PipelineStatistics(
            frames_queued=frames.current_buffer_used,
            frames_dropped=frames.dropped,
            utterances_queued=utterances.current_buffer_used,
            utterances_dropped=utterances.dropped,
        )
