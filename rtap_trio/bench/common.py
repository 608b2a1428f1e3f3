"""What every benchmark shares: statistics, the audio it plays, a paced source, free ports."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trio
import zmq
from loguru import logger

from ..audio.base import AudioSource
from ..audio.file import load_audio
from ..audio.framing import pace, split_frames
from ..devtools import speechgen
from ..items import Samples

__all__ = [
    "REPO",
    "free_port",
    "ServicePorts",
    "ZmqSubscriber",
    "SAMPLE_RATE",
    "ArraySource",
    "Clip",
    "concatenate",
    "corpus_clips",
    "corpus_commands",
    "default_corpus",
    "fixture_clips",
    "progress",
    "service_command",
    "quiet_logging",
    "service_child",
    "summarize",
]

REPO = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16_000


def default_corpus() -> Path:
    return REPO.parent / "shared" / "corpus"


def progress(message: str) -> None:
    """One line on stderr: a full run takes minutes and should say where it is."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def summarize(values: Iterable[float], digits: int = 3) -> dict[str, float | int]:
    """n, mean, p50, p95, p99 and max; percentiles interpolate, so p50 <= p95 <= p99."""
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return {
        "n": int(data.size),
        "mean": round(float(data.mean()), digits),
        "p50": round(float(p50), digits),
        "p95": round(float(p95), digits),
        "p99": round(float(p99), digits),
        "max": round(float(data.max()), digits),
    }


@dataclass(frozen=True, slots=True)
class Clip:
    """One recording, 16 kHz mono int16, and what is said in it (when known)."""

    name: str
    samples: Samples
    language: str | None = None
    text: str | None = None
    has_speech: bool = True

    @property
    def duration_s(self) -> float:
        return self.samples.size / SAMPLE_RATE


def fixture_clips() -> list[Clip]:
    """The project's generated speech (16 kHz mono WAVs only); [] if it cannot be made.

    Made by :mod:`rtap_trio.devtools.speechgen` into tests/fixtures/, where the tests'
    ``speech`` fixture finds them too, so the bench and the tests use the very
    same files and whoever runs first pays for generating them.
    """
    out = REPO / "tests" / "fixtures"
    try:
        manifest_path = speechgen.generate_fixtures(out)
    except Exception as exc:  # no espeak-ng/sox, or run from an installed wheel
        progress(f"generated fixtures unavailable ({exc}); using the corpus only")
        return []
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    clips = []
    for entry in manifest["fixtures"]:
        if entry["format"] != "wav" or entry["sample_rate"] != SAMPLE_RATE:
            continue  # the resampling variants say nothing new about speed
        if entry["channels"] != 1:
            continue
        clips.append(
            Clip(
                name=entry["file"],
                samples=load_audio(out / entry["file"], SAMPLE_RATE),
                language=entry.get("language"),
                # The whole clip is transcribed, wake word included.
                text=entry.get("spoken_text") or entry.get("text"),
                has_speech=bool(entry.get("utterances")),
            )
        )
    return clips


# What ../shared/corpus/MANIFEST.md says is in each file we use.
_CORPUS = {
    "jfk.wav": (
        "en",
        "And so my fellow Americans, ask not what your country can do for you, "
        "ask what you can do for your country.",
    ),
    "living_room_light_en.wav": ("en", "Turn on the living room light."),
    # MANIFEST.md: "the same sentence in German/Spanish"; the sentences as in
    # eval/shared_corpus.json.
    "living_room_light_de.wav": ("de", "Schalte das Wohnzimmerlicht ein."),
    "living_room_light_es.wav": ("es", "Enciende la luz del salón."),
}


def corpus_clips(corpus: Path) -> list[Clip]:
    """The corpus files read in place (never copied into the repository)."""
    clips = []
    for name, (language, text) in _CORPUS.items():
        path = corpus / name
        if path.is_file():
            clips.append(Clip(name, load_audio(path, SAMPLE_RATE), language, text))
    return clips


