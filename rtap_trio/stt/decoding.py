"""What a session asks of the decoder beside the language: a vocabulary prompt,
word times, transcription or translation.

Chosen per session (the ``/v1/audio`` start message, an OpenAI upload's form,
a Realtime session's transcription config) over the service's defaults
(``stt.prompt``, ``stt.words``), checked against what the engines can do
before the session starts (:meth:`~rtap_trio.sessions.SessionManager.check_options`),
and handed by the session's stages to the backend with every utterance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .engine import Task

__all__ = ["Decoding"]


@dataclass(frozen=True, slots=True)
class Decoding:
    #: primes the decoder with names and jargon ("" for none)
    prompt: str = ""
    #: finals carry each word's times
    words: bool = False
    task: Task = "transcribe"

    def for_partial(self) -> Decoding:
        """A partial transcript's: the same prompt and task, so that finals do not
        flip from what the partials showed, but no word times (nobody keeps them)."""
        return replace(self, words=False)
