"""webrtcvad: the GMM detector from WebRTC, a few microseconds per frame."""

from __future__ import annotations

import webrtcvad

from ..items import Samples
from ..settings import VadSettings

__all__ = ["WebRtcVad"]


class _Stream:
    def __init__(self, aggressiveness: int, sample_rate: int) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._sample_rate = sample_rate

    def is_speech(self, samples: Samples) -> bool:
        return bool(self._vad.is_speech(samples.tobytes(), self._sample_rate))


class WebRtcVad:
    """Nothing to load; ``vad.aggressiveness`` 0-3: higher calls less audio speech."""

    name = "webrtc"

    def __init__(self, sample_rate: int) -> None:
        self._sample_rate = sample_rate

    def stream(self, settings: VadSettings) -> _Stream:
        return _Stream(settings.aggressiveness, self._sample_rate)
