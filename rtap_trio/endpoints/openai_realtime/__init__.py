"""OpenAI Realtime transcription (moved here whole; split in the next commit)."""

from __future__ import annotations

from .connection import KIND, REALTIME_PATH, RealtimeEndpoint

__all__ = ["KIND", "REALTIME_PATH", "RealtimeEndpoint"]
