"""RTAP's error vocabulary.

A flat hierarchy under :class:`RTAPError`. Engine and library exceptions are
mapped to these at the boundary where they are raised, so callers (the CLI, the
supervisor) decide on policy by kind rather than by sniffing foreign types.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError


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
        where = f"{source}: {_one_line(key_path)}" if key_path else source
        super().__init__(f"{where}: {_one_line(reason)}")


def _one_line(text: str) -> str:
    """Control characters escaped: a key from a hostile file must not break the one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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


class SttSkippedError(RTAPError):
    """Speculative work was not done: every engine was busy, or a final needed one."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"speculative transcription skipped: {reason}")


class SttTimeoutError(RTAPError):
    """A transcription outlived its budget and was aborted (one utterance, not the service)."""

    def __init__(self, *, queue_ms: float, elapsed_ms: float) -> None:
        self.queue_ms = queue_ms
        self.elapsed_ms = elapsed_ms
        super().__init__(f"transcription aborted after {elapsed_ms:.0f} ms")


_E = TypeVar("_E", bound=BaseException)


def find_error(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first ``kind`` in ``exc`` or in the exception groups it is wrapped in.

    Nurseries wrap what their tasks raise in exception groups; policy is
    decided on what is inside.
    """
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_error(inner, kind)
            if found is not None:
                return found
    return None


def only_errors(exc: BaseException, *kinds: type[BaseException]) -> bool:
    """``exc`` is one of ``kinds``, or exception groups holding nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(only_errors(inner, *kinds) for inner in exc.exceptions)
    return isinstance(exc, kinds)


def validation_problem(exc: ValidationError, subject: str) -> str:
    """The first thing wrong with a client's message, as one line for its answer:
    ``where: what`` (``subject`` names the whole message when the problem is in
    no one field)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or subject
    problem = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return f"{where}: {problem}"