#: Recorded English commands (../shared/corpus): what the latency section measures
#: besides the generated ones, because the end-of-turn detector hears espeak-ng's
#: speech differently from one host's CPU to the next and recorded speech not.
_CORPUS_COMMANDS = {
    "living_room_light_en.wav": _CORPUS["living_room_light_en.wav"][1],
    "turn_on_the_living_room_lamp.wav": "Turn on the living room lamp.",
}


def corpus_commands(corpus: Path) -> list[Clip]:
    """The corpus's recorded English commands, read in place (16 kHz mono)."""
    return [
        Clip(name, load_audio(corpus / name, SAMPLE_RATE), "en", text)
        for name, text in _CORPUS_COMMANDS.items()
        if (corpus / name).is_file()
    ]


def concatenate(clips: Sequence[Clip], gap_s: float, total_s: float | None = None) -> Samples:
    """Clips one after another with silence between, repeated up to ``total_s`` if given."""
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.int16)
    parts: list[Samples] = []
    length = 0
    while True:
        for clip in clips:
            parts += [clip.samples, gap]
            length += clip.samples.size + gap.size
            if total_s is not None and length >= total_s * SAMPLE_RATE:
                return np.concatenate(parts)
        if total_s is None:
            return np.concatenate(parts) if parts else gap


class ArraySource(AudioSource):
    """Frames of an in-memory recording, optionally paced like a microphone.

    Paced, frame ``i`` is yielded at ``t0 + (i + 1) * frame`` (a microphone
    delivers a frame once all of it has been heard), where ``t0`` is
    ``started_wall``, so an offset in the recording maps to wall-clock time as
    ``started_wall + offset``. With a ``gate`` nothing is yielded until it is
    set, so subscribers can connect first.
    """

    def __init__(
        self,
        samples: Samples,
        *,
        frame_samples: int,
        paced: bool,
        gate: trio.Event | None = None,
        trailing_silence_s: float = 0.0,
    ) -> None:
        self.name = "bench"
        self.live = paced
        self._gate = gate
        tail = np.zeros(int(trailing_silence_s * SAMPLE_RATE), dtype=np.int16)
        self._frames = split_frames(np.concatenate((samples, tail)), frame_samples)
        self._frame_s = frame_samples / SAMPLE_RATE
        self.duration_s = self._frames.size / SAMPLE_RATE
        self.started_wall = 0.0
        self.started_perf = 0.0
        self.finished_perf = 0.0
        self.finished = trio.Event()

    async def open(self) -> None:
        return None

    async def frames(self) -> AsyncIterator[Samples]:
        if self._gate is not None:
            await self._gate.wait()
        self.started_perf, self.started_wall = time.perf_counter(), time.time()
        if self.live:
            # pace() yields frame i at its start + i * frame; a microphone hands
            # frame i over once all of it is heard, at t0 + (i + 1) * frame. So the
            # recording began one frame before the first frame comes out.
            self.started_perf -= self._frame_s
            self.started_wall -= self._frame_s
            async for frame in pace(self._frames, self._frame_s):
                yield frame
        else:
            for frame in self._frames:
                yield frame
        self.finished_perf = time.perf_counter()
        self.finished.set()


def _quiet_ports() -> range:
    """Ports below the range the kernel takes local ports of outgoing connections
    from (``ip_local_port_range``, 32768 and up by default), empty if unknown.

    A port picked with bind(0) comes from that range too, so between picking it
    and a child service binding it any client connecting anywhere may be given
    it as its own end: seen in a test suite run as "cannot bind 127.0.0.1:47655:
    Address already in use" while its other tests made connections.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(max(1024, low - 12_000), low)


_QUIET_PORTS = _quiet_ports()
#: not the random module's state, which a property-based test may have seeded
_PICK = random.SystemRandom()


def _bind_free(sock: socket.socket) -> None:
    """Bind ``sock`` on 127.0.0.1 to a free port outside the outgoing range if
    one is found in a few tries, else to the system's choice."""
    for _ in range(20 if len(_QUIET_PORTS) > 1000 else 0):
        try:
            sock.bind(("127.0.0.1", _PICK.choice(_QUIET_PORTS)))
            return
        except OSError:  # taken (or not ours to take): another one
            continue
    sock.bind(("127.0.0.1", 0))


