"""The ports a service bound: what its start announces and its callers connect to."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BoundPorts"]


@dataclass(slots=True)
class BoundPorts:
    """Ports as bound: differ from the settings when those ask for port 0."""

    zmq_events: int | None = None
    zmq_transcripts: int | None = None
    websocket: int | None = None
    telemetry: int | None = None
    wyoming: int | None = None
    zmq_catchup: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {
            "zmq_events": self.zmq_events,
            "zmq_transcripts": self.zmq_transcripts,
            "zmq_catchup": self.zmq_catchup,
            "websocket": self.websocket,
            "telemetry": self.telemetry,
            "wyoming": self.wyoming,
        }
