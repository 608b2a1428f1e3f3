"""Wake word detection with Porcupine 1.9.5 (offline, no AccessKey).

Porcupine consumes 512-sample blocks while the pipeline moves 10-30 ms frames,
so :class:`WakeWordDetector` carries the remainder between frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelError
from ..items import Samples
from ..settings import WakewordSettings

__all__ = ["WakeWordDetection", "WakeWordDetector", "builtin_keywords", "check_keywords"]


def _porcupine() -> Any:
    try:
        import pvporcupine
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelError(
            "pvporcupine is not installed: pip install --no-deps pvporcupine==1.9.5 "
            "(scripts/setup.sh does this)"
        ) from exc
    return pvporcupine


def builtin_keywords() -> list[str]:
    return sorted(_porcupine().KEYWORDS)


def check_keywords(keywords: Iterable[str], source: str, key_path: str) -> None:
    """Raises ConfigError (at ``source``, ``key_path``) naming what Porcupine lacks."""
    known = builtin_keywords()
    unknown = [keyword for keyword in keywords if keyword not in known]
    if unknown:
        raise ConfigError(
            source, key_path, f"unknown keyword(s) {unknown}; built-in: {', '.join(known)}"
        )


@dataclass(frozen=True, slots=True)
class WakeWordDetection:
    keyword: str
    #: absolute index of the frame in which the keyword ended
    frame_index: int


class WakeWordDetector:
    """One Porcupine handle. Not thread-safe; owned by the front-end task."""

    def __init__(self, settings: WakewordSettings) -> None:
        porcupine = _porcupine()
        check_keywords(settings.keywords, "settings", "wakeword.keywords")
        paths = [Path(p) for p in settings.keyword_paths]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ModelError(f"wake word keyword file(s) not found: {', '.join(missing)}")
        self.keywords = [*settings.keywords, *(p.stem for p in paths)]
        try:
            self._handle = porcupine.create(
                keyword_paths=[porcupine.KEYWORD_PATHS[k] for k in settings.keywords]
                + [str(p) for p in paths],
                sensitivities=settings.keyword_sensitivities,
            )
        except Exception as exc:  # Porcupine raises its own error hierarchy
            raise ModelError(f"Porcupine failed to load: {exc}") from exc
        self.frame_length: int = self._handle.frame_length
        # Samples waiting for a full Porcupine block; preallocated so the
        # per-frame path does not allocate.
        self._pending = np.zeros(self.frame_length, dtype=np.int16)
        self._held = 0

    def process(self, samples: Samples, frame_index: int) -> WakeWordDetection | None:
        """Feed one frame; returns a detection when a keyword ends in it."""
        n = self.frame_length
        detection = None
        offset = 0
        while offset < samples.size:
            take = min(n - self._held, samples.size - offset)
            self._pending[self._held : self._held + take] = samples[offset : offset + take]
            self._held += take
            offset += take
            if self._held == n:
                self._held = 0
                result = self.process_block(self._pending[:n])
                if result >= 0 and detection is None:
                    detection = WakeWordDetection(self.keywords[result], frame_index)
        return detection

    def process_block(self, block: Samples) -> int:
        """One Porcupine block of exactly ``frame_length`` samples: keyword index or -1."""
        result: int = self._handle.process(block)
        return result

    def reset(self) -> None:
        self._held = 0

    def close(self) -> None:
        self._handle.delete()
