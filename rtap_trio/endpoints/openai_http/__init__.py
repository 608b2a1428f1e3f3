"""OpenAI-compatible transcription over HTTP (moved here whole; split in the next commit)."""

from __future__ import annotations

from .transcriptions import openai_routes

__all__ = ["openai_routes"]
