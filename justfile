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

# lint and type-check (and the Containerfile, with hadolint if installed)
lint:
    {{py}} -m ruff check rtap_trio tests scripts docs/examples
    {{py}} -m ruff format --check rtap_trio tests scripts docs/examples
    {{py}} -m mypy rtap_trio
    if [ -x .venv/bin/hadolint ]; then .venv/bin/hadolint --failure-threshold warning Containerfile Containerfile.cuda; fi

# regenerate the demo recording and the test fixtures (espeak-ng + sox)
speech:
    {{py}} scripts/make_speech.py --demo --fixtures tests/fixtures --check

# retrain the shipped sentiment model (separate venv: fasttext-numpy2-wheel)
train-sentiment:
    {{py}} scripts/train_sentiment.py

# convert the packaged Whisper models to ggml, fetch the Smart Turn model (cached)
models:
    {{py}} -m rtap_trio models convert --dtype q8_0 --dtype f16 tiny.en base
    {{py}} -m rtap_trio models fetch smart-turn

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

# build the container image (CPU), localhost/rtap-trio:latest (docs/operations.md)
image:
    scripts/image.sh build

# build the image, then run it as an operator would and check it (about 2 min)
image-test: image
    scripts/image.sh test

# systemd-analyze verify on every unit in ops/systemd, failing on any output
units-check:
    {{py}} -m pytest -q tests/test_units.py

# the alert rules: promtool check + unit tests, and a real Prometheus against the service
rules-test:
    {{py}} -m pytest -q tests/test_monitoring.py

# regenerate the Grafana dashboard (ops/monitoring/grafana) from scripts/make_dashboard.py
dashboard:
    {{py}} scripts/make_dashboard.py

# the failover drill: primary and standby on this machine, the primary SIGKILLed; prints the take-over time
failover-drill:
    {{py}} -m pytest -q -s tests/test_failover.py
