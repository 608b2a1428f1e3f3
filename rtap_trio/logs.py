"""Logging: loguru's sinks, one JSON object per line, and the standard library routed into them.

Apart from metrics and the HTTP port because every entry point (the service,
``replay``, ``eval``) sets up logging first, before anything else is loaded,
and needs nothing else for it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from loguru import logger

from .settings import TelemetrySettings

__all__ = ["configure_logging"]


def configure_logging(settings: TelemetrySettings, session_id: str) -> None:
    """Send loguru's records to stderr as one JSON object per line (or plain text).

    Loguru's logger is process-wide by design; this replaces its sinks.
    """
    logger.remove()
    pid = os.getpid()

    def json_sink(message: Any) -> None:
        record = message.record
        extra = record["extra"]
        entry: dict[str, Any] = {
            "timestamp": record["time"].isoformat(),
            "level": record["level"].name,
            "message": record["message"],
            "component": extra.get("component", record["name"]),
            "session_id": extra.get("session_id", session_id),
            "pid": pid,
        }
        for key in ("stage", "latency_ms", "utterance_id", "state"):
            if key in extra:
                entry[key] = extra[key]
        for key, value in extra.items():
            if key not in entry and key not in ("component",):
                entry[key] = value
        if record["exception"] is not None:
            exc_type, exc_value, _ = record["exception"]
            entry["error"] = f"{getattr(exc_type, '__name__', exc_type)}: {exc_value}"
        sys.stderr.write(json.dumps(entry, default=str) + "\n")

    if settings.log_format == "json":
        logger.add(json_sink, level=settings.log_level, backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=settings.log_level,
            format="{time:HH:mm:ss.SSS} {level:<7} {extra[component]:<10} {message}",
            backtrace=False,
            diagnose=False,
        )
    logger.configure(extra={"component": "rtap", "session_id": session_id})
    _route_stdlib_logging(settings.log_level)


class _ToLoguru(logging.Handler):
    """Hands records of the standard library's logging (and of ``warnings``) to loguru.

    Libraries and the model converter log through ``logging``, and numpy
    warns through ``warnings``: without this they print plain text between
    the JSON lines.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        component = "warnings" if record.name == "py.warnings" else record.name
        logger.bind(component=component).opt(exception=record.exc_info).log(
            level, record.getMessage().strip()
        )


def _route_stdlib_logging(level: str) -> None:
    root = logging.getLogger()
    root.handlers = [_ToLoguru()]
    # The same threshold as loguru's, so that nothing is formatted for nothing.
    levels = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO}
    root.setLevel(levels.get(level, logging.INFO if level == "SUCCESS" else logging.WARNING))
    logging.captureWarnings(True)
