"""The STT engine protocol: what the pool needs of any speech-to-text engine.

An engine transcribes one utterance at a time. The pool
(:class:`~rtap_trio.stt.pool.SttPool`) holds ``stt.workers`` of them and does
all the scheduling: who goes first, budgets, speculative work and preemption,
statistics. An engine knows nothing of any of that; it only has to

- :meth:`SttEngine.transcribe` one utterance, and stop promptly when that call
  is cancelled (the pool's only way to abort: a budget ran out, a final needs
  the engine, the client left);
- :meth:`SttEngine.aclose` itself;
- say what it can do (:class:`EngineCapabilities`).

``transcribe`` is async rather than blocking. A blocking engine (whisper.cpp)
runs its call in a worker thread itself, because only it knows how its library
is told to stop (whisper.cpp polls an abort callback) and how long that takes;
an engine that talks to another machine is network I/O, which trio does
without a thread and cancels as it is. Either way, abort is trio's
cancellation, the one mechanism the pool already uses for budgets and
preemption, so there is no race between an "abort" call and a call that has
just finished.

Engines are made by the function :mod:`.selection` picks for ``stt.engine``;
each engine's own settings live in its section (``stt.whispercpp``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

from ..items import Float32, Word

__all__ = [
    "ABORT_WAIT_S",
    "EngineCapabilities",
    "EngineRequest",
    "EngineResult",
    "SttEngine",
    "Task",
]

#: What an engine is asked to make of speech: its words in the language spoken,
#: or (a multilingual Whisper model) their English translation.
Task = Literal["transcribe", "translate"]

#: How long an engine may take, once its transcription is cancelled, to stop.
#: The service's shutdown keeps this much of its grace for it.
ABORT_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class EngineCapabilities:
    """What an engine can do; every engine of one pool says the same."""

    #: model name as published on transcripts ("base", "tiny.en")
    name: str
    #: the language codes it can transcribe (("en",) for an English-only model)
    languages: tuple[str, ...]
    #: it can detect the language spoken among ``languages``; False: it knows
    #: only one (Whisper's ``*.en`` models)
    multilingual: bool
    #: it takes speculative work (early and partial transcripts): cheap enough
    #: to spend on guesses, and quick to stop when a final needs it. Without
    #: it the pool skips such requests at once.
    speculative: bool = True
    #: where the model comes from, for reports (a file, a URL)
    origin: str = ""
    #: where it runs ("cpu", "cuda", a remote address)
    device: str = "cpu"
    #: it runs elsewhere than the settings asked (a GPU that is not there)
    device_fallback: bool = False
    #: the most prompt tokens (:attr:`EngineRequest.prompt`) it takes; 0: it
    #: cannot be prompted at all, and a session that asks is told so
    max_prompt_tokens: int = 0
    #: it can time each word of a final (:attr:`EngineRequest.words`)
    word_timings: bool = False
    #: it can translate into English (:attr:`EngineRequest.task`)
    translation: bool = False


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """What is asked of an engine for one utterance, beside its audio."""

    #: the language to transcribe (None: as configured, maybe detected);
    #: the pool's callers check it against :attr:`EngineCapabilities.languages`
    language: str | None = None
    #: a partial transcript of speech still going on: a guess that the next one
    #: replaces, so an engine may spend less on it (a shorter window, fewer
    #: tokens) than on a final, whose words must not change
    partial: bool = False
    #: text the decoder is primed with (names, jargon it should spell so),
    #: within :attr:`EngineCapabilities.max_prompt_tokens`; "" for none
    prompt: str = ""
    #: time each word (:attr:`EngineResult.words`); costs decoding time
    words: bool = False
    #: transcribe, or translate into English
    task: Task = "transcribe"


@dataclass(frozen=True, slots=True)
class EngineResult:
    """What an engine made of one utterance (the pool adds the times)."""

    #: the words, without sound annotations ("" when nothing was said)
    text: str
    #: the language spoken: detected, or the one asked for ("" if unknown)
    language: str
    #: the detector's probability for ``language``; None when it was not detected
    language_probability: float | None
    #: the model's probability that nothing was said; None when it cannot tell
    no_speech_probability: float | None
    #: CPU time spent on this machine, where the engine can tell (None: it
    #: cannot; a remote engine spends next to none here)
    cpu_ms: float | None = None
    #: each word's times in the audio given, when :attr:`EngineRequest.words` asked
    words: tuple[Word, ...] = ()
    #: which engine answered ("remote", "whispercpp") when a service has more
    #: than one (``stt.fallback``); None: the only one there is
    engine: str | None = None
    #: a cheaper first try (whisper.cpp: a smaller window) looped, and the
    #: engine decoded the utterance again the usual way
    decoded_again: bool = False


class SttEngine(abc.ABC):
    """One speech-to-text engine: one utterance at a time, lent by the pool."""

    capabilities: EngineCapabilities

    @abc.abstractmethod
    async def transcribe(self, audio: Float32, request: EngineRequest) -> EngineResult:
        """Transcribe 16 kHz mono float32 audio as ``request`` asks.

        The pool never calls it twice at once on one engine.

        Cancelling the call aborts the transcription: it must then raise
        (``trio.Cancelled``) within about :data:`ABORT_WAIT_S`, and the engine
        must take its next utterance without harm, even if the work it
        abandoned is still winding down.
        """

    def language_name(self, code: str) -> str:
        """The language's English name ("english" for "en"), as OpenAI's API reports it."""
        return code

    def prompt_tokens(self, prompt: str) -> int:
        """How many tokens ``prompt`` is to this engine (checked against
        :attr:`EngineCapabilities.max_prompt_tokens` before a session starts).

        The default counts UTF-8 bytes, never fewer than a byte-level tokenizer's tokens.
        """
        return len(prompt.encode())

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Free the engine. Called once, when nothing is being transcribed on it."""
