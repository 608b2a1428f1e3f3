"""Bad input at start: one clear line on stderr, a non-zero exit, no hang, no traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtap_trio.bench.common import ServicePorts

from .support import REPO, assert_one_line_error, rtap

#: Every listening port 0 (any free one): these runs are about something else.
EPHEMERAL_PORTS = ServicePorts(0, 0, 0, 0, 0).env()


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_unknown_profile() -> None:
    assert_one_line_error(rtap("config", "--profile", "nope"), 2, "nope", "not found")


def test_an_exposed_address_without_a_token_does_not_start() -> None:
    result = rtap("--source", "none", env={**EPHEMERAL_PORTS, "RTAP_BIND_ADDRESS": "0.0.0.0"})
    assert_one_line_error(result, 2, "output.bind_address is 0.0.0.0", "RTAP_SECURITY__TOKEN")


def test_corrupt_wav(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + os.urandom(64))
    assert_one_line_error(
        rtap("replay", str(bad), "--no-wake", "--profile", "pc2"), 4, str(bad), "cannot decode"
    )


def test_missing_audio_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.wav"
    assert_one_line_error(rtap("replay", str(missing), "--profile", "pc2"), 4, "no such file")


def test_missing_model_file(tmp_path: Path) -> None:
    wav = REPO / "rtap_trio" / "audio" / "data" / "demo.wav"
    missing = tmp_path / "ggml-missing.bin"
    result = rtap(
        "replay", str(wav), "--profile", "pc2", "--set", f"stt.whispercpp.model_path={missing}"
    )
    assert_one_line_error(result, 3, str(missing))


def test_corrupt_model_file(tmp_path: Path) -> None:
    wav = REPO / "rtap_trio" / "audio" / "data" / "demo.wav"
    broken = tmp_path / "ggml-broken.bin"
    broken.write_bytes(b"not a ggml file" * 100)
    result = rtap(
        "replay", str(wav), "--profile", "pc2", "--set", f"stt.whispercpp.model_path={broken}"
    )
    assert_one_line_error(result, 3, str(broken))


def test_unknown_audio_device() -> None:
    result = rtap(
        "run",
        "--profile",
        "pc2",
        "--source",
        "mic",
        env={"AUDIO_DEVICE": "no-such-microphone", **EPHEMERAL_PORTS},
    )
    assert_one_line_error(result, 4, "no-such-microphone")


@pytest.mark.parametrize(
    ("variable", "what"),
    [
        ("RTAP_HTTP__PORT", "telemetry"),
        ("RTAP_OUTPUT__WEBSOCKET_PORT", "websocket"),
        ("RTAP_OUTPUT__ZMQ_PUB_PORT_EVENTS", "zmq events"),
    ],
)
def test_port_in_use(taken_port: int, variable: str, what: str) -> None:
    ports = {**EPHEMERAL_PORTS, variable: str(taken_port)}
    result = rtap("run", "--profile", "pc2", "--source", "demo", env=ports)
    assert_one_line_error(result, 5, what, f"127.0.0.1:{taken_port}")


def test_unknown_wake_word() -> None:
    result = rtap(
        "replay",
        str(REPO / "rtap_trio" / "audio" / "data" / "demo.wav"),
        "--profile",
        "pc2",
        "--set",
        "wakeword.keywords=[hey_toaster]",
    )
    assert_one_line_error(result, 2, "wakeword.keywords", "hey_toaster")


def test_stt_budget_blown_gives_stt_timeout_events_and_a_clean_exit() -> None:
    # 100 ms is far below what whisper needs on these cores: every utterance times out.
    jfk = REPO.parent / "shared" / "corpus" / "jfk.wav"
    if not jfk.is_file():
        pytest.skip("../shared/corpus/jfk.wav is not here")
    result = rtap(
        "replay",
        str(jfk),
        "--no-wake",
        "--profile",
        "pc2",
        "--set",
        "stt.budget_ms=100",
        env={"RTAP_LOG_LEVEL": "WARNING"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == ""  # no transcript
    warnings = [line for line in result.stderr.splitlines() if "over budget" in line]
    assert len(warnings) == 2  # jfk.wav holds two utterances at the default hangover
    assert "Fatal" not in result.stderr and "Traceback" not in result.stderr


def test_truncated_model_file(tmp_path: Path) -> None:
    from rtap_trio.stt.whispercpp.models import resolve_whisper_model

    whole = resolve_whisper_model("tiny.en")
    cut = tmp_path / "ggml-cut.bin"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    wav = REPO / "rtap_trio" / "audio" / "data" / "demo.wav"
    result = rtap(
        "replay", str(wav), "--profile", "pc2", "--set", f"stt.whispercpp.model_path={cut}"
    )
    assert_one_line_error(result, 3, str(cut), "runs past the end")


# ------------------------------------------------ hostile profiles (issue 12)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"stt:\n  model_name: \xff\xfe base\n", "not UTF-8"),
        # libyaml's scanner stops 5000 levels itself ("exceeded maximum nesting
        # depth"); the loader stops 40 (its limit is 32 levels).
        (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nesting depth"),
        (b"a: " + b"[" * 40 + b"]" * 40 + b"\n", "nested deeper than"),
        (
            # The "billion laughs" of YAML: each line doubles the one before, 2^30 at the end.
            b"a0: &a0 [x, x]\n"
            + b"".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n".encode() for i in range(1, 30)),
            "aliases",
        ),
        (b"# padding\n" * 1_000_000, "limit"),
    ],
    ids=["not-utf8", "deeply-nested", "nested", "alias-bomb", "10-MB"],
)
def test_hostile_profile_is_one_line_and_fast(tmp_path: Path, content: bytes, needle: str) -> None:
    profile = tmp_path / "hostile.yaml"
    profile.write_bytes(content)
    started = time.monotonic()
    result = rtap("config", "--profile", str(profile))
    elapsed = time.monotonic() - started
    assert_one_line_error(result, 2, str(profile), needle)
    # Python's start-up is most of this; the alias bomb used to take 85 s and 4 GB.
    assert elapsed < 30, elapsed


@pytest.mark.parametrize(
    ("target", "needle"),
    [("dir", "is a directory"), ("fifo", "is a FIFO"), ("/dev/zero", "is a device")],
)
def test_replay_path_that_is_not_a_file_says_what_it_is(
    tmp_path: Path, target: str, needle: str
) -> None:
    if target == "dir":
        path = tmp_path
    elif target == "fifo":
        path = tmp_path / "audio.fifo"
        os.mkfifo(path)
    else:
        path = Path(target)
    result = rtap("replay", str(path), "--profile", "pc2", env=EPHEMERAL_PORTS)
    assert_one_line_error(result, 4, str(path), needle)


def test_nan_samples_and_library_warnings_stay_json(tmp_path: Path) -> None:
    import numpy as np
    import soundfile

    audio = np.zeros(16000, dtype=np.float32)
    audio[4000:8000] = np.nan
    audio[9000] = np.inf
    path = tmp_path / "nan.wav"
    soundfile.write(path, audio, 16000, subtype="FLOAT")
    result = rtap(
        "replay", str(path), "--no-wake", "--profile", "pc2", env={"RTAP_LOG_LEVEL": "WARNING"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for line in result.stderr.splitlines():
        if line.startswith("replayed "):  # the summary line of replay
            continue
        json.loads(line)  # every other line is a JSON log record


def test_standard_library_logging_and_warnings_become_json_lines() -> None:
    code = (
        "import logging, warnings\n"
        "from rtap_trio.settings import TelemetrySettings\n"
        "from rtap_trio.logs import configure_logging\n"
        "configure_logging(TelemetrySettings(), 'test')\n"
        "logging.getLogger('rtap_trio.models').warning('replacing a corrupt model')\n"
        "warnings.warn('invalid value encountered in cast', RuntimeWarning)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["level"] for r in records] == ["WARNING", "WARNING"], result.stderr
    assert records[0]["component"] == "rtap_trio.models"
    assert "invalid value" in records[1]["message"] and records[1]["component"] == "warnings"
