"""RTAP: a real-time audio pipeline on trio.

The public API is small on purpose: build :class:`Settings` with
:func:`load_settings`, run a :class:`Service`. Everything else is reachable
through its module, but these names are the ones kept stable.
"""

from __future__ import annotations

from .errors import (
    AudioSourceError,
    ConfigError,
    ModelError,
    PortInUseError,
    RestartsExhaustedError,
    RTAPError,
)
from .settings import Settings, load_settings
from .version import __version__

__all__ = [
    "AudioSourceError",
    "ConfigError",
    "ModelError",
    "PortInUseError",
    "RTAPError",
    "RestartsExhaustedError",
    "Service",
    "Settings",
    "__version__",
    "load_settings",
]


def __getattr__(name: str) -> object:
    # The service pulls in every engine; importing the package for its settings
    # or schemas should not.
    if name == "Service":
        from .app import Service

        return Service
    raise AttributeError(name)
