"""The schema of what the service serves and how it is watched: the outputs
(ZeroMQ, WebSocket), Wyoming, OpenAI, the HTTP port, who may connect, the hot
standby, logs and metrics.

Half of the settings schema (the speech path is ``processing.py``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from .section import Section

__all__ = [
    "HttpSettings",
    "OpenAISettings",
    "OutputSettings",
    "SecuritySettings",
    "StandbySettings",
    "TelemetrySettings",
    "WyomingSettings",
    "is_loopback",
]


class OutputSettings(Section):
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


class WyomingSettings(Section):
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


class OpenAISettings(Section):
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


class StandbySettings(Section):
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


class SecuritySettings(Section):
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


class HttpSettings(Section):
    """The HTTP port: the console, OpenAI, Realtime, ``/health`` and ``/metrics``."""

    enabled: bool = True
    bind_address: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Each connection is a descriptor (docs/operations.md, "Descriptors").
    max_connections: int = Field(
        128, ge=4, le=10_000, description="HTTP connections at once; more get a 503 at accept"
    )


class TelemetrySettings(Section):
    """Logs and the process figures of the metrics (served on the HTTP port)."""

    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    log_transcripts: bool = False
    resource_interval_s: float = Field(5.0, gt=0, le=3600)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
