"""What stages and endpoints know of speech to text: one utterance's audio in, an
:class:`SttResult` out.

:class:`SttBackend` is that interface; :class:`~rtap_trio.stt.pool.SttPool`,
over engines of any kind (:mod:`.engine`), is what implements it, shared by
every session of the service. Callers say how urgent an utterance is
(``priority``: lower goes first; sessions pass the time their speech ended, so
the engines serve speech in the order it ended) and how long the transcription
may take once an engine is theirs (``budget_s``: the wait for a free engine is
not part of it, but is reported in the result).
"""

from __future__ import annotations

import abc
import itertools
import math
from dataclasses import dataclass

import trio

from ..items import Float32, SttResult
from .engine import Task

__all__ = ["FinalsForeseen", "SttBackend", "SttStatistics"]


class FinalsForeseen:
    """Final transcriptions on their way: sessions whose speaker has paused long
    enough that the utterance may end within a hangover.

    Partial transcripts do not start while one is foreseen. A final that finds a
    partial on the engine preempts it, but whisper.cpp notices an abort only
    between its encoder and decoder passes: measured here with tiny.en on 6-10 s
    of audio, 170-260 ms after an abort early in the encoder; base takes ~4x
    that. Not starting the partial is what keeps the final from waiting.
    Used from the trio thread only.
    """

    def __init__(self) -> None:
        self._until: dict[int, float] = {}
        self._ids = itertools.count()

    def announce(self, for_s: float = math.inf) -> int:
        """A final is foreseen until :meth:`withdraw` (at most ``for_s``); its token."""
        token = next(self._ids)
        self._until[token] = trio.current_time() + for_s
        return token

    def withdraw(self, token: int, after_s: float = 0.0) -> None:
        """No longer foreseen (speech resumed), or only for ``after_s`` more (the
        utterance ended and its final is about to ask for an engine)."""
        if after_s > 0:
            self._until[token] = trio.current_time() + after_s
        else:
            self._until.pop(token, None)

    @property
    def due(self) -> int:
        """How many finals are foreseen now."""
        clock = trio.current_time()
        for token in [t for t, until in self._until.items() if until <= clock]:
            del self._until[token]
        return len(self._until)


@dataclass(frozen=True, slots=True)
class SttStatistics:
    #: engines the pool holds, and how many are transcribing now
    engines: int
    busy: int
    #: requests waiting for an engine now
    waiting: int
    transcriptions: int
    timeouts: int
    #: speculative requests skipped (no engine free) or preempted by a final
    speculative_skipped: int = 0


class SttBackend(abc.ABC):
    """Speech to text for every session of a service. Safe to call concurrently."""

    #: model name as published on transcripts ("base", "tiny.en")
    name: str
    #: an English-only model: it cannot transcribe or detect other languages
    english_only: bool
    #: where the model comes from, for reports (a file, a URL)
    origin: str
    #: the language codes it can transcribe (("en",) for an English-only model)
    languages: tuple[str, ...]
    #: where it runs ("cpu", "cuda", a remote address)
    device: str
    #: it runs elsewhere than the settings asked (a GPU that is not there)
    device_fallback: bool
    #: sessions announce their pauses here; partial transcripts make way
    foreseen: FinalsForeseen
    #: the most prompt tokens it takes (0: no prompts); see :meth:`prompt_tokens`
    max_prompt_tokens: int
    #: it can time the words of a final
    word_timings: bool
    #: it can translate into English
    translation: bool

    @abc.abstractmethod
    async def transcribe(
        self,
        audio: Float32,
        *,
        priority: float = 0.0,
        budget_s: float | None = None,
        language: str | None = None,
        speculative: bool = False,
        partial: bool = False,
        prompt: str = "",
        words: bool = False,
        task: Task = "transcribe",
    ) -> SttResult:
        """Transcribe 16 kHz mono float32 audio.

        ``language`` fixes the language (None: as configured, maybe detected).
        ``prompt`` primes the decoder, ``words`` times each word, ``task``
        translates (:class:`~rtap_trio.stt.engine.EngineRequest`); callers check
        them first (:meth:`prompt_tokens`, :attr:`word_timings`, :attr:`translation`).
        Raises :class:`~rtap_trio.errors.SttTimeoutError` when the
        transcription outlives ``budget_s`` (it is aborted first). Cancelling
        the caller aborts the transcription and frees the engine.

        ``speculative`` work (early and partial transcripts) comes after every
        final: it runs only on an engine free at once, and gives it up (aborted)
        when a final needs it; either way it raises
        :class:`~rtap_trio.errors.SttSkippedError`. ``partial`` speculative work
        (a partial transcript) ranks lowest of all: it does not start while a
        final is foreseen (:attr:`foreseen`), and early work preempts it too.
        """

    def language_name(self, code: str) -> str:
        """The language's English name ("english" for "en"), as OpenAI's API reports it."""
        return code

    def prompt_tokens(self, prompt: str) -> int:
        """How many tokens ``prompt`` is to the engines."""
        return len(prompt.encode())

    @abc.abstractmethod
    def statistics(self) -> SttStatistics: ...

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Free every engine; waits for none (callers are gone by then)."""
