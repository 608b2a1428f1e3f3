"""Voice activity detection behind one small interface, shared by every session.

:class:`VadEngine` is what the front-end knows; :func:`load_vad` builds the
one ``vad.engine`` names: ``webrtc`` (webrtcvad) or ``silero`` (Silero VAD on
onnxruntime, imported only when asked).
"""

from __future__ import annotations

from ..settings import VadSettings
from .base import VadEngine, VoiceActivity
from .webrtc import WebRtcVad

__all__ = ["VadEngine", "VoiceActivity", "WebRtcVad", "load_vad"]


def load_vad(settings: VadSettings, sample_rate: int) -> VadEngine:
    """The engine ``settings`` ask for, loaded (blocking: Silero takes ~50 ms).

    Raises ModelError when Silero's model or runtime cannot be loaded.
    """
    if settings.engine == "silero":
        from .silero import SileroVad

        return SileroVad(sample_rate)
    return WebRtcVad(sample_rate)
