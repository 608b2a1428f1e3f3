"""What an engine that chooses between engines tells the service: which one
answered, which failed and why, when it switched.

The engines may not know the service's outbox or metrics (an import-linter
contract keeps events and transport out of ``rtap_trio.stt``), so they tell an
:class:`EngineObserver` instead; the service hands them one that publishes
``stt_fallback`` / ``stt_remote_restored`` and counts the ``rtap_stt_engine_*``
metrics (:mod:`rtap_trio.stt_monitoring`). Until then, and in benches and
tests that drive engines alone, nobody listens (:class:`SilentObserver`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["CircuitClosed", "CircuitOpened", "EngineObserver", "Observable", "SilentObserver"]


@dataclass(frozen=True, slots=True)
class CircuitOpened:
    """The remote failed too often: every utterance goes to the fallback now."""

    #: the engine given up on ("remote"), and the one answering instead
    engine: str
    fallback: str
    #: why its last request failed ("connect", "timeout", "http_503", ...)
    reason: str
    #: failed requests in a row
    failures: int
    #: when it is tried again (a probe)
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class CircuitClosed:
    """A probe answered: the remote takes every utterance again."""

    engine: str
    #: how long the circuit was open
    down_s: float
    #: utterances the fallback answered meanwhile
    fallbacks: int


class EngineObserver(Protocol):
    def answered(self, engine: str, seconds: float) -> None:
        """``engine`` transcribed an utterance in ``seconds``."""

    def failed(self, engine: str, reason: str, seconds: float) -> None:
        """``engine`` could not (``reason``), after ``seconds``."""

    def fell_back(self, engine: str, reason: str) -> None:
        """An utterance for ``engine`` goes to the fallback instead (``reason``:
        the failure, or ``circuit_open``)."""

    def circuit_opened(self, opened: CircuitOpened) -> None: ...

    def circuit_closed(self, closed: CircuitClosed) -> None: ...


class SilentObserver:
    """Nobody listens."""

    def answered(self, engine: str, seconds: float) -> None:
        pass

    def failed(self, engine: str, reason: str, seconds: float) -> None:
        pass

    def fell_back(self, engine: str, reason: str) -> None:
        pass

    def circuit_opened(self, opened: CircuitOpened) -> None:
        pass

    def circuit_closed(self, closed: CircuitClosed) -> None:
        pass


@runtime_checkable
class Observable(Protocol):
    """An engine with something to tell: the service calls :meth:`observe` once
    its engines are loaded."""

    def observe(self, observer: EngineObserver) -> None: ...
