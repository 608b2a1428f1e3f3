"""The engines ``stt.engine`` names, loaded: the one place that knows every kind.

An engine module is imported only when it is chosen, so a service that does
not use whisper.cpp never loads it. Adding an engine is a branch here, a name
in ``SttSettings.engine`` and a settings section of its own (docs/architecture.md,
"Adding an STT engine"); stages and endpoints do not change.
"""

from __future__ import annotations

from ..settings import SttSettings
from .engine import SttEngine

__all__ = ["open_engines"]


async def open_engines(settings: SttSettings) -> list[SttEngine]:
    """``stt.workers`` engines of the kind ``stt.engine`` names, loaded and warmed up."""
    if settings.engine == "whispercpp":
        from .whispercpp import open_whispercpp_engines

        return list(await open_whispercpp_engines(settings))
    if settings.engine == "remote":
        from .remote import open_remote_engines

        return await open_remote_engines(settings)
    raise AssertionError(f"stt.engine {settings.engine!r} has no loader")  # settings forbid it