def free_port() -> int:
    """A port free on 127.0.0.1 right now, where no outgoing connection takes it."""
    with socket.socket() as sock:
        _bind_free(sock)
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServicePorts:
    """Ports free right now on 127.0.0.1 for a service run as a child process,
    and the environment variables that give them to it."""

    events: int
    transcripts: int
    websocket: int
    telemetry: int
    catchup: int

    @classmethod
    def free(cls) -> ServicePorts:
        sockets = [socket.socket() for _ in range(5)]
        try:
            for sock in sockets:
                _bind_free(sock)
            return cls(*(sock.getsockname()[1] for sock in sockets))
        finally:
            for sock in sockets:
                sock.close()

    def env(self) -> dict[str, str]:
        return {
            "RTAP_OUTPUT__ZMQ_PUB_PORT_EVENTS": str(self.events),
            "RTAP_OUTPUT__ZMQ_PUB_PORT_TRANSCRIPTS": str(self.transcripts),
            "RTAP_OUTPUT__WEBSOCKET_PORT": str(self.websocket),
            "RTAP_HTTP__PORT": str(self.telemetry),
            "RTAP_OUTPUT__ZMQ_CATCHUP_PORT": str(self.catchup),
        }


class ZmqSubscriber:
    """A real SUB socket on ``ports`` of 127.0.0.1, subscribed to everything.

    ZeroMQ's slow joiner: what is published before a connection's handshake is
    lost, so :meth:`wait_connected` waits for one handshake per port.
    """

    def __init__(self, ports: Sequence[int], *, receive_timeout_ms: int) -> None:
        self._ports = list(ports)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.socket = self._context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVTIMEO, receive_timeout_ms)
        self.socket.subscribe(b"")
        self._monitor = self.socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        for port in self._ports:
            self.socket.connect(f"tcp://127.0.0.1:{port}")

    async def wait_connected(self) -> None:
        self._monitor.setsockopt(zmq.RCVTIMEO, 5000)
        for _ in self._ports:
            await trio.to_thread.run_sync(self._monitor.recv_multipart)

    def close(self) -> None:
        self.socket.disable_monitor()
        self._monitor.close(linger=0)
        self.socket.close(linger=0)
        self._context.term()


def quiet_logging() -> None:
    """Only warnings from the services the bench starts: its own output is the report."""
    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{time:HH:mm:ss} {level} {message}")


def _health_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return int(response.status)
    except OSError:  # not listening yet, or 503 while starting
        return 0


@asynccontextmanager
async def service_child(
    command: Sequence[str], *, limit_s: float = 120
) -> AsyncIterator[tuple[trio.Process, ServicePorts]]:
    """The service as a child process on free ports, yielded once ``/health``
    answers 200; stopped with SIGTERM afterwards (killed if it is not gone in 15 s).

    A child of its own, so that its CPU and memory are measured apart from the
    bench's clients.
    """
    ports = ServicePorts.free()
    env = {**os.environ, **ports.env(), "RTAP_LOG_LEVEL": "WARNING"}
    child = await trio.lowlevel.open_process(
        list(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(limit_s):
            while await trio.to_thread.run_sync(_health_status, ports.telemetry) != 200:
                if child.poll() is not None:
                    raise RuntimeError(f"the service exited with {child.returncode} while starting")
                await trio.sleep(0.2)
        yield child, ports
    finally:
        child.send_signal(signal.SIGTERM)
        with trio.move_on_after(15) as waited:
            await child.wait()
        if waited.cancelled_caught:
            child.kill()
            await child.wait()


def service_command(
    source: str,
    *,
    profile: str | None,
    settings_dir: Path | None,
    overrides: Sequence[str],
    extra: Sequence[str] = (),
) -> list[str]:
    """``python -m rtap_trio run --source SOURCE`` with the bench's own settings."""
    command = [sys.executable, "-m", "rtap_trio", "run", "--source", source, *extra]
    if profile:
        command += ["--profile", profile]
    if settings_dir:
        command += ["--settings-dir", str(settings_dir)]
    for item in overrides:
        command += ["--set", item]
    return command
