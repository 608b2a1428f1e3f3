"""onnxruntime, imported the one way RTAP imports it: with its telemetry off.

onnxruntime 1.32 on Linux starts Microsoft's 1DS telemetry when it is
imported: it writes a session file (``$TMPDIR/.ses``; found by the upload
tests, which check that nothing lands in the service's TMPDIR) and would send
events where a network lets it. A voice service on a LAN box sends nothing
anywhere: ``ORT_DISABLE_TELEMETRY=1`` before the first import turns it off
(checked: no ``.ses``). An operator who set the variable keeps their value.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["import_onnxruntime"]


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module; raises ImportError where it is not installed."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import importlib

    return importlib.import_module("onnxruntime")
