"""Loading the settings: profiles, ``extends:``, substitution, the environment, overrides.

A profile is a YAML file in the settings folder that names its parent with
``extends:`` and overrides only what differs; parents are deep-merged first.
Values may hold ``${VAR}`` or ``${VAR:default}``. The environment wins over the
files: ``RTAP_<SECTION>__<KEY>`` for any key, plus the short forms
``RTAP_LOG_LEVEL``, ``AUDIO_DEVICE`` and ``RTAP_AUDIO_MOCK``. ``RTAP_ENVIRONMENT``
picks the profile. Old setting names are renamed where they are read
(``renames.py``).

Every value remembers where it came from, so that a bad one is reported as one
line naming the file (or variable), the key path and the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from .renames import new_name, rename_old_keys
from .schema import DEFAULT_PROFILE, Settings
from .yaml_limits import MAX_PROFILE_BYTES, load_yaml_value

__all__ = ["ENV_PREFIX", "load_settings", "settings_dir"]

ENV_PREFIX = "RTAP_"

_SUBST = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")
_SHORT_ENV = {
    "RTAP_LOG_LEVEL": ("telemetry", "log_level"),
    "AUDIO_DEVICE": ("audio", "device"),
    "RTAP_AUDIO_MOCK": ("audio", "mock"),
}
_Origins = dict[tuple[str, ...], str]


def settings_dir(explicit: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The folder holding the profiles: explicit, $RTAP_SETTINGS_DIR, ./settings, or the repo's."""
    env = os.environ if environ is None else environ
    candidates = [explicit] if explicit else []
    if env.get("RTAP_SETTINGS_DIR"):
        candidates.append(Path(env["RTAP_SETTINGS_DIR"]))
    candidates += [Path.cwd() / "settings", Path(__file__).resolve().parents[2] / "settings"]
    for candidate in candidates:
        if candidate is not None and (candidate / f"{DEFAULT_PROFILE}.yaml").is_file():
            return candidate
    raise ConfigError(str(candidates[0] if candidates else "settings"), "", "no default.yaml found")


def load_settings(
    profile: str | None = None,
    *,
    directory: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the profile chain, the environment and ``overrides``; validate.

    ``overrides`` maps dotted key paths (``"audio.source"``) to values and wins
    over everything; the CLI uses it for its flags.
    """
    env = os.environ if environ is None else environ
    folder = settings_dir(directory, env)
    name = profile or env.get("RTAP_ENVIRONMENT") or DEFAULT_PROFILE
    origins: _Origins = {}
    renamed: list[str] = []
    merged = _load_profile_chain(name, folder, env, origins, renamed, seen=())
    merged["environment"] = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    _apply_environment(merged, env, origins, renamed)
    for dotted, value in (overrides or {}).items():
        path = new_name(tuple(dotted.split(".")), "command line", renamed)
        _set_path(merged, path, value, origins, "command line")
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise _config_error(exc, origins) from None
    settings._deprecations = tuple(renamed)
    return settings


def _profile_path(name: str, folder: Path) -> Path:
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    return folder / f"{name}.yaml"


def _load_profile_chain(
    name: str,
    folder: Path,
    env: Mapping[str, str],
    origins: _Origins,
    renamed: list[str],
    seen: tuple[str, ...],
) -> dict[str, Any]:
    path = _profile_path(name, folder)
    if str(path) in seen:
        raise ConfigError(str(path), "extends", f"profile inheritance loops: {' -> '.join(seen)}")
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(str(path), "", f"profile '{name}' not found (known: {', '.join(known)})")
    document = _read_profile(path)
    document = {} if document is None else document
    if not isinstance(document, dict):
        raise ConfigError(str(path), "", "a profile must be a mapping of sections")
    parent = document.pop("extends", None)
    base: dict[str, Any] = {}
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(str(path), "extends", "must be a profile name")
        base = _load_profile_chain(parent, path.parent, env, origins, renamed, (*seen, str(path)))
    document = _substitute(document, env, str(path), ())
    rename_old_keys(document, str(path), renamed)
    _deep_merge(base, document, origins, str(path), ())
    return base


def _read_profile(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ConfigError(
                str(path), "", f"profile is {size:,} bytes; the limit is {MAX_PROFILE_BYTES:,}"
            )
        with path.open("rb") as f:  # read no more than the limit, whatever stat said
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise ConfigError(str(path), "", f"profile is over the {MAX_PROFILE_BYTES:,} byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", f"not UTF-8 text (byte {exc.start})") from None
    try:
        return load_yaml_value(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(path), where, f"invalid YAML: {reason}") from None


def _substitute(value: Any, env: Mapping[str, str], source: str, path: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, env, source, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, source, (*path, str(i))) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in env:
            return env[var]
        if default is None:
            raise ConfigError(source, ".".join(path), f"${{{var}}} is not set and has no default")
        return default

    result = _SUBST.sub(replace, value)
    if _SUBST.fullmatch(value):
        # A value that is wholly one substitution takes the YAML type of what
        # was substituted, so "${PORT:8080}" is the number 8080.
        try:
            return load_yaml_value(result) if result else result
        except yaml.YAMLError:
            return result
    return result


def _deep_merge(
    into: dict[str, Any],
    new: Mapping[str, Any],
    origins: _Origins,
    source: str,
    path: tuple[str, ...],
) -> None:
    for key, value in new.items():
        key_path = (*path, str(key))
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value, origins, source, key_path)
        else:
            into[key] = value
            origins[key_path] = source
            if isinstance(value, dict):
                for sub in _leaf_paths(value, key_path):
                    origins[sub] = source


def _leaf_paths(value: Mapping[str, Any], path: tuple[str, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, sub in value.items():
        out.append((*path, str(key)))
        if isinstance(sub, dict):
            out += _leaf_paths(sub, (*path, str(key)))
    return out


def _set_path(
    into: dict[str, Any], path: tuple[str, ...], value: Any, origins: _Origins, source: str
) -> None:
    node = into
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value
    origins[path] = source


def _apply_environment(
    merged: dict[str, Any], env: Mapping[str, str], origins: _Origins, renamed: list[str]
) -> None:
    for var, path in _SHORT_ENV.items():
        if env.get(var, "") != "":
            _set_path(merged, path, _env_value(env[var]), origins, f"environment variable {var}")
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        parts = tuple(p.lower() for p in var[len(ENV_PREFIX) :].split("__"))
        if any(not p for p in parts):
            raise ConfigError(f"environment variable {var}", "", "empty key segment")
        source = f"environment variable {var}"
        _set_path(merged, new_name(parts, source, renamed), _env_value(raw), origins, source)


def _env_value(raw: str) -> Any:
    # Environment strings are parsed as YAML scalars or flow lists, so
    # RTAP_WAKEWORD__KEYWORDS='[jarvis, computer]' and '0.5' mean what they say.
    try:
        value = load_yaml_value(raw)
    except yaml.YAMLError:
        return raw
    return raw if value is None or isinstance(value, dict) else value


def _config_error(exc: ValidationError, origins: _Origins) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    loc = tuple(str(part) for part in first["loc"])
    # A check across sections (a model validator) has no one key to blame.
    source = "defaults" if loc else "settings"
    for size in range(len(loc), 0, -1):
        if loc[:size] in origins:
            source = origins[loc[:size]]
            break
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "unknown key"
    elif "input" in first and not isinstance(first["input"], dict | list):
        reason = f"{reason} (got {first['input']!r})"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ConfigError(source, ".".join(loc), reason)
