"""Network front doors that turn a client into a session: ``/v1/audio``, Wyoming, OpenAI."""

from __future__ import annotations

from .audio_websocket import AUDIO_PATH, AudioWebSocketEndpoint, StartMessage
from .openai_http import openai_routes
from .wyoming import WyomingServer

__all__ = ["AUDIO_PATH", "AudioWebSocketEndpoint", "StartMessage", "WyomingServer", "openai_routes"]
