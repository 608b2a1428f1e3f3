"""Which compute devices the loaded whisper.cpp build has: a CUDA build lists a GPU.

ggml registers a backend per device kind it was built with; the PyPI wheel has
only the CPU. Asking whisper.cpp for the GPU on a CPU-only build is not an
error there (it quietly runs on the CPU), so RTAP asks ggml's registry itself,
through the very libggml that pywhispercpp loaded, and says so when it falls
back.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

__all__ = ["gpu_devices", "loaded_libggml"]

#: ggml_backend_dev_type: CPU, GPU, integrated GPU, accelerator.
_GPU_TYPES = (1, 2)


def loaded_libggml() -> Path | None:
    """The libggml (the backend registry, not -base or -cpu) in this process, if any."""
    import _pywhispercpp  # noqa: F401  # loads libwhisper and its ggml

    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            path = line.rstrip("\n").split(" ", 5)[-1].strip()
            name = Path(path).name
            backend = name.startswith(("libggml-base", "libggml-cpu", "libggml-cuda"))
            if name.startswith("libggml") and ".so" in name and not backend:
                return Path(path)
    return None


@functools.cache
def gpu_devices() -> tuple[str, ...]:
    """Names of the GPU devices ggml can use here (empty on a CPU-only build)."""
    path = loaded_libggml()
    if path is None:
        return ()
    lib = ctypes.CDLL(str(path))
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_name.restype = ctypes.c_char_p
    lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    devices = (lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count()))
    return tuple(
        lib.ggml_backend_dev_name(device).decode()
        for device in devices
        if lib.ggml_backend_dev_type(device) in _GPU_TYPES
    )
