"""OpenAI-compatible speech to text over HTTP: ``POST /v1/audio/transcriptions``,
``POST /v1/audio/translations``, ``GET /v1/models``.

What the ``openai`` SDK (and pipecat, LiveKit agents, scripts) call with their
``base_url`` pointed here. Errors come in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with its status codes
(:mod:`.api_error`). The upload's form is parsed by :mod:`.form`, transcribed
by :mod:`.transcriptions` and answered in its ``response_format`` by
:mod:`.response_formats`; :mod:`.routes` is the table of paths, with the
Realtime WebSocket's.
"""

from __future__ import annotations

from .routes import openai_routes

__all__ = ["openai_routes"]
