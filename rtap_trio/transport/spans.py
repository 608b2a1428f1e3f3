"""When two services heard the same speech: the primary and its standby, both
capturing the same audio, each transcribe each utterance. Their messages share
no id, but they share the moment the speech happened, which every transcript
carries: its end is ``emitted_at`` less ``latency_ms.speech_end_to_emit``, its
length ``audio_end_s - audio_start_s``. Two transcripts are of the same speech
when those spans overlap by at least half of the shorter one (the two VADs and
hangovers differ by tenths of a second; utterances last seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

from .schemas import TranscriptMessage

__all__ = ["SpeechSpan"]

#: Spans shorter than this (an utterance cut to nothing) match on their ends alone.
_MIN_SPAN_S = 0.2
_MIN_OVERLAP = 0.5


@dataclass(frozen=True, slots=True)
class SpeechSpan:
    """When an utterance was spoken, in Unix seconds (wall clock: NTP-synced PCs agree)."""

    start: float
    end: float

    @classmethod
    def of(cls, message: TranscriptMessage) -> SpeechSpan:
        end = message.emitted_at - message.latency_ms.speech_end_to_emit / 1000
        return cls(end - max(0.0, message.audio_end_s - message.audio_start_s), end)

    def same_speech(self, other: SpeechSpan) -> bool:
        shorter = min(self.end - self.start, other.end - other.start)
        if shorter < _MIN_SPAN_S:
            return abs(self.end - other.end) < _MIN_SPAN_S
        overlap = min(self.end, other.end) - max(self.start, other.start)
        return overlap >= _MIN_OVERLAP * shorter
