"""The front-end stage: ring buffer, wake word, VAD and endpointing, frame by frame.

A session whose client ends its own turns (``client_turns``: a Realtime manual
commit) is cut by the client instead: each :class:`~rtap_trio.items.TurnEnd`
between its frames ends an utterance of everything since the last one, and
the wake word and the endpointer stay out of it (the VAD still measures the
level).

Porcupine and webrtcvad each take a few microseconds per frame, far less than a
thread hop, so they run inline on the event loop; the per-frame cost is timed
and counted against ``pipeline.frontend_budget_ms``. Everything heavier happens
once per utterance, downstream. The wake word's frame-to-block cutting
(:mod:`.wakeword`), the endpointer's rules (:mod:`.endpointer`) and the
console's level meter (:mod:`.level`) are modules of their own.

With an end-of-turn detector (``turn.engine``), a pause is also a question to
it, and its answer ends or holds the utterance (:mod:`.turn_taking`); when
partial transcripts are asked for is :mod:`.partial_timing`.

A service that drains asks each stream to end at its next pause between
utterances (:meth:`FrontEnd.end_at_pause`, :mod:`.drain_at_pause`).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trio

from ..buffers import PolicySendChannel, RingBuffer
from ..clock import now
from ..events import ListenTimeout, SpeechEnd, SpeechStart, UtteranceDiscarded, WakeWord
from ..items import AudioFrame, EndReason, Samples, TurnEnd, Utterance
from ..session_context import SessionContext
from ..settings import AudioSettings, TurnSettings, VadSettings
from ..vad.base import VoiceActivity
from .capture_start import CaptureStart
from .drain_at_pause import DrainAtPause
from .early_transcription import EarlyTranscription
from .endpointer import Endpointer, SpeechEnded, SpeechStarted
from .level import LevelMeter
from .partial_timing import PartialTiming
from .speculative import SpeculativeTranscriber
from .turn import TurnJudge
from .turn_taking import TurnTaking
from .wakeword import WakeWordDetection, WakeWordDetector

__all__ = ["FrontEnd", "FrontEndStatistics"]

# Speech after the last voiced frame that is kept: word endings fade below the
# VAD threshold before they are inaudible.
_TAIL_MS = 200
#: After an utterance ends, partials stay held back this long: the hand-over
#: to the STT stage and its preprocessing (~1-2 ms) before the final's request.
_FINAL_HANDOVER_S = 0.1
#: Until a partial of the utterance has had words, the next is due this soon
#: after the last was asked (in effect: once the engine is free, within the share).
_NO_WORDS_YET_MS = 100


class _Mode(enum.Enum):
    WAIT_WAKE = "wait_wake"  # wake word on: Porcupine listens (VAD runs in every mode)
    AWAIT_SPEECH = "await_speech"  # after a wake word, or always when wake word is off
    IN_SPEECH = "in_speech"


@dataclass(frozen=True, slots=True)
class FrontEndStatistics:
    frames: int
    wake_words: int
    utterances: int
    discarded: int
    budget_exceeded: int


class FrontEnd:
    def __init__(
        self,
        ctx: SessionContext,
        *,
        audio: AudioSettings,
        vad: VadSettings,
        listen_timeout_ms: int,
        budget_ms: float,
        wake: WakeWordDetector | None,
        voice: VoiceActivity,
        frames: trio.MemoryReceiveChannel[AudioFrame | TurnEnd],
        utterances: PolicySendChannel[Utterance],
        language: str | None = None,
        wake_only: bool = False,
        early_transcriber: SpeculativeTranscriber | None = None,
        partial_interval_ms: int = 0,
        live_from_start: bool = False,
        client_turns: bool = False,
        turn_judge: TurnJudge | None = None,
        turn: TurnSettings | None = None,
    ) -> None:
        """``wake_only``: detect wake words and nothing more (no utterances).

        ``client_turns``: the client's :class:`~rtap_trio.items.TurnEnd` marks
        cut the utterances, not the endpointer (see the module's docstring).

        ``early_transcriber``: transcribe each pause's utterance so far after
        ``vad.early_ms`` of silence, and let its words move the end; and, every
        ``partial_interval_ms`` of speech (0: never), the audio so far for a
        partial transcript: the first its ``first_partial_ms`` after the first
        voiced frame, and until one has words the next as soon as it is idle.

        ``live_from_start``: the source was live before capture began (a
        microphone, a room): speech already under way on the first frames was
        not heard from its beginning, and its fragment is dropped
        (``utterance_discarded``, reason ``began_before_capture``) rather than
        transcribed into something it did not say.

        ``turn_judge``: ask it at pauses whether the turn is over (``turn``
        says when), and end or hold the utterance as it answers.
        """
        self._frame_ms = audio.frame_ms
        self._frame_s = audio.frame_ms / 1000
        self._frame_samples = audio.frame_samples
        self._wake = wake
        self._vad = voice
        self._endpointer = Endpointer(vad, audio.frame_ms)
        self._ring = RingBuffer(audio.ring_buffer_size_ms // audio.frame_ms, audio.frame_samples)
        self._pre_roll = vad.pre_roll_ms // audio.frame_ms
        self._tail = _TAIL_MS // audio.frame_ms
        self._listen_timeout = listen_timeout_ms // audio.frame_ms
        self._budget_s = budget_ms / 1000
        self._language = language
        # Early transcription needs a pause shorter than the hangover to run in.
        self._early_on = 0 < vad.early_ms < vad.hangover_ms and early_transcriber is not None
        #: when partial transcripts are asked for; None: never
        self._partials = (
            PartialTiming(
                interval_frames=partial_interval_ms // audio.frame_ms,
                first_frames=max(1, early_transcriber.first_partial_ms // audio.frame_ms),
                no_words_frames=_NO_WORDS_YET_MS // audio.frame_ms,
            )
            if early_transcriber is not None and partial_interval_ms // audio.frame_ms
            else None
        )
        self._early_transcriber = early_transcriber if self._early_on or self._partials else None
        self._early_frames = max(1, vad.early_ms // audio.frame_ms)
        max_hangover = max(vad.max_hangover_ms, vad.hangover_ms) // audio.frame_ms
        #: the early transcript of each pause; None: off
        self._early = (
            EarlyTranscription(
                early_transcriber,
                self._endpointer,
                early_frames=self._early_frames,
                min_hangover_frames=min(vad.min_hangover_ms, vad.hangover_ms) // audio.frame_ms,
                max_hangover_frames=max_hangover,
                sentence_endpointing=vad.sentence_endpointing,
            )
            if self._early_on and early_transcriber is not None
            else None
        )
        #: the end-of-turn detector's questions at pauses; None: the timer alone
        self._turns = (
            TurnTaking(
                turn_judge,
                self._endpointer,
                pause_frames=max(1, (turn.pause_ms if turn is not None else 150) // audio.frame_ms),
                max_hangover_frames=max_hangover,
                sentence_endpointing=vad.sentence_endpointing,
            )
            if turn_judge is not None
            else None
        )
        self._utterance_id = ""
        self._wake_only = wake_only and wake is not None
        self._client_turns = client_turns
        self._ctx = ctx
        self._state = ctx.state
        self._outbox = ctx.outbox
        self._metrics = ctx.metrics
        self._frames = frames
        self._utterances = utterances
        self._ids = itertools.count(1)
        self._capture_start = CaptureStart(live_from_start)
        self._level = LevelMeter(ctx.outbox, audio.frame_ms)
        # Bound metric children once: a labels() lookup per frame is waste.
        metrics = ctx.metrics
        self._wake_time = metrics.frontend_steps.wakeword
        self._vad_time = metrics.frontend_steps.vad
        self._over_budget = metrics.budget_exceeded.labels("frontend")
        self._ring_fill = metrics.buffer_utilization.labels("ring_buffer")
        self._frames_fill = metrics.buffer_utilization.labels("frames")
        self._stats = dict.fromkeys(
            ("frames", "wake_words", "utterances", "discarded", "budget_exceeded"), 0
        )
        self._drain = DrainAtPause(audio.frame_ms)
        self._reset()

    def _reset(self) -> None:
        self._mode = _Mode.WAIT_WAKE if self._wake else _Mode.AWAIT_SPEECH
        self._detection: WakeWordDetection | None = None
        self._listen_deadline = 0
        self._chunks: list[Samples] = []
        self._chunks_start = 0
        self._last_index = -1
        self._endpointer.reset()
        if self._wake is not None:
            self._wake.reset()
        if self._early_transcriber is not None:
            self._early_transcriber.cancel()
            self._early_transcriber.pause_ended()
        if self._early is not None:
            self._early.reset()
        if self._turns is not None:
            self._turns.forget()

    async def run(self) -> None:
        """Consume frames until the capture side closes, then flush and close."""
        self._reset()
        self._state.reset_capture()
        async for item in self._frames:
            if self._drain.ended:
                continue  # the client sends these again to the instance it moves to
            if isinstance(item, TurnEnd):
                utterance = self.end_turn(item.language)
            else:
                utterance = self.process(item)
            if utterance is not None:
                await self._utterances.send(utterance)
        final = self.flush()
        if final is not None:
            await self._utterances.send(final)
        await self._utterances.aclose()

    def process(self, frame: AudioFrame) -> Utterance | None:
        """One frame through wake word, VAD and endpointer; an utterance when one ends."""
        started = now()
        index = self._ring.append(frame.samples, frame.index)
        self._last_index = index
        self._capture_start.frame(index, frame.samples)
        utterance = None
        # The detector adapts to the background as it goes (a cold webrtcvad
        # calls the first ~80 ms speech; Silero carries a recurrent state): it
        # hears every frame, so that it is warm when a wake word hands over.
        voiced = self._vad.is_speech(frame.samples)
        self._drain.frame(voiced)
        vad_done = now()
        self._vad_time.observe(vad_done - started)
        self._level.add(frame.samples, voiced)
        if self._client_turns:
            if self._mode is not _Mode.IN_SPEECH:
                self._chunks = []
                self._open_utterance(index, index, "turn")
            self._chunks.append(frame.samples)
        elif self._mode is _Mode.WAIT_WAKE:
            assert self._wake is not None
            detection = self._wake.process(frame.samples, index)
            self._wake_time.observe(now() - vad_done)
            if detection is not None:
                self._on_wake(detection)
        else:
            if self._mode is _Mode.IN_SPEECH:
                self._chunks.append(frame.samples)
            decision = self._endpointer.push(index, voiced)
            if isinstance(decision, SpeechStarted):
                self._on_speech_start(decision, index)
            elif isinstance(decision, SpeechEnded):
                utterance = self._on_speech_end(decision)
            elif self._mode is _Mode.IN_SPEECH and (
                self._early_transcriber is not None or self._turns is not None
            ):
                self._in_pause()
                # What the detector or the early transcript said on this frame
                # may end the pause now.
                ended = self._endpointer.ended_by_hangover(index)
                if ended is not None:
                    utterance = self._on_speech_end(ended)
            elif (
                self._mode is _Mode.AWAIT_SPEECH
                and self._detection is not None
                and index >= self._listen_deadline
            ):
                self._on_listen_timeout()
        self._count_frame(started)
        if self._drain.asked and utterance is None:
            self._drain.at_pause(self.between_utterances)
        return utterance

    def end_at_pause(self, end: Callable[[], None]) -> None:
        """Call ``end`` once, at the next pause between utterances (at once if
        this is one); the frames after it are not processed."""
        self._drain.ask(end)
        self._drain.at_pause(self.between_utterances)

    @property
    def between_utterances(self) -> bool:
        """No utterance is open, none is about to (a wake word heard, voice
        not yet called speech), and the last frames were unvoiced."""
        return (
            self._mode is not _Mode.IN_SPEECH
            and self._detection is None
            and self._drain.quiet(frames_seen=self._last_index >= 0)
        )

    def flush(self) -> Utterance | None:
        """End of stream: an utterance still open is ended and kept."""
        if self._client_turns:
            return self._end_client_turn(EndReason.END_OF_STREAM, self._language)
        decision = self._endpointer.flush(self._last_index)
        return self._on_speech_end(decision) if decision is not None else None

    def end_turn(self, language: str | None) -> Utterance | None:
        """The client ended its turn: what it sent since its last one is an
        utterance, in ``language`` (None: detected). Nothing when it sent nothing."""
        return self._end_client_turn(EndReason.TURN_END, language)

    def _end_client_turn(self, reason: EndReason, language: str | None) -> Utterance | None:
        if self._mode is not _Mode.IN_SPEECH:
            return None
        last = self._last_index
        ended = SpeechEnded(self._chunks_start, last, last, reason, too_short=False)
        return self._on_speech_end(ended, language)

    def _count_frame(self, started: float) -> None:
        self._stats["frames"] += 1
        if now() - started > self._budget_s:
            self._stats["budget_exceeded"] += 1
            self._over_budget.inc()
        if self._stats["frames"] % 25 == 0:  # twice a second is plenty for a gauge
            self._ring_fill.set(self._ring.statistics().utilization)
            stats = self._frames.statistics()
            self._frames_fill.set(stats.current_buffer_used / max(1, stats.max_buffer_size))

    def _on_wake(self, detection: WakeWordDetection) -> None:
        self._stats["wake_words"] += 1
        self._outbox.event(
            WakeWord(
                keyword=detection.keyword,
                offset_s=round((detection.frame_index + 1) * self._frame_s, 3),
            )
        )
        if self._wake_only:  # a wake word service: listen for the next one
            assert self._wake is not None
            self._wake.reset()
        else:
            self._detection = detection
            self._mode = _Mode.AWAIT_SPEECH
            self._listen_deadline = detection.frame_index + self._listen_timeout
            self._endpointer.reset()
            self._state.capture_started("wake_word")
        self._ctx.log.bind(component="frontend", stage="wakeword").info(
            "wake word {} at {:.2f}s",
            detection.keyword,
            (detection.frame_index + 1) * self._frame_s,
        )

    def _on_speech_start(self, decision: SpeechStarted, index: int) -> None:
        start = decision.first_frame - self._pre_roll
        if self._detection is not None:
            # Pre-roll must not reach back into the wake word itself.
            start = max(start, self._detection.frame_index + 1)
        start = max(start, self._ring.oldest_index)
        self._capture_start.speech_started(
            decision.first_frame, after_wake_word=self._detection is not None
        )
        self._chunks = [self._ring.since(start, index + 1)]
        if self._partials is not None:
            self._partials.speech_started(decision.first_frame)
        capture = "speech" if self._detection is None else None  # else the wake word's
        self._open_utterance(start, decision.first_frame, capture)

    def _open_utterance(self, start: int, speech_from: int, capture: str | None) -> None:
        """An utterance of the frames from ``start`` on (its speech from frame
        ``speech_from``), named now so that partial transcripts can say which it
        is; ``capture``: the reason capture starts, None when it has already."""
        self._chunks_start = start
        self._mode = _Mode.IN_SPEECH
        if capture is not None:
            self._state.capture_started(capture)
        self._utterance_id = f"{self._ctx.session_id}-{next(self._ids):04d}"
        self._outbox.event(
            SpeechStart(offset_s=round(speech_from * self._frame_s, 3)), self._utterance_id
        )

    def _samples_until(self, stop: int) -> Samples:
        """The utterance's audio from its first frame up to (not including) ``stop``."""
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return samples[: max(0, stop - self._chunks_start) * self._frame_samples]

    def _in_pause(self) -> None:
        """Speech (partial transcripts) or a pause in it (early transcription,
        the end-of-turn question, and what their answers say)."""
        silence = self._endpointer.silence_frames
        transcriber = self._early_transcriber
        early = self._early
        turns = self._turns
        if silence == 0:
            if turns is not None:
                turns.forget()
            if transcriber is None:
                return
            transcriber.pause_ended()
            if early is not None:
                early.speech_resumed()
            if self._partials is not None and self._partials.due(self._last_index):
                self._request_partial()
            return
        if turns is not None:
            turns.on_pause(silence, early.current if early else None, self._samples_until)
        if transcriber is not None and silence == self._early_frames:
            transcriber.pause_began()
        if early is not None:
            early.on_pause(
                silence,
                turn_pending=turns is not None and turns.pending,
                audio=self._samples_until,
                language=self._language,
            )
        if turns is not None:
            # Asked at turn.pause_ms, the detector may answer before the early
            # transcription is due (vad.early_ms): its words are still to come.
            due = early is not None and early.current is None and silence < self._early_frames
            turns.act(silence, early.current if early else None, early_due=due)

    def _request_partial(self) -> None:
        """The audio so far to the transcriber, if it is idle: a partial transcript."""
        assert self._early_transcriber is not None and self._partials is not None
        stop = self._last_index + 1
        self._partials.request(
            self._early_transcriber,
            self._utterance_id,
            stop,
            heard_samples=(stop - self._chunks_start) * self._frame_samples,
            audio=lambda: self._samples_until(stop),
            stop_s=round(stop * self._frame_s, 3),
            language=self._language,
        )

    def _on_speech_end(
        self, decision: SpeechEnded, language: str | None = None
    ) -> Utterance | None:
        wake = self._detection
        early = self._early.take(decision.last_voiced_frame) if self._early else None
        if self._turns is not None:
            self._turns.forget()
        if early is not None:  # its audio is the utterance: it was transcribed
            stop = self._chunks_start + early.samples.size // self._frame_samples
            samples = early.samples
        else:
            stop = min(decision.last_voiced_frame + 1 + self._tail, decision.decided_frame + 1)
            samples = self._samples_until(stop)
        start_s = self._chunks_start * self._frame_s
        end_s = stop * self._frame_s
        self._chunks = []
        self._detection = None
        self._mode = _Mode.WAIT_WAKE if self._wake else _Mode.AWAIT_SPEECH
        if self._wake is not None:
            self._wake.reset()
        utterance_id = self._utterance_id
        if self._early_transcriber is not None:
            self._early_transcriber.utterance_ended(utterance_id)
            # Until the final has asked for an engine (preprocessing takes ~1 ms).
            self._early_transcriber.pause_ended(after_s=_FINAL_HANDOVER_S)
        self._outbox.event(
            SpeechEnd(
                offset_s=round((decision.last_voiced_frame + 1) * self._frame_s, 3),
                reason=decision.reason.value,
            ),
            utterance_id,
        )
        cut = self._capture_start.take_cut()
        if decision.too_short or cut:
            reason = "too_short" if decision.too_short else "began_before_capture"
            self._stats["discarded"] += 1
            self._metrics.utterances.labels(self._ctx.kind, reason).inc()
            self._outbox.event(UtteranceDiscarded(reason=reason), utterance_id)
            self._state.capture_ended(reason)
            return None
        self._stats["utterances"] += 1
        self._state.utterance_queued()
        return Utterance(
            id=utterance_id,
            session_id=self._ctx.session_id,
            samples=samples,
            start_s=round(start_s, 3),
            end_s=round(end_s, 3),
            wake_word=wake.keyword if wake else None,
            end_reason=decision.reason,
            endpointed_at=now(),
            hangover_ms=(decision.decided_frame - decision.last_voiced_frame) * self._frame_ms,
            language=language if self._client_turns else self._language,
            early=early,
        )

    def _on_listen_timeout(self) -> None:
        self._detection = None
        self._mode = _Mode.WAIT_WAKE
        self._endpointer.reset()
        if self._wake is not None:
            self._wake.reset()
        self._outbox.event(ListenTimeout())
        self._state.capture_ended("listen_timeout")

    def statistics(self) -> FrontEndStatistics:
        return FrontEndStatistics(**self._stats)
