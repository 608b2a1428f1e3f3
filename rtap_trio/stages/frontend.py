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

With an end-of-turn detector (``turn.engine``), a pause of ``turn.pause_ms``
is also a question to it (:mod:`.turn`), asked again at four times that
(600 ms: the default hangover) while the pause lasts; the early transcription
waits for its answer, and the second question for the early transcript (one
after the other, not side by side on the cores). Once both have answered:
words that clearly go on ("and", a comma) hold the utterance open as before;
otherwise a turn judged complete ends the utterance at once (its early
transcript becomes the final), and one judged incomplete is held open up to
``vad.max_hangover_ms``.

A service that drains (SIGTERM behind a balancer) asks each stream to end at
its next pause (:meth:`FrontEnd.end_at_pause`): between utterances, after
:data:`_DRAIN_PAUSE_MS` without voice, never inside one, so that its client
reconnects to another instance with nothing said cut in two.
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
from ..items import AudioFrame, EarlyTranscript, EndReason, Samples, TurnEnd, Utterance
from ..session_context import SessionContext
from ..settings import AudioSettings, TurnSettings, VadSettings
from ..vad.base import VoiceActivity
from .endpointer import Endpointer, SpeechEnded, SpeechStarted
from .level import LevelMeter, dbfs, rms
from .sentence import SentenceState, sentence_state
from .speculative import SpeculativeTranscriber
from .turn import TurnJudge, TurnQuestion
from .wakeword import WakeWordDetection, WakeWordDetector

__all__ = ["FrontEnd", "FrontEndStatistics"]

