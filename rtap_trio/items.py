"""Every item that flows through a session, named in one place.

source ─frames─▶ front-end ─utterances─▶ STT ─transcriptions─▶ language ─▶ outbox

An :class:`AudioFrame` is one fixed block of capture; the front-end cuts an
:class:`Utterance` out of frames when the endpointer says speech ended (with an
:class:`EndReason`), or, for a client that ends its own turns, at a
:class:`TurnEnd` among its frames; an STT backend answers it with an
:class:`SttResult`; a :class:`Transcription` carries both to the language
stage, which publishes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import trio

__all__ = [
    "AudioFrame",
    "EarlyTranscript",
    "EndReason",
    "Float32",
    "Samples",
    "SttResult",
    "Transcription",
    "TurnEnd",
    "Utterance",
    "Word",
]

#: 16 kHz mono PCM as captured: int16.
Samples = npt.NDArray[np.int16]
#: The same audio as STT engines take it: float32 in [-1, 1].
Float32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """One fixed-size block of 16 kHz mono s16 audio.

    ``index`` counts frames from the start of the stream, so ``index * frame
    duration`` is the frame's offset in the recording; ``captured_at`` is
    ``time.perf_counter()`` when it reached the pipeline.
    """

    index: int
    samples: Samples
    captured_at: float


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """The client ended its turn here (a Realtime manual commit): the audio it
    sent since its last turn is one utterance, transcribed in ``language``
    (None: detected). It travels between the frames, so it ends the turn
    exactly after the audio that was sent before it."""

    language: str | None = None


class EndReason(enum.StrEnum):
    """Why an utterance ended."""

    SILENCE = "silence"
    MAX_LENGTH = "max_length"
    END_OF_STREAM = "end_of_stream"
    #: the client ended its turn (:class:`TurnEnd`)
    TURN_END = "turn_end"


@dataclass
class EarlyTranscript:
    """An utterance transcribed early, in its trailing silence, up to ``last_voiced_frame``.

    Should the silence hold, the utterance ends with exactly ``samples`` and
    ``result`` is its transcript.
    """

    last_voiced_frame: int
    samples: Samples
    language: str | None
    #: set once it has a result, or was skipped or cancelled (``result`` None)
    done: trio.Event = field(default_factory=trio.Event)
    result: SttResult | None = None
    preprocess_ms: float = 0.0
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Utterance:
    id: str
    session_id: str
    samples: Samples
    #: offsets of the utterance in the stream, seconds
    start_s: float
    end_s: float
    wake_word: str | None
    end_reason: EndReason
    #: perf_counter() when the end was decided (the hangover had passed)
    endpointed_at: float
    hangover_ms: float
    #: the language the session asked for (None: the STT settings decide)
    language: str | None = None
    #: its early transcript, when one heard all of it (running, or done)
    early: EarlyTranscript | None = None


@dataclass(frozen=True, slots=True)
class Word:
    """One word of a transcript and when it was said, in seconds: from the start
    of the audio transcribed inside the STT engines, from the start of the
    session's stream once the STT stage has placed it."""

    word: str
    start: float
    end: float

    def shifted(self, offset_s: float) -> Word:
        return Word(self.word, round(self.start + offset_s, 3), round(self.end + offset_s, 3))


@dataclass(frozen=True, slots=True)
class SttResult:
    """What an STT backend made of one utterance."""

    #: the words, without sound annotations ("" when nothing was said)
    text: str
    #: the language spoken: detected, or the one asked for ("" if unknown)
    language: str
    #: the detector's probability for ``language``; None when it was not detected
    language_probability: float | None
    #: the model's probability that nothing was said; None when it cannot tell
    no_speech_probability: float | None
    #: waiting for a free engine (the STT budget starts after it)
    queue_ms: float
    #: transcribing on the engine
    stt_ms: float
    #: the engine's CPU time on this machine, where it can tell
    cpu_ms: float | None = None
    #: each word's times in the audio transcribed, when they were asked for
    words: tuple[Word, ...] = ()
    #: which engine answered, when the service has more than one (stt.fallback)
    engine: str | None = None
    #: the engine's cheaper first try looped and it decoded the utterance again
    decoded_again: bool = False


@dataclass(frozen=True, slots=True)
class Transcription:
    utterance: Utterance
    stt: SttResult
    #: queued in the session before its STT stage took it (then ``stt.queue_ms``
    #: waiting for an engine)
    waited_ms: float
    preprocess_ms: float
    #: made early, in the trailing silence: how long the final waited for it
    #: after the endpoint (None: transcribed after the endpoint as usual)
    early_wait_ms: float | None = None
    #: waited for an early transcript that gave no result (preempted, over its
    #: budget) before transcribing after the endpoint: time waiting for an engine
    early_lost_ms: float = 0.0

    @property
    def text(self) -> str:
        return self.stt.text
