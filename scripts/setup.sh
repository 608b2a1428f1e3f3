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
.venv/bin/python -m pip install -q -e '.[dev]'
# pvporcupine 1.9.5 is the last release that runs offline without an AccessKey.
# --no-deps: it declares enum34, which shadows the standard library's enum.
.venv/bin/python -m pip install -q --no-deps pvporcupine==1.9.5
.venv/bin/python -m pip uninstall -q -y enum34 2>/dev/null || true

echo "setup: converting Whisper models (once; cached)"
.venv/bin/python -m rtap_trio models convert tiny.en base
echo "setup: done"