# Speech after the last voiced frame that is kept: word endings fade below the
# VAD threshold before they are inaudible.
_TAIL_MS = 200
#: Speech voiced within this many frames of a live source's first one was
#: already under way when capture began (the VAD needs a few frames to call it),
#: if those frames are loud: a cold webrtcvad calls ~80 ms of silence speech.
_CUT_AT_START_FRAMES = 3
_CUT_AT_START_DBFS = -45.0
#: After an utterance ends, partials stay held back this long: the hand-over
#: to the STT stage and its preprocessing (~1-2 ms) before the final's request.
_FINAL_HANDOVER_S = 0.1
#: Until a partial of the utterance has had words, the next is due this soon
#: after the last was asked (in effect: once the engine is free, within the share).
_NO_WORDS_YET_MS = 100
#: A drain ends a stream only after this much unvoiced audio outside an
#: utterance: speech whose start the VAD has not yet called (it needs a few
#: voiced frames) is not cut off before it opens an utterance.
_DRAIN_PAUSE_MS = 300


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
        #: partial transcripts every this many frames of speech (0: none)
        self._partial_frames = (
            partial_interval_ms // audio.frame_ms if early_transcriber is not None else 0
        )
        self._early_transcriber = (
            early_transcriber if self._early_on or self._partial_frames else None
        )
        #: the first partial this many frames after the first voiced one
        self._first_partial_frames = (
            max(1, early_transcriber.first_partial_ms // audio.frame_ms)
            if early_transcriber is not None
            else 0
        )
        self._no_words_frames = _NO_WORDS_YET_MS // audio.frame_ms
        self._early_frames = max(1, vad.early_ms // audio.frame_ms)
        self._sentence_endpointing = vad.sentence_endpointing
        self._min_hangover = min(vad.min_hangover_ms, vad.hangover_ms) // audio.frame_ms
        self._max_hangover = max(vad.max_hangover_ms, vad.hangover_ms) // audio.frame_ms
        self._early: EarlyTranscript | None = None
        self._pause_judged = False
        self._turn_judge = turn_judge
        pause = max(1, (turn.pause_ms if turn is not None else 150) // audio.frame_ms)
        #: the pause lengths (frames) at which the turn is judged
        # Asked again only at 4x: at 300 ms unfinished thoughts drifted
        # towards "complete" ("I would like to order," 0.37-0.48) and were cut.
        self._turn_at = (pause, 4 * pause) if turn_judge is not None else ()
        self._turn_question: TurnQuestion | None = None
        self._turn_decided = False
        #: how many of the pause lengths in _turn_at the detector was asked at
        self._turn_asked = 0
        self._next_partial = 0
        #: the frame the latest partial was asked at, and whether none had words yet
        self._partial_asked = 0
        self._partials_without_words = True
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
        self._live_from_start = live_from_start
        self._first_index: int | None = None
        self._loud_at_start = False
        self._cut_at_start = False
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
        #: unvoiced frames in a row, and how many make a pause a drain may end at
        self._unvoiced_run = 0
        self._drain_pause = _DRAIN_PAUSE_MS // audio.frame_ms
        #: called once at the next pause (a drain), then every frame is ignored
        self._end_at_pause: Callable[[], None] | None = None
        self._ended_at_pause = False
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
        self._early = None
        self._pause_judged = False
        self._forget_turn_question()

    async def run(self) -> None:
        """Consume frames until the capture side closes, then flush and close."""
        self._reset()
        self._state.reset_capture()
        async for item in self._frames:
            if self._ended_at_pause:
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
        if self._first_index is None:
            self._first_index = index
        if self._live_from_start and index - self._first_index <= _CUT_AT_START_FRAMES:
            self._loud_at_start |= dbfs(rms(frame.samples)) > _CUT_AT_START_DBFS
        utterance = None
        # The detector adapts to the background as it goes (a cold webrtcvad
        # calls the first ~80 ms speech; Silero carries a recurrent state): it
        # hears every frame, so that it is warm when a wake word hands over.
        voiced = self._vad.is_speech(frame.samples)
        self._unvoiced_run = 0 if voiced else self._unvoiced_run + 1
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
                self._early_transcriber is not None or self._turn_judge is not None
            ):
                self._in_pause()
            elif (
                self._mode is _Mode.AWAIT_SPEECH
                and self._detection is not None
                and index >= self._listen_deadline
            ):
                self._on_listen_timeout()
        self._count_frame(started)
        if self._end_at_pause is not None and utterance is None:
            self._end_if_paused()
        return utterance

    def end_at_pause(self, end: Callable[[], None]) -> None:
        """Call ``end`` once, at the next pause between utterances (at once if
        this is one); the frames after it are not processed."""
        if self._ended_at_pause:
            return
        self._end_at_pause = end
        self._end_if_paused()

    @property
    def between_utterances(self) -> bool:
        """No utterance is open, none is about to (a wake word heard, voice
        not yet called speech), and the last frames were unvoiced."""
        return (
            self._mode is not _Mode.IN_SPEECH
            and self._detection is None
            and (self._unvoiced_run >= self._drain_pause or self._last_index < 0)
        )

    def _end_if_paused(self) -> None:
        end = self._end_at_pause
        if end is None or not self.between_utterances:
            return
        self._end_at_pause = None
        self._ended_at_pause = True
        end()

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
        # Voiced from the very first frames of a live source: it began before us.
        first = self._first_index if self._first_index is not None else 0
        self._cut_at_start = (
            self._loud_at_start
            and self._detection is None
            and decision.first_frame <= first + _CUT_AT_START_FRAMES
        )
        self._chunks = [self._ring.since(start, index + 1)]
        # counted from the first voiced frame, not the decision
        self._next_partial = decision.first_frame + self._first_partial_frames
        self._partials_without_words = True
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
        if silence == 0:
            self._forget_turn_question()
            if transcriber is None:
                return
            transcriber.pause_ended()
            if early is not None:  # speech resumed: the early transcript is stale
                transcriber.cancel()
                self._early = None
            if self._partial_frames and self._last_index >= self._next_partial:
                self._request_partial()
            return
        # The second question waits for an early transcription still running:
        # the two side by side slowed it (below).
        if (
            self._turn_asked < len(self._turn_at)
            and silence >= self._turn_at[self._turn_asked]
            and (self._turn_asked == 0 or early is None or early.done.is_set())
        ):
            self._turn_asked += 1
            self._ask_about_the_turn(silence)
        if transcriber is not None and silence == self._early_frames:
            transcriber.pause_began()
        if self._early_on and transcriber is not None:
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
                and not self._turn_pending()
            ):
                last_voiced = self._endpointer.last_voiced_frame
                self._early = early = transcriber.start(
                    last_voiced,
                    self._samples_until(last_voiced + 1 + self._early_frames),
                    self._language,
                )
            elif (
                early is not None
                and self._sentence_endpointing
                and not self._pause_judged
                and early.done.is_set()
                and early.result is not None
            ):
                self._pause_judged = True
                state = sentence_state(early.result.text)
                if state is SentenceState.ENDED and not self._turn_pending():
                    self._endpointer.set_pause_hangover(self._min_hangover)
                elif state is SentenceState.GOES_ON:
                    self._endpointer.set_pause_hangover(self._max_hangover)
        self._act_on_the_turn(silence, early)

    def _ask_about_the_turn(self, silence: int) -> None:
        """The pause reached a length at which the detector is asked (again,
        unless it has already said the turn is over)."""
        assert self._turn_judge is not None
        question = self._turn_question
        if question is not None and (not question.done.is_set() or question.complete):
            return  # still thinking, or already done
        if not self._endpointer.long_enough:
            # A blip too short to keep cannot be a finished turn: ended, it
            # would be discarded, and the speech after the pause cut from it
            # (the timer alone merges them).
            return
        last_voiced = self._endpointer.last_voiced_frame
        self._turn_question = self._turn_judge.judge(self._samples_until(last_voiced + 1 + silence))
        self._turn_decided = False
        # Held while the detector thinks (up to vad.max_hangover_ms): on a busy
        # machine its answer (50-70 ms idle) took longer than the rest of the
        # hangover, and the timer then ended turns broken off at a comma that
        # the detector would have held (the quick bench's turn_taking, cut 1 of
        # 2 with three test workers on two cores). Late beats cut.
        self._endpointer.set_pause_hangover(self._max_hangover)

    def _turn_pending(self) -> bool:
        """The detector was asked about this pause and has not answered yet."""
        question = self._turn_question
        return question is not None and not question.done.is_set()

    def _act_on_the_turn(self, silence: int, early: EarlyTranscript | None) -> None:
        """End or hold the utterance once the detector (and the early transcript,
        when there is one) have answered."""
        question = self._turn_question
        if question is None or self._turn_decided or not question.done.is_set():
            return
        if not question.complete:
            # Held at once: the words can only hold it longer, never end it.
            self._turn_decided = True
            self._endpointer.set_pause_hangover(self._max_hangover)
            return
        if early is not None and not early.done.is_set():
            # Its words may yet say the sentence goes on; the timer as before.
            self._endpointer.default_pause_hangover()
            return
        self._turn_decided = True
        words = early.result.text if early is not None and early.result is not None else ""
        if self._sentence_endpointing and sentence_state(words) is SentenceState.GOES_ON:
            return  # held open by the words (set above)
        self._endpointer.set_pause_hangover(silence)  # ends on the next frame

    def _forget_turn_question(self) -> None:
        if self._turn_judge is not None and self._turn_question is not None:
            self._turn_judge.cancel()
        self._turn_question = None
        self._turn_decided = False
        self._turn_asked = 0

    def _request_partial(self) -> None:
        """The audio so far to the transcriber, if it is idle: a partial transcript."""
        assert self._early_transcriber is not None
        stop = self._last_index + 1
        heard = (stop - self._chunks_start) * self._frame_samples
        if not self._early_transcriber.ready_for_partial(self._utterance_id, heard):
            return  # busy or over its share: not worth gathering the audio each frame
        # Whether the partials so far had words is known now: the transcriber is idle.
        words = self._early_transcriber.has_words(self._utterance_id)
        if words and self._partials_without_words:
            # The first with words: the interval runs from when it was asked.
            self._partials_without_words = False
            self._next_partial = self._partial_asked + self._partial_frames
            if self._last_index < self._next_partial:
                return
        if self._early_transcriber.partial(
            self._utterance_id,
            self._samples_until(stop),
            round(stop * self._frame_s, 3),
            self._language,
        ):
            self._partial_asked = self._last_index
            interval = self._partial_frames if words else self._no_words_frames
            self._next_partial = self._last_index + interval

    def _on_speech_end(
        self, decision: SpeechEnded, language: str | None = None
    ) -> Utterance | None:
        wake = self._detection
        early, self._early = self._early, None
        self._pause_judged = False
        self._forget_turn_question()
        if early is not None and early.last_voiced_frame != decision.last_voiced_frame:
            early = None  # it heard less than the utterance holds
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
        cut, self._cut_at_start = self._cut_at_start, False
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
