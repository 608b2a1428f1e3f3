"""JSON from a network client, with only numbers a field could take.

``json.loads`` takes what RFC 8259 does not (``NaN``, ``Infinity``), turns
``1e400`` into ``inf`` (which ``int()`` then refuses with OverflowError), and
raises a plain ValueError, not a JSONDecodeError, for an integer past CPython's
4300-digit conversion limit: each of those closed ``/v1/realtime`` with 1011
and ``/v1/audio`` with 1000 and no reason. Here every one of them is a
:class:`ClientJsonError` saying what was wrong, for the endpoint to answer as
it answers any bad message.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["ClientJsonError", "loads"]

#: An int64 with its sign: no field of any protocol takes more.
_MAX_INT_CHARS = 20
#: Far past a double's 17 significant digits and 3-digit exponent.
_MAX_FLOAT_CHARS = 64


class ClientJsonError(ValueError):
    """Text that is not JSON, or JSON with a number no field takes; ``str()`` says which."""


def _abbreviated(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"


def _int(text: str) -> int:
    if len(text) > _MAX_INT_CHARS:
        raise ClientJsonError(f"the number {_abbreviated(text)} is out of range")
    return int(text)


def _float(text: str) -> float:
    value = float(text) if len(text) <= _MAX_FLOAT_CHARS else math.inf
    if not math.isfinite(value):
        raise ClientJsonError(f"the number {_abbreviated(text)} is out of range")
    return value


def _constant(text: str) -> float:
    raise ClientJsonError(f"{text} is not a JSON number")


def loads(text: str | bytes) -> Any:
    """``text`` parsed; ClientJsonError for bad JSON, nesting too deep or a bad number."""
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise ClientJsonError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    except RecursionError:
        raise ClientJsonError("not JSON RTAP takes: nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ClientJsonError(f"not JSON: not UTF-8 ({exc.reason})") from None
