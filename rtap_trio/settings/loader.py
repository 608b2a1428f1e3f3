"""Settings: one validated object, loaded from YAML profiles and the environment.

A profile is a YAML file in the settings folder that names its parent with
``extends:`` and overrides only what differs; parents are deep-merged first.
Values may hold ``${VAR}`` or ``${VAR:default}``. The environment wins over the
files: ``RTAP_<SECTION>__<KEY>`` for any key, plus the short forms
``RTAP_LOG_LEVEL``, ``AUDIO_DEVICE`` and ``RTAP_AUDIO_MOCK``. ``RTAP_ENVIRONMENT``
picks the profile.

Every value remembers where it came from, so that a bad one is reported as one
line naming the file (or variable), the key path and the reason.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..errors import ConfigError

__all__ = [
    "AudioSettings",
    "HttpSettings",
    "LanguageSettings",
    "OpenAISettings",
    "OutputSettings",
    "PipelineSettings",
    "PreprocessSettings",
    "SecuritySettings",
    "SessionsSettings",
    "StandbySettings",
    "Settings",
    "SttSettings",
    "SupervisorSettings",
    "TelemetrySettings",
    "VadSettings",
    "is_loopback",
    "WakewordSettings",
    "WhisperCppSettings",
    "WyomingSettings",
    "load_settings",
    "load_yaml_value",
    "settings_dir",
]

DEFAULT_PROFILE = "default"
ENV_PREFIX = "RTAP_"


class _Section(BaseModel):
    # Unknown keys are typos far more often than intent: reject them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class AudioSettings(_Section):
    source: str = Field("mic", description="mic | demo | file:PATH | none")
    device: str | int | None = Field(None, description="input device name or index (mic)")
    mock: bool = Field(False, description="true plays the built-in demo instead of the mic")
    sample_rate: Literal[16000] = 16000
    frame_ms: Literal[10, 20, 30] = 20
    ring_buffer_size_ms: int = Field(4000, ge=500, le=60_000)
    capture_queue_frames: int = Field(100, ge=2, le=10_000)
    realtime: bool = Field(True, description="pace file/demo sources at real time")
    loop_demo: bool = Field(True, description="repeat the demo recording")
    loop_gap_ms: int = Field(3000, ge=0, le=60_000)
    # Unix time at which a paced file or demo source is at its first sample, as
    # if it had been live since: two services given the same start_at hear the
    # same speech at the same moment (a failover drill), and one started later
    # joins where a live source would be. None: play from the start, now.
    start_at: float | None = Field(None, ge=0)

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value in ("mic", "demo", "none") or (value.startswith("file:") and len(value) > 5):
            return value
        raise ValueError("must be 'mic', 'demo', 'file:PATH' or 'none'")

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * self.frame_ms // 1000

    @property
    def effective_source(self) -> str:
        return "demo" if self.mock else self.source


class WakewordSettings(_Section):
    enabled: bool = True
    keywords: list[str] = Field(default_factory=lambda: ["computer"])
    keyword_paths: list[Path] = Field(default_factory=list)
    sensitivities: list[float] = Field(default_factory=list)
    listen_timeout_ms: int = Field(5000, ge=100, le=60_000)

    @field_validator("sensitivities")
    @classmethod
    def _in_unit_range(cls, values: list[float]) -> list[float]:
        for value in values:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"sensitivity {value} is outside 0..1")
        return values

    @model_validator(mode="after")
    def _one_sensitivity_each(self) -> WakewordSettings:
        if self.enabled and not (self.keywords or self.keyword_paths):
            raise ValueError("wake word is enabled but no keywords or keyword_paths are set")
        count = len(self.keywords) + len(self.keyword_paths)
        if self.sensitivities and len(self.sensitivities) != count:
            raise ValueError(f"{len(self.sensitivities)} sensitivities for {count} keywords")
        return self

    @property
    def keyword_sensitivities(self) -> list[float]:
        count = len(self.keywords) + len(self.keyword_paths)
        return list(self.sensitivities) or [0.5] * count


class VadSettings(_Section):
    # webrtcvad (a GMM, microseconds per frame) or Silero VAD (a small network
    # on onnxruntime, ~0.09 ms per 20 ms frame, +50 MB of runtime); compared
    # at 20/10/0 dB SNR in docs/performance.md.
    engine: Literal["webrtc", "silero"] = "webrtc"
    aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad 0..3")
    silero_threshold: float = Field(
        0.5, ge=0.05, le=0.95, description="Silero speech probability that starts speech"
    )
    speech_start_frames: int = Field(3, ge=1, le=50)
    hangover_ms: int = Field(600, ge=60, le=5000)
    max_utterance_ms: int = Field(15_000, ge=500, le=30_000)
    min_utterance_ms: int = Field(200, ge=0, le=5000)
    pre_roll_ms: int = Field(300, ge=0, le=2000)
    # Early transcription: after this much silence the utterance so far is
    # transcribed speculatively; if the silence holds, that is the transcript.
    early_ms: int = Field(
        150, ge=0, le=5000, description="0 (or hangover_ms and above) disables it"
    )
    # Sentence-aware endpointing, on the early transcript: one that clearly
    # goes on ("and", "the", a comma) waits up to max_hangover_ms; one that ends
    # a sentence may end the utterance once the silence reaches min_hangover_ms.
    # That second half is off by default (min = hangover): Whisper ends a
    # clause with a full stop when it hears a pause, and on commands with
    # 0.35-0.55 s pauses inside them (the paused_sentences fixture) a
    # min_hangover_ms of 450 (RealtimeSTT's end-of-sentence pause) ended 1 or 2
    # of 5 at their pause on pc2 (how many depends on how soon the early
    # transcript is back), where the 600 ms hangover ends none.
    # Both bounds apply as far as they are on their side of hangover_ms.
    sentence_endpointing: bool = True
    min_hangover_ms: int = Field(600, ge=20, le=5000)
    max_hangover_ms: int = Field(1200, ge=60, le=10_000)


class PreprocessSettings(_Section):
    highpass_hz: float = Field(80.0, ge=0.0, le=1000.0, description="0 disables")
    normalize: bool = True
    target_peak_dbfs: float = Field(-3.0, ge=-40.0, le=0.0)
    max_gain_db: float = Field(30.0, ge=0.0, le=60.0)


class WhisperCppSettings(_Section):
    """The whisper.cpp engine (``stt.engine: whispercpp``): which model, where, how."""

    model_name: str = "base"
    model_path: Path | None = None
    model_cache_dir: Path | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    # Weight type of the converted model. q8_0 (int8 blocks, as whisper.cpp's
    # quantize tool makes them) is 45 % smaller and faster on CPU; f32 is not
    # offered: whisper.cpp 1.8.5 aborts on f32 conv weights (GGML_ASSERT).
    compute_dtype: Literal["f16", "q8_0"] = "q8_0"
    n_threads: int = Field(2, ge=1, le=64)
    # whisper.cpp encodes a 30 s window (1500 frames of 20 ms) whatever the
    # utterance length; encoding only the utterance is the largest CPU saving,
    # but a window close to the speech makes Whisper repeat itself or loop
    # (seen with +100 frames on 2-3 s commands), hence a floor: 768 kept the
    # words of tiny.en on every fixture, while base flipped a Spanish command
    # at any window under 30 s, so "auto" is pc2's choice, not the default
    # (docs/cuda.md, "CPU speed").
    audio_ctx: Literal["auto"] | int = Field(
        0, description="0 (full 30 s window), auto (sized to the utterance), or frames"
    )
    audio_ctx_floor: int = Field(768, ge=1, le=1500)
    audio_ctx_margin: int = Field(64, ge=0, le=1500)
    flash_attn: bool = Field(True, description="whisper.cpp flash attention")
    # language auto over the full window: detect the language on the encoder
    # pass that transcribes (greedy, through libwhisper; see
    # stt/whispercpp/direct.py) instead of whisper_full's extra encoder pass.
    one_pass_language: bool = True

    @field_validator("audio_ctx")
    @classmethod
    def _ctx_in_range(cls, value: Literal["auto"] | int) -> Literal["auto"] | int:
        if value != "auto" and not 0 <= value <= 1500:
            raise ValueError("must be 'auto', 0 (full window) or 1..1500 encoder frames")
        return value

    @field_validator("model_path", "model_cache_dir", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # "${RTAP_MODEL_CACHE:}" substitutes to "" when unset; that means "not set".
        return None if value == "" else value


class SttSettings(_Section):
    """Speech to text: the engine pool (scheduling, budgets, what is kept) and,
    in a section of its own, the engine ``engine`` names."""

    engine: Literal["whispercpp"] = Field("whispercpp", description="the STT engine")
    language: str = Field("auto", description="auto, or a language code such as en")
    workers: int = Field(1, ge=1, le=8, description="engines, each one utterance at a time")
    budget_ms: int = Field(15_000, ge=100, le=300_000)
    warmup: bool = True
    # Partial transcripts while a person speaks: the audio so far, every this
    # often, when an engine is free (they never delay a final), published as
    # transcript_partial events with a stable prefix (LocalAgreement-2). Worth
    # it where the model is fast: pc2's tiny.en, main_pc's GPU.
    partials: bool = False
    partial_interval_ms: int = Field(500, ge=100, le=10_000)
    # Whisper's own probability that an utterance held no speech; over this the
    # transcript is discarded (an event, not a transcript). Whisper itself only
    # drops text when this is over 0.6 and its words are also unlikely. Measured
    # with base: 0.00-0.19 on every utterance of the fixtures and the shared
    # corpus, 0.34-0.59 on what it made of sox's white and brown noise ("1/2").
    no_speech_threshold: float = Field(0.25, ge=0.0, le=1.0, description="1 disables")
    # A transcript whose zlib compression ratio is over this repeats itself like
    # a looping decode (openai-whisper's 2.4): discarded as "repetition", and
    # the one-pass decoder stops there instead of decoding to its budget. What
    # base wrote for generated music were loops at 13.9-17.9 (decoded to the
    # budget), 3 of 7 under the no-speech threshold; speech of the fixtures and
    # the corpus was 0.50-1.36 (rtap_trio/stt/hallucination.py).
    max_compression_ratio: float = Field(2.4, ge=0.0, le=100.0, description="0 disables")
    whispercpp: WhisperCppSettings = WhisperCppSettings()


#: Keys that moved, old path -> new path. A profile, variable or ``--set`` that
#: uses an old name still loads, with a one-line warning. Issue 17 moved
#: whisper.cpp's keys from stt into stt.whispercpp, beside the pool's, and the
#: HTTP port's from telemetry into http (telemetry kept logs and metrics).
RENAMED_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {
    **{("stt", key): ("stt", "whispercpp", key) for key in WhisperCppSettings.model_fields},
    **{
        ("telemetry", key): ("http", key)
        for key in ("enabled", "bind_address", "port", "max_connections")
    },
}


class LanguageSettings(_Section):
    enabled: bool = True
    sentiment_enabled: bool = True
    lid_model_path: Path | None = None
    sentiment_model_path: Path | None = None
    budget_ms: int = Field(200, ge=1, le=10_000)
    # fastText's confidence in the language of a transcript; under this the
    # transcript is discarded (an event). Off by default: on one-word commands
    # it cannot tell speech from noise ("What?" 0.12, "Hmm." 0.18, the noise's
    # "1/2" 0.13), so the no-speech probability does that job.
    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="0 disables")


class PipelineSettings(_Section):
    utterance_queue_size: int = Field(4, ge=1, le=100)
    output_queue_size: int = Field(256, ge=1, le=100_000)
    frontend_budget_ms: float = Field(10.0, gt=0, le=1000)
    emit_budget_ms: int = Field(500, ge=1, le=10_000)


class SessionsSettings(_Section):
    max: int = Field(16, ge=1, le=1000, description="concurrent sessions, the local one included")
    idle_timeout_s: float = Field(30.0, gt=0, le=86_400, description="a silent client is closed")
    max_in_flight: int = Field(
        1, ge=1, le=16, description="utterances of one session in STT at once"
    )


class SupervisorSettings(_Section):
    max_restarts: int = Field(5, ge=0, le=1000)
    window_s: float = Field(60.0, gt=0, le=86_400)
    backoff_initial_s: float = Field(0.1, ge=0, le=60)
    backoff_max_s: float = Field(5.0, ge=0, le=600)
    shutdown_grace_s: float = Field(2.0, gt=0, le=60)
    # A port still held at start (the previous process of a restart is still
    # closing): retried with backoff this long before the start fails (exit 5).
    bind_retry_s: float = Field(3.0, ge=0, le=300)


class OutputSettings(_Section):
    bind_address: str = "127.0.0.1"
    zmq_enabled: bool = True
    zmq_pub_port_events: int = Field(6552, ge=0, le=65535)
    zmq_pub_port_transcripts: int = Field(6553, ge=0, le=65535)
    zmq_send_hwm: int = Field(1000, ge=1, le=1_000_000)
    # Connections per ZeroMQ port (each publisher and catch-up): one over the
    # cap is closed at once, and a ZeroMQ client retries by itself.
    zmq_max_connections: int = Field(64, ge=1, le=10_000)
    websocket_enabled: bool = True
    websocket_port: int = Field(5802, ge=0, le=65535)
    websocket_client_queue: int = Field(256, ge=1, le=100_000)
    websocket_max_clients: int = Field(200, ge=1, le=10_000)
    websocket_max_message_bytes: int = Field(65_536, ge=1024, le=16_777_216)
    # A watcher that has lost this many messages (its queue full, oldest
    # dropped) is disconnected with 1013: it reconnects and catches up instead.
    websocket_client_max_dropped: int = Field(2_000, ge=1, le=10_000_000)
    #: a ``heartbeat`` event this often (0: none); the standby and agents follow it
    heartbeat_interval_s: float = Field(1.0, ge=0.0, le=3600.0)
    # ROUTER socket answering "the transcripts after seq N" (0: any free port;
    # None: off), from the last ``catchup_size`` transcripts kept in memory.
    zmq_catchup_port: int | None = Field(6554, ge=0, le=65535)
    catchup_size: int = Field(1_000, ge=1, le=1_000_000)
    # What one catch-up peer (a connection) may cost: a peer that asks and
    # never reads holds at most send_hwm replies of max_reply_bytes, then its
    # requests wait unread (ZeroMQ's default of 1 000 queued 108 KB replies
    # each: 20 such peers took 2 GB).
    # 1 000 transcripts are 650-800 KB of JSON, so a full reply is never cut.
    zmq_catchup_send_hwm: int = Field(
        4,
        ge=1,
        le=1000,
        description="replies queued per catch-up peer; past it its requests wait unread",
    )
    zmq_catchup_max_reply_bytes: int = Field(
        1_048_576,
        ge=65_536,
        le=16_777_216,
        description="a longer catch-up reply is cut to the oldest transcripts that fit",
    )
    zmq_catchup_rate_per_s: float = Field(
        5.0, gt=0, le=10_000, description="catch-up requests a peer may make per second"
    )
    zmq_catchup_burst: int = Field(
        20, ge=1, le=10_000, description="... and at once; past it: an error reply"
    )


class WyomingSettings(_Section):
    """The Wyoming server (Home Assistant's speech services), on ``output.bind_address``."""

    enabled: bool = False
    port: int = Field(10300, ge=0, le=65535)
    # A header line is a small JSON object; audio chunks are a few KB
    # (Home Assistant sends 1024 samples of 16-bit audio). Anything over these
    # is an error event, and the connection is closed.
    max_header_bytes: int = Field(16_384, ge=256, le=1_048_576)
    max_data_bytes: int = Field(65_536, ge=256, le=16_777_216)
    max_payload_bytes: int = Field(1_048_576, ge=1024, le=16_777_216)
    # Home Assistant holds one connection per pipeline run; 64 is far above a
    # house's satellites and far below the descriptor limit (10 300 idle
    # connections once took every descriptor the process had).
    max_connections: int = Field(
        64, ge=1, le=10_000, description="connections at once; more are refused at accept"
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="a client that reads nothing of what is sent for this long is disconnected",
    )


class OpenAISettings(_Section):
    """OpenAI-compatible transcription on the HTTP port (``http.port``)."""

    # POST /v1/audio/transcriptions and GET /v1/models: nothing runs until asked.
    enabled: bool = True
    max_file_bytes: int = Field(
        25 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="an upload's file; the body is counted as it arrives, 413 past it",
    )
    # Read from the file's header before anything is decoded (413 past it), and
    # checked again while decoding. 30 min: OpenAI's 25 MB is ~26 min of MP3 at
    # 128 kb/s. Decoding streams a block at a time, so duration costs session
    # time and CPU (about 0.1 s per minute of 8-channel 48 kHz FLAC), not memory.
    max_audio_s: float = Field(
        1800.0, gt=0, le=86_400, description="an upload's duration, read from its header"
    )
    # 7.1 surround, and FLAC's own maximum; decoding costs channels x rate x duration.
    max_channels: int = Field(8, ge=1, le=256, description="an upload's channels")
    # Each upload's body (up to max_file_bytes) is in memory from its first byte
    # to its response, before a session slot is taken: without this, one client
    # with http.max_connections connections could hold 128 x 25 MiB.
    max_concurrent_uploads: int = Field(
        4, ge=1, le=1000, description="uploads read or transcribed at once; past it: 429"
    )


class StandbySettings(_Section):
    """Hot standby (pc2): follow the primary, publish only while it is gone."""

    enabled: bool = False
    # The primary's ZeroMQ publishers: its heartbeat (events) and transcripts.
    primary_host: str = "127.0.0.1"
    primary_events_port: int = Field(6552, ge=1, le=65535)
    primary_transcripts_port: int = Field(6553, ge=1, le=65535)
    # No heartbeat for this long: the primary is gone, the standby goes active.
    # Three missed heartbeats (1 s each) and a margin for a busy machine.
    takeover_after_ms: int = Field(3500, ge=100, le=600_000)
    # While the primary is heard, a transcript of the standby's own waits this
    # long for the primary's transcript of the same speech; unmatched by then,
    # the primary chose not to publish it (too short, no speech) and it is dropped.
    match_window_s: float = Field(30.0, gt=0, le=600)


class SecuritySettings(_Section):
    """Who may connect to the WebSocket server, the console's API and the audio endpoints."""

    # Required when output.bind_address or http.bind_address is not a
    # loopback address; when set, every client must present it (loopback ones
    # too): ``Authorization: Bearer <token>`` or ``?token=<token>``.
    token: SecretStr | None = None
    # Browser origins (``scheme://host[:port]``) allowed besides loopback ones
    # (http://127.0.0.1:*, http://localhost:*): a page from anywhere else is
    # refused even with the token, so another site cannot use a browser's access.
    allowed_origins: tuple[str, ...] = ()
    # Host names (or addresses) clients may use in the Host header besides a
    # loopback name, the bind address, this machine's host name and the hosts
    # of allowed_origins; bound to 0.0.0.0 or ::, any IP address too. Anything
    # else is refused with 421 (DNS rebinding). "*": any (a proxy checks it).
    allowed_hosts: tuple[str, ...] = Field(
        (), description="names clients may put in Host, e.g. main-pc.lan; ['*']: any"
    )

    @field_validator("token", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (try: openssl rand -hex 16)")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return tuple(origin.lower() for origin in value)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        hosts = []
        for host in value:
            name = host.strip().lower().strip("[]").rstrip(".")
            bad = not re.fullmatch(r"\*|[a-z0-9_.:-]+", name)
            if not bad and ":" in name:  # only an IPv6 address has colons; no ports
                try:
                    ipaddress.IPv6Address(name)
                except ValueError:
                    bad = True
            if bad:
                raise ValueError(f"{host!r} is not a host name or address (no scheme, port, path)")
            hosts.append(name)
        return tuple(hosts)


class HttpSettings(_Section):
    """The HTTP port: the console, OpenAI, Realtime, ``/health`` and ``/metrics``."""

    enabled: bool = True
    bind_address: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Each connection is a descriptor (docs/operations.md, "Descriptors").
    max_connections: int = Field(
        128, ge=4, le=10_000, description="HTTP connections at once; more get a 503 at accept"
    )


class TelemetrySettings(_Section):
    """Logs and the process figures of the metrics (served on the HTTP port)."""

    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    log_transcripts: bool = False
    resource_interval_s: float = Field(5.0, gt=0, le=3600)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class Settings(BaseSettings):
    """The whole configuration of one RTAP service."""

    # Sources are merged by load_settings (which tracks where each value came
    # from); this model only validates.
    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    environment: str = DEFAULT_PROFILE
    audio: AudioSettings = AudioSettings()
    wakeword: WakewordSettings = WakewordSettings()
    vad: VadSettings = VadSettings()
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


# --------------------------------------------------------------------------- loading


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


_SUBST = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")
_SHORT_ENV = {
    "RTAP_LOG_LEVEL": ("telemetry", "log_level"),
    "AUDIO_DEVICE": ("audio", "device"),
    "RTAP_AUDIO_MOCK": ("audio", "mock"),
}
_Origins = dict[tuple[str, ...], str]


def settings_dir(explicit: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The folder holding the profiles: explicit, $RTAP_SETTINGS_DIR, ./settings, or the repo's."""
    env = os.environ if environ is None else environ
    candidates = [explicit] if explicit else []
    if env.get("RTAP_SETTINGS_DIR"):
        candidates.append(Path(env["RTAP_SETTINGS_DIR"]))
    candidates += [Path.cwd() / "settings", Path(__file__).resolve().parents[2] / "settings"]
    for candidate in candidates:
        if candidate is not None and (candidate / f"{DEFAULT_PROFILE}.yaml").is_file():
            return candidate
    raise ConfigError(str(candidates[0] if candidates else "settings"), "", "no default.yaml found")


def load_settings(
    profile: str | None = None,
    *,
    directory: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the profile chain, the environment and ``overrides``; validate.

    ``overrides`` maps dotted key paths (``"audio.source"``) to values and wins
    over everything; the CLI uses it for its flags.
    """
    env = os.environ if environ is None else environ
    folder = settings_dir(directory, env)
    name = profile or env.get("RTAP_ENVIRONMENT") or DEFAULT_PROFILE
    origins: _Origins = {}
    renamed: list[str] = []
    merged = _load_profile_chain(name, folder, env, origins, renamed, seen=())
    merged["environment"] = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    _apply_environment(merged, env, origins, renamed)
    for dotted, value in (overrides or {}).items():
        path = _new_name(tuple(dotted.split(".")), "command line", renamed)
        _set_path(merged, path, value, origins, "command line")
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise _config_error(exc, origins) from None
    settings._deprecations = tuple(renamed)
    return settings


def _profile_path(name: str, folder: Path) -> Path:
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    return folder / f"{name}.yaml"


def _load_profile_chain(
    name: str,
    folder: Path,
    env: Mapping[str, str],
    origins: _Origins,
    renamed: list[str],
    seen: tuple[str, ...],
) -> dict[str, Any]:
    path = _profile_path(name, folder)
    if str(path) in seen:
        raise ConfigError(str(path), "extends", f"profile inheritance loops: {' -> '.join(seen)}")
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(str(path), "", f"profile '{name}' not found (known: {', '.join(known)})")
    document = _read_profile(path)
    document = {} if document is None else document
    if not isinstance(document, dict):
        raise ConfigError(str(path), "", "a profile must be a mapping of sections")
    parent = document.pop("extends", None)
    base: dict[str, Any] = {}
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(str(path), "extends", "must be a profile name")
        base = _load_profile_chain(parent, path.parent, env, origins, renamed, (*seen, str(path)))
    document = _substitute(document, env, str(path), ())
    _rename_old_keys(document, str(path), renamed)
    _deep_merge(base, document, origins, str(path), ())
    return base


#: Profiles are a few kilobytes; a 10 MB one took 30 s and 1 GB to reject.
MAX_PROFILE_BYTES = 256 * 1024
#: Values in a document once every alias is expanded. Profiles hold about a
#: hundred; an "alias bomb" (each anchor a list of two aliases of the one
#: before) holds a few dozen aliases that expand to billions of values.
MAX_YAML_VALUES = 10_000
#: Sections are two levels deep; a deeply nested document ends in a RecursionError.
MAX_YAML_DEPTH = 32


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a nesting limit, checked while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def _expanded_values(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` becomes with its aliases expanded; linear in the graph."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    # A node that holds an alias of itself is infinite: over the limit.
    sizes[id(node)] = MAX_YAML_VALUES + 1
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_values(item, sizes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(
            _expanded_values(key, sizes) + _expanded_values(value, sizes)
            for key, value in node.value
        )
    sizes[id(node)] = min(total, MAX_YAML_VALUES + 1)  # no need to count past the limit
    return sizes[id(node)]


def load_yaml_value(text: str) -> Any:
    """One YAML document through the limited loader (raises yaml.YAMLError).

    For every YAML RTAP reads: profiles, environment values, ``--set`` values.
    The limits act on the node graph before anything is constructed or
    expanded, so a hostile document costs milliseconds, not gigabytes.
    """
    loader = _LimitedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_values(node, {}) > MAX_YAML_VALUES:
            raise yaml.YAMLError(
                f"more than {MAX_YAML_VALUES:,} values once its aliases are expanded"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_profile(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ConfigError(
                str(path), "", f"profile is {size:,} bytes; the limit is {MAX_PROFILE_BYTES:,}"
            )
        with path.open("rb") as f:  # read no more than the limit, whatever stat said
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise ConfigError(str(path), "", f"profile is over the {MAX_PROFILE_BYTES:,} byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", f"not UTF-8 text (byte {exc.start})") from None
    try:
        return load_yaml_value(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(path), where, f"invalid YAML: {reason}") from None


def _substitute(value: Any, env: Mapping[str, str], source: str, path: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, env, source, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, source, (*path, str(i))) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in env:
            return env[var]
        if default is None:
            raise ConfigError(source, ".".join(path), f"${{{var}}} is not set and has no default")
        return default

    result = _SUBST.sub(replace, value)
    if _SUBST.fullmatch(value):
        # A value that is wholly one substitution takes the YAML type of what
        # was substituted, so "${PORT:8080}" is the number 8080.
        try:
            return load_yaml_value(result) if result else result
        except yaml.YAMLError:
            return result
    return result


def _deep_merge(
    into: dict[str, Any],
    new: Mapping[str, Any],
    origins: _Origins,
    source: str,
    path: tuple[str, ...],
) -> None:
    for key, value in new.items():
        key_path = (*path, str(key))
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value, origins, source, key_path)
        else:
            into[key] = value
            origins[key_path] = source
            if isinstance(value, dict):
                for sub in _leaf_paths(value, key_path):
                    origins[sub] = source


def _leaf_paths(value: Mapping[str, Any], path: tuple[str, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, sub in value.items():
        out.append((*path, str(key)))
        if isinstance(sub, dict):
            out += _leaf_paths(sub, (*path, str(key)))
    return out


def _set_path(
    into: dict[str, Any], path: tuple[str, ...], value: Any, origins: _Origins, source: str
) -> None:
    node = into
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value
    origins[path] = source


def _new_name(path: tuple[str, ...], source: str, renamed: list[str]) -> tuple[str, ...]:
    """The key path ``path`` has now (RENAMED_KEYS), noted in ``renamed`` if it changed."""
    new = RENAMED_KEYS.get(path)
    if new is None:
        return path
    renamed.append(_renaming(source, [(path, new)]))
    return new


def _rename_old_keys(document: dict[str, Any], source: str, renamed: list[str]) -> None:
    """Move the keys of one profile that have old names to their new ones, before
    it is merged: a later source still wins, and errors name this file."""
    moved: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    for old, new in RENAMED_KEYS.items():
        parent: Any = document
        for key in old[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or old[-1] not in parent:
            continue
        target: Any = document
        for key in new[:-1]:
            target = target.setdefault(key, {}) if isinstance(target, dict) else None
        if isinstance(target, dict):  # else the section is not a mapping: that error stands
            target.setdefault(new[-1], parent.pop(old[-1]))  # both given: the new name wins
            moved.append((old, new))
    if moved:
        renamed.append(_renaming(source, moved))


def _renaming(source: str, moved: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> str:
    """One line for one source's old names: logged by the service at its start,
    once its logging is set up (a line printed while loading would not be JSON)."""
    old = ", ".join(".".join(path) for path, _ in moved)
    new = ", ".join(".".join(path) for _, path in moved)
    return f"{source}: deprecated setting names {old} (now {new}); they still load"


def _apply_environment(
    merged: dict[str, Any], env: Mapping[str, str], origins: _Origins, renamed: list[str]
) -> None:
    for var, path in _SHORT_ENV.items():
        if env.get(var, "") != "":
            _set_path(merged, path, _env_value(env[var]), origins, f"environment variable {var}")
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        parts = tuple(p.lower() for p in var[len(ENV_PREFIX) :].split("__"))
        if any(not p for p in parts):
            raise ConfigError(f"environment variable {var}", "", "empty key segment")
        source = f"environment variable {var}"
        _set_path(merged, _new_name(parts, source, renamed), _env_value(raw), origins, source)


def _env_value(raw: str) -> Any:
    # Environment strings are parsed as YAML scalars or flow lists, so
    # RTAP_WAKEWORD__KEYWORDS='[jarvis, computer]' and '0.5' mean what they say.
    try:
        value = load_yaml_value(raw)
    except yaml.YAMLError:
        return raw
    return raw if value is None or isinstance(value, dict) else value


def _config_error(exc: ValidationError, origins: _Origins) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    loc = tuple(str(part) for part in first["loc"])
    # A check across sections (a model validator) has no one key to blame.
    source = "defaults" if loc else "settings"
    for size in range(len(loc), 0, -1):
        if loc[:size] in origins:
            source = origins[loc[:size]]
            break
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "unknown key"
    elif "input" in first and not isinstance(first["input"], dict | list):
        reason = f"{reason} (got {first['input']!r})"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ConfigError(source, ".".join(loc), reason)
