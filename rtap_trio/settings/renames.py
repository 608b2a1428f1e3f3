"""Setting names that moved: old names still load, each source's noted in one line.

Apart from the loader because it is a list that grows with every rename and
is read by itself (what was renamed, and when); the loader only asks it for
a key's name now.
"""

from __future__ import annotations

from typing import Any

from .processing import WhisperCppSettings

__all__ = ["RENAMED_KEYS", "new_name", "rename_old_keys"]

#: Keys that moved, old path -> new path. A profile, variable or ``--set`` that
#: uses an old name still loads, with a one-line warning. Issue 17 moved
#: whisper.cpp's keys from stt into stt.whispercpp, beside the pool's, and the
#: HTTP port's from telemetry into http (telemetry kept logs and metrics).
RENAMED_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {
    **{("stt", key): ("stt", "whispercpp", key) for key in WhisperCppSettings.model_fields},
    **{
        ("telemetry", key): ("http", key)
        for key in ("enabled", "bind_address", "port", "max_connections")
    },
}


def new_name(path: tuple[str, ...], source: str, renamed: list[str]) -> tuple[str, ...]:
    """The key path ``path`` has now (RENAMED_KEYS), noted in ``renamed`` if it changed."""
    new = RENAMED_KEYS.get(path)
    if new is None:
        return path
    renamed.append(_renaming(source, [(path, new)]))
    return new


def rename_old_keys(document: dict[str, Any], source: str, renamed: list[str]) -> None:
    """Move the keys of one profile that have old names to their new ones, before
    it is merged: a later source still wins, and errors name this file."""
    moved: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    for old, new in RENAMED_KEYS.items():
        parent: Any = document
        for key in old[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or old[-1] not in parent:
            continue
        target: Any = document
        for key in new[:-1]:
            target = target.setdefault(key, {}) if isinstance(target, dict) else None
        if isinstance(target, dict):  # else the section is not a mapping: that error stands
            target.setdefault(new[-1], parent.pop(old[-1]))  # both given: the new name wins
            moved.append((old, new))
    if moved:
        renamed.append(_renaming(source, moved))


def _renaming(source: str, moved: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> str:
    """One line for one source's old names: logged by the service at its start,
    once its logging is set up (a line printed while loading would not be JSON)."""
    old = ", ".join(".".join(path) for path, _ in moved)
    new = ", ".join(".".join(path) for _, path in moved)
    return f"{source}: deprecated setting names {old} (now {new}); they still load"
