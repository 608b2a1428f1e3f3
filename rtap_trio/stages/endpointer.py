"""The endpointer: voice activity decisions, frame by frame, into utterances.

Pure logic, no audio: the VAD engines (:mod:`rtap_trio.vad`) say whether a
frame is speech; this says where an utterance starts and ends. Apart from the
front-end that drives it so that its rules are tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..items import EndReason
from ..settings import VadSettings

__all__ = ["Endpointer", "SpeechEnded", "SpeechStarted"]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    #: first frame of the run of voiced frames that opened the utterance
    first_frame: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    first_frame: int
    #: last voiced frame: the end of speech that latency is measured from
    last_voiced_frame: int
    #: frame on which the end was decided (after the hangover)
    decided_frame: int
    reason: EndReason
    too_short: bool


class Endpointer:
    """Frame-by-frame speech start/end decisions; pure logic, no audio.

    Speech starts after ``speech_start_frames`` voiced frames in a row and ends
    after ``hangover_ms`` of unvoiced frames, or at ``max_utterance_ms``. The
    hangover of the current pause may be changed while it lasts
    (:meth:`set_pause_hangover`: what the words so far suggest); it is back to
    ``hangover_ms`` at the next voiced frame.
    """

    def __init__(self, settings: VadSettings, frame_ms: int) -> None:
        self._start_frames = settings.speech_start_frames
        self._default_hangover = max(1, settings.hangover_ms // frame_ms)
        self._hangover_frames = self._default_hangover
        self._max_frames = max(1, settings.max_utterance_ms // frame_ms)
        self._min_frames = settings.min_utterance_ms // frame_ms
        self.reset()

    @property
    def in_speech(self) -> bool:
        return self._first is not None

    @property
    def silence_frames(self) -> int:
        """Unvoiced frames since the last voiced one, in speech (0 outside)."""
        return self._silence if self._first is not None else 0

    @property
    def last_voiced_frame(self) -> int:
        return self._last_voiced

    @property
    def long_enough(self) -> bool:
        """The utterance so far, ended now, would be kept (not ``too_short``)."""
        return self._first is not None and self._last_voiced - self._first + 1 >= self._min_frames

    def set_pause_hangover(self, frames: int) -> None:
        """The hangover of the current pause: the utterance ends once the silence
        reaches it (on the frame that set it, if it already has: :meth:`ended_by_hangover`)."""
        self._hangover_frames = max(1, frames)

    def default_pause_hangover(self) -> None:
        """The current pause ends at ``hangover_ms`` again, as if never changed."""
        self._hangover_frames = self._default_hangover

    def reset(self) -> None:
        self._hangover_frames = self._default_hangover
        self._run_start: int | None = None  # first frame of the current voiced run
        self._run_length = 0
        self._first: int | None = None
        self._last_voiced = -1
        self._silence = 0

    def push(self, frame_index: int, voiced: bool) -> SpeechStarted | SpeechEnded | None:
        if self._first is None:
            if not voiced:
                self._run_start, self._run_length = None, 0
                return None
            if self._run_start is None:
                self._run_start = frame_index
            self._run_length += 1
            if self._run_length < self._start_frames:
                return None
            self._first = self._run_start
            self._last_voiced = frame_index
            self._silence = 0
            return SpeechStarted(self._first)
        if voiced:
            self._last_voiced = frame_index
            self._silence = 0
            self._hangover_frames = self._default_hangover
        else:
            self._silence += 1
        if frame_index - self._first + 1 >= self._max_frames:
            return self._end(frame_index, EndReason.MAX_LENGTH)
        if self._silence >= self._hangover_frames:
            return self._end(frame_index, EndReason.SILENCE)
        return None

    def ended_by_hangover(self, frame_index: int) -> SpeechEnded | None:
        """The end, if the pause's hangover was shortened to what is already
        silent since :meth:`push` took ``frame_index``: decided on that frame,
        not the next (an answer read on a frame ends the utterance 20 ms sooner)."""
        if self._first is None or self._silence == 0 or self._silence < self._hangover_frames:
            return None
        return self._end(frame_index, EndReason.SILENCE)

    def flush(self, frame_index: int) -> SpeechEnded | None:
        """The stream ended: close an open utterance, if any."""
        if self._first is None:
            return None
        return self._end(frame_index, EndReason.END_OF_STREAM)

    def _end(self, frame_index: int, reason: EndReason) -> SpeechEnded:
        assert self._first is not None
        voiced_frames = self._last_voiced - self._first + 1
        ended = SpeechEnded(
            first_frame=self._first,
            last_voiced_frame=self._last_voiced,
            decided_frame=frame_index,
            reason=reason,
            too_short=voiced_frames < self._min_frames,
        )
        self.reset()
        return ended
