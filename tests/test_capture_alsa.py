"""The microphone path for real: sounddevice -> PortAudio -> ALSA, with no sound card.

An ``.asoundrc`` in a private ``HOME`` defines ``wavin``, a capture device whose
samples come from a raw s16le 16 kHz mono file (the ALSA ``file`` plugin's
``infile``, behind a ``plug``). It reads the file back bit-exact, but it is not
paced in real time, and past the end of the file it repeats stale samples from
its ring buffer; the recording therefore ends in a few seconds of digital
silence (longer than that buffer), so all it repeats afterwards is zeros.

PortAudio reads the ALSA configuration once, at ``import sounddevice``, so every
capture runs in a subprocess started with ``HOME`` pointing at the test folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from rtap_trio.bench.common import ServicePorts
from rtap_trio.devtools.textmetrics import word_error_rate
from rtap_trio.stt.whispercpp.models import default_cache_dir
from rtap_trio.transport.schemas import TranscriptMessage, parse_message

from .forkserver import rtap_command
from .support import REPO

TEXT = "turn on the kitchen lights"
RATE = 16000
FRAME = 320  # 20 ms
PADDING_S = 2.0
#: room tone before the speech, as a microphone hears it
LEAD_S = 0.5
DEVICE = "wavin"

ASOUNDRC = """\
pcm.wavfile_raw {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
pcm.{device} {{
    type plug
    slave {{ pcm "wavfile_raw"; format S16_LE; rate {rate}; channels 1 }}
}}
"""

# Runs in the subprocess: lists the inputs, then captures ``samples`` samples (or
# more, to a whole frame) from the device given as JSON (so 1 and "1" differ).
CAPTURE_SCRIPT = f"""\
import json, sys, time
import numpy as np
import trio
from rtap_trio.audio.mic import MicSource, list_input_devices
from rtap_trio.errors import AudioSourceError

FRAME = {FRAME}

async def capture(device, samples, out):
    source = MicSource(device, frame_samples=FRAME, queue_frames=100_000)
    await source.open()
    frames = []
    started = time.perf_counter()
    async for frame in source.frames():
        if frame.shape != (FRAME,) or frame.dtype != np.int16:
            raise AssertionError(f"bad frame {{frame.shape}} {{frame.dtype}}")
        frames.append(frame)
        if len(frames) * FRAME >= samples:
            break
    elapsed = time.perf_counter() - started
    np.concatenate(frames).tofile(out)
    return {{
        "source": source.name,
        "frames": len(frames),
        "elapsed_s": elapsed,
        "dropped": source.dropped,
        "overflows": source.overflows,
    }}

report = {{"devices": list_input_devices()}}
try:
    report.update(trio.run(capture, json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
except AudioSourceError as exc:
    report["error"] = str(exc)
print(json.dumps(report))
"""


@dataclass(frozen=True)
class AlsaHome:
    home: Path
    recording: Path  # raw s16le 16 kHz mono: LEAD_S of room, speech, PADDING_S of zeros
    speech_samples: int
    env: dict[str, str]

    def samples(self) -> np.ndarray[Any, np.dtype[np.int16]]:
        return np.fromfile(self.recording, dtype=np.int16)


def make_speech(folder: Path) -> np.ndarray[Any, np.dtype[np.int16]]:
    """espeak-ng's 22.05 kHz speech, resampled to 16 kHz s16 by sox, undithered."""
    wav, raw = folder / "speech.wav", folder / "speech.raw"
    subprocess.run(["espeak-ng", "-w", str(wav), TEXT], check=True, capture_output=True)
    # -D: no dither, so the recording is deterministic.
    to_raw = ["-D", "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", "-t", "raw"]
    subprocess.run(["sox", str(wav), *to_raw, str(raw)], check=True, capture_output=True)
    return np.fromfile(raw, dtype=np.int16)


def capture_env(home: Path) -> dict[str, str]:
    """This environment, with HOME moved and nothing else steering ALSA or RTAP."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ALSA_", "RTAP_"))
        and key not in ("XDG_CONFIG_HOME", "AUDIO_DEVICE", "AUDIODEV")
    }
    # The converted whisper models stay where they are, not in the new HOME.
    env["RTAP_MODEL_CACHE"] = os.environ.get("RTAP_MODEL_CACHE") or str(default_cache_dir())
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def alsa_home(tmp_path_factory: pytest.TempPathFactory) -> AlsaHome:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    home = tmp_path_factory.mktemp("alsa-home")
    speech = make_speech(home)
    assert speech.size > RATE and np.abs(speech).max() > 1000  # real speech, not silence
    recording = home / "recording.raw"
    # A microphone hears the room before anyone speaks: speech on a microphone's
    # very first frames began before capture and is dropped as a fragment.
    room = np.zeros(int(LEAD_S * RATE), dtype=np.int16)
    padding = np.zeros(int(PADDING_S * RATE), dtype=np.int16)
    np.concatenate([room, speech, padding]).tofile(recording)
    (home / ".asoundrc").write_text(ASOUNDRC.format(infile=recording, device=DEVICE, rate=RATE))
    return AlsaHome(home, recording, room.size + speech.size, capture_env(home))


def run_capture(alsa: AlsaHome, device: str | int, samples: int, out: Path) -> dict[str, Any]:
    script = alsa.home / "capture.py"
    if not script.exists():
        script.write_text(CAPTURE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), json.dumps(device), str(samples), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=alsa.env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def device_names(report: dict[str, Any]) -> list[str]:
    return [device["name"] for device in report["devices"]]


def test_capture_is_bit_exact(alsa_home: AlsaHome, tmp_path: Path) -> None:
    recording = alsa_home.samples()
    extra = RATE  # one second past the end of the file
    out = tmp_path / "captured.raw"
    report = run_capture(alsa_home, DEVICE, recording.size + extra, out)

    assert "error" not in report, report["error"]
    assert DEVICE in device_names(report), report["devices"]
    assert report["source"] == f"mic:{DEVICE}"
    assert report["dropped"] == 0 and report["overflows"] == 0, report
    captured = np.fromfile(out, dtype=np.int16)
    assert captured.size == report["frames"] * FRAME >= recording.size + extra

    # Align on the first non-zero sample: a fixed run of leading zeros added by
    # PortAudio or ALSA would show as a positive offset.
    offset = int(np.flatnonzero(captured)[0] - np.flatnonzero(recording)[0])
    assert offset >= 0 and not captured[:offset].any(), offset
    window = captured[offset : offset + recording.size]
    mismatches = np.flatnonzero(window != recording)
    assert mismatches.size == 0, f"offset {offset}: first mismatches at {mismatches[:10]}"
    assert offset == 0, f"capture starts with {offset} extra zero samples"
    # Past the end the device repeats its stale buffer: only padding zeros here.
    assert not captured[recording.size :].any()

    fps = report["frames"] / report["elapsed_s"]
    print(f"{report['frames']} frames in {report['elapsed_s'] * 1000:.1f} ms: {fps:.0f} frames/s")


def test_device_by_index_by_substring_and_unknown(alsa_home: AlsaHome, tmp_path: Path) -> None:
    recording = alsa_home.samples()
    # Speech plus a little silence is enough to tell devices apart.
    samples = alsa_home.speech_samples + FRAME
    listing = run_capture(alsa_home, "no-such-device", 0, tmp_path / "unused.raw")
    [index] = [d["index"] for d in listing["devices"] if d["name"] == DEVICE]

    for spec in (index, str(index), DEVICE[:-1].upper()):
        out = tmp_path / f"by-{spec}.raw"
        report = run_capture(alsa_home, spec, samples, out)
        assert "error" not in report, (spec, report["error"])
        captured = np.fromfile(out, dtype=np.int16)
        assert np.array_equal(captured[:samples], recording[:samples]), spec

    # The unknown name from above: the message names it and lists every input.
    message = listing["error"]
    assert "'no-such-device' not found" in message, message
    for device in listing["devices"]:
        assert f"{device['index']}: {device['name']}" in message, message

    # "wav" names both devices of the .asoundrc.
    ambiguous = run_capture(alsa_home, "wav", 0, tmp_path / "unused.raw")
    assert "is ambiguous" in ambiguous["error"], ambiguous

    # An index that is not an input device.
    missing = run_capture(alsa_home, 999, 0, tmp_path / "unused.raw")
    assert "999" in missing["error"] and "no such input device" in missing["error"], missing

    # The CLI lists the same inputs.
    result = subprocess.run(
        [*rtap_command(), "devices"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=alsa_home.env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{index:3d}  {DEVICE}  " in result.stdout, result.stdout


@pytest.mark.slow
def test_service_transcribes_the_alsa_device(alsa_home: AlsaHome) -> None:
    ports = ServicePorts.free()
    env = {
        **alsa_home.env,
        **ports.env(),
        # The device is not paced: frames arrive hundreds of times faster than
        # real time. The largest queue allowed (200 s of audio) keeps the speech
        # while the pipeline catches up; after it the device gives only zeros.
        "RTAP_AUDIO__CAPTURE_QUEUE_FRAMES": "10000",
        # The unpaced device keeps a core busy with endless silence, so whisper
        # shares the CPU: one thread (two spin on each other's barriers when a
        # core is taken) and a budget for a loaded machine, not for latency.
        "RTAP_STT__WHISPERCPP__N_THREADS": "1",
        "RTAP_STT__BUDGET_MS": "60000",
        # What is checked is the final transcript: no partials, no end-of-turn
        # model and no warm-up (capture_env drops conftest's) to share the
        # cores with the endless silence before it.
        "RTAP_STT__PARTIALS": "false",
        "RTAP_TURN__ENGINE": "none",
        "RTAP_STT__WARMUP": "false",
    }
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    subscriber = context.socket(zmq.SUB)
    subscriber.subscribe(b"")
    subscriber.setsockopt(zmq.RCVTIMEO, 500)
    subscriber.connect(f"tcp://127.0.0.1:{ports.transcripts}")
    command = ["--profile", "pc2", "--source", "mic", "--device", DEVICE, "--no-wake"]
    process = subprocess.Popen(
        [*rtap_command(), *command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    texts: list[str] = []
    matched = False
    try:
        deadline = time.monotonic() + 90
        while not matched and time.monotonic() < deadline and process.poll() is None:
            try:
                _, payload = subscriber.recv_multipart()
            except zmq.Again:
                continue
            message = parse_message(payload)
            if isinstance(message, TranscriptMessage):
                texts.append(message.text)
                matched = word_error_rate(TEXT, message.text) <= 0.3
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        subscriber.close(linger=0)
        context.term()
    assert matched, f"no matching transcript in 90 s: {texts}\n{stderr[-5000:]}"
    assert process.returncode == 0, stderr[-3000:]
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(f"source mic:{DEVICE}" in entry["message"] for entry in logs), stderr[-3000:]
    assert any(entry["message"] == "RTAP stopped" for entry in logs), stderr[-3000:]
    print(f"transcripts: {texts}")
