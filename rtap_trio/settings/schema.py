"""The settings' root model: every section, and the checks across sections.

The sections themselves are in ``processing.py`` and ``serving.py``; this
model only validates. Where values come from is the loader's business
(``loader.py``).
"""

from __future__ import annotations

from pydantic import PrivateAttr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .processing import (
    AudioSettings,
    LanguageSettings,
    PipelineSettings,
    PreprocessSettings,
    SessionsSettings,
    SttSettings,
    SupervisorSettings,
    TurnSettings,
    VadSettings,
    WakewordSettings,
)
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

__all__ = ["DEFAULT_PROFILE", "Settings"]

DEFAULT_PROFILE = "default"


class Settings(BaseSettings):
    """The whole configuration of one RTAP service."""

    # Sources are merged by load_settings (which tracks where each value came
    # from); this model only validates.
    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    environment: str = DEFAULT_PROFILE
    audio: AudioSettings = AudioSettings()
    wakeword: WakewordSettings = WakewordSettings()
    vad: VadSettings = VadSettings()
    turn: TurnSettings = TurnSettings()
    preprocess: PreprocessSettings = PreprocessSettings()
    stt: SttSettings = SttSettings()
    language: LanguageSettings = LanguageSettings()
    pipeline: PipelineSettings = PipelineSettings()
    sessions: SessionsSettings = SessionsSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    output: OutputSettings = OutputSettings()
    wyoming: WyomingSettings = WyomingSettings()
    openai: OpenAISettings = OpenAISettings()
    http: HttpSettings = HttpSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    security: SecuritySettings = SecuritySettings()
    standby: StandbySettings = StandbySettings()
    # Set by load_settings: one line per source that used old setting names.
    _deprecations: tuple[str, ...] = PrivateAttr(default=())

    @property
    def deprecations(self) -> tuple[str, ...]:
        """What the sources said with old setting names (RENAMED_KEYS), one line
        each: logged by the service at its start."""
        return self._deprecations

    @model_validator(mode="after")
    def _exposed_needs_a_token(self) -> Settings:
        if self.security.token is not None:
            return self
        for key, address, enabled in (
            ("output.bind_address", self.output.bind_address, self.output.websocket_enabled),
            ("http.bind_address", self.http.bind_address, self.http.enabled),
        ):
            if enabled and not is_loopback(address):
                raise ValueError(
                    f"{key} is {address}, reachable from other machines, but security.token "
                    "is not set: set it (RTAP_SECURITY__TOKEN) or bind 127.0.0.1"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
