"""whisper.cpp's own log lines, routed to loguru once per process."""

from __future__ import annotations

import atexit
import functools

from loguru import logger

__all__ = ["route_whisper_logs"]


@functools.cache  # once per process: every engine shares whisper.cpp's one logger
def route_whisper_logs() -> None:
    """Send whisper.cpp's own log lines to loguru (DEBUG) instead of raw stderr.

    Without this, every transcription prints to stderr around the JSON logs.
    """
    import _pywhispercpp

    whisper_log = logger.bind(component="whisper.cpp")

    def forward(level: int, text: str) -> None:
        text = text.strip()
        if text:
            whisper_log.debug(text)

    _pywhispercpp.whisper_log_set(forward)
    # A model freed during interpreter shutdown would call back into Python
    # while it is finalising, which aborts the process: hand logging back to
    # whisper.cpp's default before that, whatever path the exit takes.
    atexit.register(_pywhispercpp.whisper_log_set, None)
