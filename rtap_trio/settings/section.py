"""The base of every settings section.

Its own module because both halves of the schema (``processing.py`` and
``serving.py``) derive from it, and the root model gathers them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """A section of the settings: frozen, and unknown keys are errors."""

    # Unknown keys are typos far more often than intent: reject them.
    model_config = ConfigDict(extra="forbid", frozen=True)
