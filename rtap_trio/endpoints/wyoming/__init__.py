"""Wyoming (Home Assistant's voice services): its wire format apart from its server.

:mod:`.codec` frames and reads events within size limits; :mod:`.server`
serves connections, each audio stream a session of kind ``wyoming``.
"""

from __future__ import annotations

from .server import WyomingServer

__all__ = ["WyomingServer"]
