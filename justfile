# RTAP tasks. `just` comes with the dev extra (rust-just); run scripts/setup.sh first.
set shell := ["bash", "-euo", "pipefail", "-c"]

py := ".venv/bin/python"

# list the recipes
default:
    @just --list

# install everything (system packages, .venv, models)
setup:
    scripts/setup.sh

# run the service on the built-in demo recording
demo *ARGS:
    {{py}} -m rtap_trio --source demo {{ARGS}}

# run the service (default profile, microphone)
run *ARGS:
    {{py}} -m rtap_trio run {{ARGS}}

# run a file through the pipeline as fast as possible
replay PATH *ARGS:
    {{py}} -m rtap_trio replay {{PATH}} {{ARGS}}

# the whole test suite (what CI runs)
test *ARGS:
    {{py}} -m pytest {{ARGS}}

# only the fast unit tests
test-fast:
    {{py}} -m pytest -m "not slow"

# lint and type-check
lint:
    {{py}} -m ruff check rtap_trio tests scripts
    {{py}} -m ruff format --check rtap_trio tests scripts
    {{py}} -m mypy rtap_trio

# regenerate the demo recording and the test fixtures (espeak-ng + sox)
speech:
    {{py}} scripts/make_speech.py --demo --fixtures tests/fixtures --check

# retrain the shipped sentiment model (separate venv: fasttext-numpy2-wheel)
train-sentiment:
    {{py}} scripts/train_sentiment.py

# convert the packaged Whisper models to ggml (cached)
models:
    {{py}} -m rtap_trio models convert --dtype q8_0 --dtype f16 tiny.en base

# benchmarks: JSON + Markdown report in bench-results/ (`just bench --quick` for a smoke run)
bench *ARGS:
    {{py}} -m rtap_trio bench {{ARGS}}

# accuracy on ../shared/corpus (or a folder given): WER, wake word, language ID
eval *ARGS:
    {{py}} -m rtap_trio eval {{ARGS}}

# rebuild whisper.cpp (pywhispercpp) from source for this CPU
build-native:
    scripts/build_native.sh

# soak: the service with several real-time sessions for a long run (default 30 min)
soak *ARGS:
    {{py}} -m rtap_trio soak {{ARGS}}

# the fuzz and property tests alone, with many more examples than CI runs
fuzz:
    HYPOTHESIS_PROFILE=thorough {{py}} -m pytest tests/test_fuzz.py

# build the container image
image:
    podman build -t rtap-trio:latest -f Containerfile .
