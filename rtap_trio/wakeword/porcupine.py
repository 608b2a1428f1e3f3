"""Porcupine 1.9.5 (offline, no AccessKey): built-in keywords and ``.ppn`` files.

The last Porcupine release that runs without an AccessKey; its built-in
keywords are the ones a client may ask for (:func:`builtin_keywords`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelError
from ..items import Samples
from ..settings import WakewordSettings

__all__ = ["PorcupineEngine", "builtin_keywords", "check_keywords"]


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


class PorcupineEngine:
    """One Porcupine handle (512-sample blocks). Not thread-safe; owned by the
    front-end task."""

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

    def process_block(self, block: Samples) -> int:
        result: int = self._handle.process(block)
        return result

    def close(self) -> None:
        self._handle.delete()
