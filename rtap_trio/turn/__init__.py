"""End-of-turn detection behind one small interface: is the speaker done?

:class:`TurnDetector` is what the endpointer will know; :func:`load_turn_detector`
builds the one ``turn.engine`` names: ``none`` (:class:`NoTurnDetector`, the
silence timer alone, as before) or ``smart_turn`` (pipecat's Smart Turn v3.2 on
onnxruntime, imported only when chosen). The model file comes from setup
(``python -m rtap_trio models fetch smart-turn``, :mod:`.model`); the log-mel
features (:mod:`.features`) and the inference (:mod:`.smart_turn`) are RTAP's own.
"""

from __future__ import annotations

from ..settings import TurnSettings
from .base import NoTurnDetector, TurnDetector, TurnPrediction

__all__ = ["NoTurnDetector", "TurnDetector", "TurnPrediction", "load_turn_detector"]


def load_turn_detector(settings: TurnSettings) -> TurnDetector:
    """The detector ``settings`` ask for, loaded (blocking: Smart Turn takes
    ~0.3 s, its warm-up run included; call it in a worker thread).

    Raises ModelError when the model file is missing, altered or unloadable.
    """
    if settings.engine == "smart_turn":
        from .model import default_model_path
        from .smart_turn import SmartTurnDetector

        if settings.model_path is None:
            return SmartTurnDetector(default_model_path(), settings.threshold)
        return SmartTurnDetector(
            settings.model_path.expanduser(), settings.threshold, verify_digest=False
        )
    return NoTurnDetector()
