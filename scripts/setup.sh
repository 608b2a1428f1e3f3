#!/usr/bin/env bash
# Sets up RTAP on a fresh Debian/Ubuntu machine with Python 3.11:
# system packages, a virtualenv in .venv, the package with its dev tools, and the
# Whisper models converted once into the cache. Safe to run again: it skips what
# is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libportaudio2   # PortAudio, for sounddevice (microphone capture)
  libasound2-plugins
  alsa-utils
  espeak-ng       # test and demo speech (scripts/make_speech.py)
  sox
  chromium        # the console's tests: a real headless browser (tests/browser.py)
  haproxy         # the load balancer in front of several instances (ops/haproxy, its drill)
  prometheus      # promtool and a real Prometheus for the monitoring tests (ops/monitoring)
  systemd         # systemd-analyze verify for the units (ops/systemd)
  podman          # the container image and its units (scripts/image.sh, docs/operations.md)
  runc
  debootstrap     # a local Debian base image where none can be pulled
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "setup: installing rtap_trio and its dependencies"
.venv/bin/python -m pip install -q -e '.[dev,bench,eval]'
# pvporcupine 1.9.5 is the last release that runs offline without an AccessKey.
# --no-deps: it declares enum34, which shadows the standard library's enum.
.venv/bin/python -m pip install -q --no-deps pvporcupine==1.9.5
.venv/bin/python -m pip uninstall -q -y enum34 2>/dev/null || true
# An editable install leaves the package without bytecode, and where
# PYTHONDONTWRITEBYTECODE is set (containers, CI) every process compiled all of
# it again: 0.2 s of CPU on each start (0.94 -> 0.75 s to import the service).
.venv/bin/python -m compileall -q rtap_trio >/dev/null

# A whisper.cpp build for this CPU (scripts/build_native.sh, 1.5-5 min) is
# opt-in: with stt.whispercpp.audio_ctx sized to the utterance it measured no faster than
# the PyPI wheel on the CI machine (docs/cuda.md, "CPU speed"). RTAP_NATIVE=1
# builds it; a failed build keeps the wheel, so setup still completes.
if [ "${RTAP_NATIVE:-0}" = "0" ]; then
  echo "setup: using the PyPI build of whisper.cpp (RTAP_NATIVE=1 builds one for this CPU)"
elif ! command -v "${CXX:-c++}" >/dev/null 2>&1; then
  echo "setup: no C++ compiler: keeping the PyPI build of whisper.cpp (install g++, then run scripts/build_native.sh)"
elif ! scripts/build_native.sh; then
  echo "setup: WARNING: the native whisper.cpp build failed (see above); using the PyPI wheel" >&2
fi

echo "setup: converting Whisper models (once; cached)"
.venv/bin/python -m rtap_trio models convert --dtype q8_0 --dtype f16 tiny.en base
# The end-of-turn model (turn.engine smart_turn): one file from the pinned pipecat-ai
# wheel, sha256-checked, with its licence; pipecat itself is not installed.
echo "setup: fetching the Smart Turn model (once; cached)"
.venv/bin/python -m rtap_trio models fetch smart-turn
echo "setup: done"
