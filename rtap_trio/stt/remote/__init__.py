"""Another machine's OpenAI-compatible transcription endpoint as an STT engine.

Chosen with ``stt.engine: remote``; its settings are ``stt.remote``, and with
``stt.fallback: whispercpp`` a local whisper.cpp engine (``stt.whispercpp``)
answers whatever the remote cannot (:mod:`rtap_trio.stt.fallback`). One module
per part: the upload's WAV (:mod:`.wav`), the HTTP client (:mod:`.client`),
the engine (:mod:`.engine`) and how they are opened (:mod:`.opening`).
"""

from __future__ import annotations

from .client import RemoteClient, parse_transcription
from .engine import RemoteEngine
from .opening import open_remote_engines
from .wav import wav_bytes

__all__ = [
    "RemoteClient",
    "RemoteEngine",
    "open_remote_engines",
    "parse_transcription",
    "wav_bytes",
]
