"""Wiring of one session: source -> capture -> front-end -> STT -> language -> outbox.

Stages are connected by bounded channels, each with a stated full-channel
policy, and each stage runs as a supervised task. Data flows one way; when the
source ends (or :meth:`Pipeline.stop` is called) each stage drains what is
queued, closes its output and finishes, so a stop flushes what is in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
from loguru import logger

from .audio.base import AudioSource
from .buffers import AudioFrame, FullPolicy, PolicySendChannel, open_channel
from .session import SessionStateMachine, Transcription, Utterance
from .settings import Settings
from .stages.capture import CaptureStage
from .stages.frontend import FrontEnd
from .stages.language import LanguageAnalyzer, LanguageStage
from .stages.stt import SttStage, WhisperPool
from .stages.wakeword import WakeWordDetector
from .supervisor import Supervisor
from .telemetry import Metrics
from .transport.outbox import Outbox
from .transport.schemas import EventType

__all__ = ["Engines", "Pipeline"]


@dataclass(slots=True)
class Engines:
    """Loaded models, shared by every session of a service."""

    whisper: WhisperPool
    analyzer: LanguageAnalyzer


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        session_id: str,
        source: AudioSource,
        engines: Engines,
        outbox: Outbox,
        metrics: Metrics,
        supervisor: Supervisor,
    ) -> None:
        self.session_id = session_id
        self.source = source
        self.session = SessionStateMachine(session_id, outbox, metrics)
        self._settings = settings
        self._supervisor = supervisor
        self._outbox = outbox
        self._metrics = metrics
        # A live source must never wait, so its edges drop the oldest item; a
        # replayed file waits instead and loses nothing.
        policy = FullPolicy.DROP_OLDEST if source.live else FullPolicy.BLOCK
        dropped_frames = metrics.frames_dropped.labels("capture")
        frames_send: PolicySendChannel[AudioFrame]
        frames_receive: trio.MemoryReceiveChannel[AudioFrame]
        frames_send, frames_receive = open_channel(
            "frames",
            settings.audio.capture_queue_frames,
            policy,
            lambda _: dropped_frames.inc(),
        )
        utterances_send: PolicySendChannel[Utterance]
        utterances_receive: trio.MemoryReceiveChannel[Utterance]
        utterances_send, utterances_receive = open_channel(
            "utterances", settings.pipeline.utterance_queue_size, policy, self._utterance_dropped
        )
        transcriptions_send, transcriptions_receive = trio.open_memory_channel[Transcription](
            settings.pipeline.utterance_queue_size
        )
        self.frames = frames_send
        self.utterances = utterances_send
        self.wake = WakeWordDetector(settings.wakeword) if settings.wakeword.enabled else None
        self.capture = CaptureStage(source, frames_send)
        self.frontend = FrontEnd(
            settings,
            session=self.session,
            outbox=outbox,
            metrics=metrics,
            wake=self.wake,
            frames=frames_receive,
            utterances=utterances_send,
        )
        self.stt = [
            SttStage(
                settings,
                pool=engines.whisper,
                session=self.session,
                outbox=outbox,
                metrics=metrics,
                utterances=utterances_receive.clone(),
                transcriptions=transcriptions_send.clone(),
            )
            for _ in range(settings.stt.workers)
        ]
        utterances_receive.close()
        transcriptions_send.close()
        self.language = LanguageStage(
            settings,
            analyzer=engines.analyzer,
            model_name=engines.whisper.name,
            session=self.session,
            outbox=outbox,
            metrics=metrics,
            transcriptions=transcriptions_receive,
        )
        self._capture_scope = trio.CancelScope()

    def _utterance_dropped(self, utterance: Utterance) -> None:
        self._metrics.utterances.labels("dropped").inc()
        self._outbox.event(
            EventType.UTTERANCE_DROPPED, utterance.session_id, utterance.id, reason="queue_full"
        )
        self.session.utterance_done("dropped")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every stage until the source ends or :meth:`stop`, then drain."""
        supervise = self._supervisor.supervise
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._run_capture)
                await nursery.start(supervise, "frontend", self.frontend.run)
                for number, stage in enumerate(self.stt):
                    await nursery.start(supervise, f"stt-{number}", stage.run)
                await nursery.start(supervise, "language", self.language.run)
                task_status.started()
        finally:
            if self.wake is not None:
                self.wake.close()

    async def _run_capture(self, *, task_status: trio.TaskStatus[None]) -> None:
        with self._capture_scope:
            await self._supervisor.supervise("capture", self.capture.run, task_status=task_status)
        if self._capture_scope.cancelled_caught:
            logger.bind(component="pipeline").info("capture stopped; draining")
        self.capture.stop()
        await self.source.aclose()

    def stop(self) -> None:
        """Stop capturing; what is already queued still goes through."""
        self._capture_scope.cancel()
