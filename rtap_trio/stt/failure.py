"""An engine that could not transcribe, and why: what a fallback acts on.

A local engine either answers or has a bug; an engine on another machine
fails in ordinary ways (refused, reset, an error status), and says so with
:class:`EngineFailed` so that :class:`~rtap_trio.stt.fallback.FallbackEngine`
can send the utterance elsewhere and count the reason.
"""

from __future__ import annotations

__all__ = ["EngineFailed"]


class EngineFailed(Exception):
    """The engine could not transcribe this utterance; another may."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        #: short and fixed, for metrics and events ("connect", "http_503", ...)
        self.reason = reason
        self.detail = detail
