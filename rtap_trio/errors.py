"""RTAP's error vocabulary.

A flat hierarchy under :class:`RTAPError`. Engine and library exceptions are
mapped to these at the boundary where they are raised, so callers (the CLI, the
supervisor) decide on policy by kind rather than by sniffing foreign types.
"""

from __future__ import annotations


class RTAPError(Exception):
    """Base class of every error RTAP raises on purpose."""

    #: Process exit code the CLI uses when this error ends the service.
    exit_code: int = 1


class ConfigError(RTAPError):
    """A settings file or value is invalid. Raised before anything starts."""

    exit_code = 2

    def __init__(self, source: str, key_path: str, reason: str) -> None:
        self.source = source
        self.key_path = key_path
        self.reason = reason
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {reason}")


class ModelError(RTAPError):
    """A model file is missing, corrupt, or cannot be converted or loaded."""

    exit_code = 3


class AudioSourceError(RTAPError):
    """An audio source cannot be opened or read (unknown device, corrupt file)."""

    exit_code = 4


class PortInUseError(RTAPError):
    """A listening port could not be bound."""

    exit_code = 5

    def __init__(self, what: str, host: str, port: int, reason: str) -> None:
        self.what = what
        self.host = host
        self.port = port
        super().__init__(f"{what}: cannot bind {host}:{port}: {reason}")


class RestartsExhaustedError(RTAPError):
    """A supervised task crashed more often than its restart policy allows."""

    exit_code = 6

    def __init__(self, task: str, restarts: int, window_s: float, last: BaseException) -> None:
        self.task = task
        self.last = last
        super().__init__(
            f"task {task} crashed {restarts} times within {window_s:g}s; "
            f"last error: {type(last).__name__}: {last}"
        )
