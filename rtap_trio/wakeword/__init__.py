"""Wake word detection behind one small interface, as :mod:`rtap_trio.vad` is.

:class:`WakeWordEngine` is what the front-end knows; :func:`load_wakeword`
builds one for one session's stream from ``wakeword`` settings. Porcupine
1.9.5 is the engine today; :func:`builtin_keywords` and
:func:`check_keywords` say what it can listen for (clients' choices are
checked against them before a session takes a slot).
"""

from __future__ import annotations

from ..settings import WakewordSettings
from .base import WakeWordEngine
from .porcupine import PorcupineEngine, builtin_keywords, check_keywords

__all__ = ["WakeWordEngine", "builtin_keywords", "check_keywords", "load_wakeword"]


def load_wakeword(settings: WakewordSettings) -> WakeWordEngine:
    """A detector for one stream with ``settings``' keywords (blocking: a few ms).

    Raises ConfigError for a keyword the engine lacks, ModelError when it
    cannot be loaded.
    """
    return PorcupineEngine(settings)
