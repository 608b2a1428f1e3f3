"""Network front doors that turn a client into a session: ``/v1/audio`` today."""

from __future__ import annotations

from .audio_websocket import AUDIO_PATH, AudioWebSocketEndpoint, StartMessage

__all__ = ["AUDIO_PATH", "AudioWebSocketEndpoint", "StartMessage"]
