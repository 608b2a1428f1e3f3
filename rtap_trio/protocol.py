"""Every message RTAP's own protocols carry, as JSON Schema (draft 2020-12).

Generated from the pydantic models that validate and produce the messages, so
the published schemas cannot drift from the code: ``python -m rtap_trio
schemas --out docs/schemas`` writes them, and a test checks that the committed
files match. Wyoming and the OpenAI APIs are other parties' protocols and are
documented by them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .endpoints import StartMessage
from .transport.schemas import (
    CatchupReply,
    CatchupRequest,
    EventMessage,
    LevelMessage,
    SubscribeRequest,
    TranscriptMessage,
    WatcherNotice,
)

__all__ = ["SCHEMAS", "json_schemas", "write_schemas"]

#: file stem -> (model, where it travels)
SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "event": (EventMessage, "ZeroMQ 6552, WebSocket watchers and /v1/audio"),
    "transcript": (TranscriptMessage, "ZeroMQ 6553, WebSocket watchers and /v1/audio"),
    "level": (LevelMessage, "WebSocket watchers that ask for topic levels"),
    "watcher-notice": (WatcherNotice, "WebSocket watchers: hello, subscribed, messages_dropped"),
    "subscribe-request": (SubscribeRequest, "a WebSocket watcher to the server"),
    "audio-start": (StartMessage, "a /v1/audio client's first message"),
    "catchup-request": (CatchupRequest, "ZeroMQ REQ to 6554; /api/transcripts query"),
    "catchup-reply": (CatchupReply, "ZeroMQ 6554's answer; /api/transcripts"),
}


def json_schemas() -> dict[str, dict[str, Any]]:
    schemas = {}
    for stem, (model, where) in SCHEMAS.items():
        schema = model.model_json_schema(mode="serialization")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://rtap.invalid/schemas/{stem}.json",
            "description": f"{(model.__doc__ or model.__name__).strip().splitlines()[0]} ({where})",
            **{k: v for k, v in schema.items() if k != "description"},
        }
        schemas[stem] = schema
    return schemas


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, schema in json_schemas().items():
        path = folder / f"{stem}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
