"""Settings: one validated object, loaded from YAML profiles and the environment.

The schema (``schema.py``, with its sections in ``processing.py`` and
``serving.py``) is apart from the loader (``loader.py``: profiles, ``extends:``,
substitution, the environment, overrides, errors), old names (``renames.py``)
and YAML's limits (``yaml_limits.py``). The names below are the package's
public API: ``from rtap_trio.settings import Settings, load_settings``.
"""

from __future__ import annotations

from .instances import for_instance
from .loader import load_settings, settings_dir
from .processing import (
    AudioSettings,
    LanguageSettings,
    PipelineSettings,
    PreprocessSettings,
    RemoteSttSettings,
    SessionsSettings,
    SttSettings,
    SupervisorSettings,
    TurnSettings,
    VadSettings,
    WakewordSettings,
    WhisperCppSettings,
)
from .schema import Settings
from .serving import (
    HttpSettings,
    OpenAISettings,
    OutputSettings,
    SecuritySettings,
    StandbySettings,
    TelemetrySettings,
    WyomingSettings,
    is_loopback,
)
from .yaml_limits import load_yaml_value

__all__ = [
    "AudioSettings",
    "HttpSettings",
    "LanguageSettings",
    "OpenAISettings",
    "OutputSettings",
    "PipelineSettings",
    "PreprocessSettings",
    "RemoteSttSettings",
    "SecuritySettings",
    "SessionsSettings",
    "Settings",
    "StandbySettings",
    "SttSettings",
    "SupervisorSettings",
    "TelemetrySettings",
    "TurnSettings",
    "VadSettings",
    "WakewordSettings",
    "WhisperCppSettings",
    "WyomingSettings",
    "for_instance",
    "is_loopback",
    "load_settings",
    "load_yaml_value",
    "settings_dir",
]
