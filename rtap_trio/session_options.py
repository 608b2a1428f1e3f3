"""What a client may choose for its own session, and what the engines can honour.

:class:`SessionOptions` is what a protocol asks for (a language, a wake word,
a vocabulary prompt, word times, translation); the ``*_problem`` functions say
why the shared STT engine cannot honour one, before a session takes a slot
(:meth:`rtap_trio.sessions.SessionManager.check_options`) or an upload is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .settings import Settings
from .stt import Decoding, SttBackend, Task

__all__ = [
    "SessionOptions",
    "ignored_options",
    "language_problem",
    "prompt_problem",
    "task_problem",
]

#: A prompt longer than this many bytes per token the engine takes is refused
#: without tokenizing it (see :func:`prompt_problem`).
_MAX_PROMPT_BYTES_PER_TOKEN = 8

#: a language code as whisper names them ("en", "haw"); anything else is refused unread
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """What a client may choose for its own session; None keeps the settings'."""

    wake_word: bool | None = None
    keywords: tuple[str, ...] | None = None
    language: str | None = None
    #: False: a wake word service, nothing is transcribed
    transcribe: bool = True
    #: the client ends each utterance itself (a Realtime manual commit), not the VAD
    client_turns: bool = False
    #: the vocabulary prompt ("" for none; None: ``stt.prompt``)
    prompt: str | None = None
    #: word times on finals (None: ``stt.words``)
    words: bool | None = None
    #: transcribe, or translate into English (None: transcribe)
    task: Task | None = None

    def decoding(self, settings: Settings) -> Decoding:
        """What the session's stages ask of the decoder, the settings' defaults filled in."""
        stt = settings.stt
        return Decoding(
            prompt=stt.prompt if self.prompt is None else self.prompt,
            words=stt.words if self.words is None else self.words,
            task=self.task or "transcribe",
        )

    def apply(self, settings: Settings) -> Settings:
        wakeword = settings.wakeword
        update: dict[str, Any] = {}
        if self.wake_word is not None:
            update["enabled"] = self.wake_word
        if self.keywords is not None:
            # The sensitivities were set for the configured keywords.
            update |= {"keywords": list(self.keywords), "keyword_paths": [], "sensitivities": []}
        if not update:
            return settings
        return settings.model_copy(update={"wakeword": wakeword.model_copy(update=update)})


def language_problem(stt: SttBackend, language: str | None) -> str | None:
    """Why the STT engine cannot transcribe ``language``; None when it can
    (or none is asked). Whisper would raise only at the first utterance."""
    if language is None:
        return None
    if stt.english_only and language != "en":
        return f"the model {stt.name} is English-only; it cannot transcribe {language[:40]!r}"
    if not _LANGUAGE.match(language) or language not in stt.languages:
        return f"the model {stt.name} cannot transcribe {language[:40]!r}"
    return None


def prompt_problem(stt: SttBackend, prompt: str | None) -> str | None:
    """Why ``prompt`` is refused (too long for the engine); None when it is fine.

    An engine that takes no prompt at all does not refuse one: the session
    is told it was ignored (:func:`ignored_options`).
    """
    if not prompt or not stt.max_prompt_tokens:
        return None
    # Whisper's BPE makes at most a token per byte: only a long prompt is tokenized.
    size = len(prompt.encode())
    if size <= stt.max_prompt_tokens:
        return None
    # ... and only one of a sane size: whisper.cpp's tokenizer is quadratic
    # in a word's length and runs here, on the event loop (4 KB of "x":
    # 114 ms; a 64 KB form field: minutes, measured). Prompts run 3-5
    # bytes a token (English ~4.5), so 8 refuses none that would fit.
    if size > stt.max_prompt_tokens * _MAX_PROMPT_BYTES_PER_TOKEN:
        return (
            f"the prompt is {size} bytes; the model {stt.name} takes at most "
            f"{stt.max_prompt_tokens} tokens"
        )
    tokens = stt.prompt_tokens(prompt)
    if tokens > stt.max_prompt_tokens:
        return (
            f"the prompt is {tokens} tokens; the model {stt.name} takes at most "
            f"{stt.max_prompt_tokens}"
        )
    return None


def task_problem(stt: SttBackend, task: str | None) -> str | None:
    """Why the STT engine cannot do ``task``; None when it can."""
    if task in (None, "transcribe"):
        return None
    if task != "translate":
        return f"task must be transcribe or translate, not {task[:40]!r}"
    if not stt.translation:
        kind = "English-only" if stt.english_only else "not a translating model"
        return f"the model {stt.name} is {kind}; it cannot translate"
    return None


def ignored_options(stt: SttBackend, decoding: Decoding) -> tuple[str, ...]:
    """The options the engine cannot honour and ignores ("prompt", "words")."""
    ignored = []
    if decoding.prompt and not stt.max_prompt_tokens:
        ignored.append("prompt")
    if decoding.words and not stt.word_timings:
        ignored.append("words")
    return tuple(ignored)
