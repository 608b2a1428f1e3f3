#!/usr/bin/env bash
# Rebuilds pywhispercpp (whisper.cpp) from PyPI's sdist for this machine's CPU.
#
# The PyPI wheel is built for any x86-64; a build with GGML_NATIVE=ON uses
# every instruction set this CPU has (AVX-512, VNNI, ...) and transcribes
# markedly faster. Such a build must not be copied to an older CPU (illegal
# instruction): rebuild on each host (`RTAP_NATIVE=1 scripts/setup.sh` does).
#
#   scripts/build_native.sh              build unless this host's build is installed
#   RTAP_NATIVE=force scripts/build_native.sh   rebuild anyway
#   RTAP_CMAKE_ARGS="-DGGML_CUDA=1" scripts/build_native.sh   extra CMake options
#                                        (CUDA on main_pc: docs/cuda.md)
#   PYTHON=/path/to/python scripts/build_native.sh             another environment
#
# Exit status: 0 built (or already current) and verified; 1 the build or its
# check failed (whatever was installed before stays installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
VERSION=1.5.1
EXTRA="${RTAP_CMAKE_ARGS:-}"
# The sdist's setup.py installs libwhisper/libggml next to the extension but
# gives nothing an rpath, so the import fails without LD_LIBRARY_PATH; $ORIGIN
# (the loading library's own folder) fixes that for the extension and the libs.
# OpenMP is whisper.cpp's default; explicit so a toolchain without it fails
# loudly instead of silently building a slower thread pool.
# shellcheck disable=SC2016  # $ORIGIN is for the dynamic linker, not the shell
CMAKE_ARGS_VALUE='-DGGML_NATIVE=ON -DGGML_OPENMP=ON -DCMAKE_INSTALL_RPATH=$ORIGIN -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON'
[ -n "$EXTRA" ] && CMAKE_ARGS_VALUE="$CMAKE_ARGS_VALUE $EXTRA"

# What the build depends on: the version, this CPU and the options. A marker
# with it lets setup.sh run again without rebuilding; a run without extra
# options keeps any build for this CPU, so setup does not undo a CUDA build.
cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | tr ' ' '\n' | sort | tr '\n' ' ')
key="pywhispercpp==$VERSION|$(printf '%s' "$cpu_flags" | sha256sum | cut -c1-16)"
stamp="$key|$CMAKE_ARGS_VALUE"
venv_dir=$("$PY" -c 'import sys; print(sys.prefix)')
marker="$venv_dir/.rtap-native-build"
current() {
  [ -f "$marker" ] || return 1
  local recorded
  recorded=$(cat "$marker")
  [ "$recorded" = "$stamp" ] || { [ -z "$EXTRA" ] && [ "${recorded%%|-D*}" = "$key" ]; }
}

verify() {
  # A fresh interpreter with no LD_LIBRARY_PATH: what the service will see.
  env -u LD_LIBRARY_PATH "$PY" - <<'EOF'
import sys
from pywhispercpp.model import Model
info = Model.system_info()
print(f"build_native: whisper.cpp system info: {info.strip()}")
flags = open("/proc/cpuinfo").read().split()
wanted = [name for cpu, name in (("avx2", "AVX2"), ("avx512f", "AVX512")) if cpu in flags]
missing = [name for name in wanted if f"{name} = 1" not in info]
if missing:
    sys.exit(f"build_native: the build lacks {', '.join(missing)} although this CPU has it")
EOF
}

if [ "${RTAP_NATIVE:-1}" != "force" ] && current; then
  if verify >/dev/null 2>&1; then
    echo "build_native: native pywhispercpp $VERSION already installed"
    exit 0
  fi
fi

if ! command -v "${CXX:-c++}" >/dev/null 2>&1; then
  echo "build_native: no C++ compiler (${CXX:-c++}); install build-essential" >&2
  exit 1
fi

echo "build_native: building pywhispercpp $VERSION from source (CMAKE_ARGS=$CMAKE_ARGS_VALUE); takes a few minutes"
rm -f "$marker"
started=$SECONDS
# --no-binary for pywhispercpp only: its build requirements (cmake, ninja) come
# as wheels. --no-cache-dir: pip would otherwise reuse a wheel it built earlier
# from the same sdist with other options (say, CUDA), whatever CMAKE_ARGS says.
if ! CMAKE_ARGS="$CMAKE_ARGS_VALUE" "$PY" -m pip install -q --no-cache-dir --force-reinstall \
  --no-deps --no-binary pywhispercpp "pywhispercpp==$VERSION"; then
  echo "build_native: the build failed; the previously installed pywhispercpp is unchanged" >&2
  exit 1
fi
if ! verify; then
  echo "build_native: the build does not load or lacks this CPU's features; reinstalling the PyPI wheel" >&2
  "$PY" -m pip install -q --force-reinstall --no-deps --only-binary pywhispercpp "pywhispercpp==$VERSION" || true
  exit 1
fi
echo "$stamp" >"$marker"
echo "build_native: done in $((SECONDS - started)) s"
