"""Generated speech for the demo, the tests and the bench: espeak-ng voices, sox resampling.

Everything is synthesised with espeak-ng and resampled with sox, so no recording
or download is needed and the output is byte-for-byte reproducible on a machine
with the same espeak-ng and sox (both are deterministic; sox runs with ``-R``,
which seeds its random generators, and ``-D``, which turns dithering off).

Two findings shape the settings below, both checked by :func:`check_demo` and
:func:`check_fixtures`:

* Porcupine often misses espeak-ng's voice when the speech sits in digital
  silence (exact zeros): detection then depends on how the 512-sample frames
  happen to line up with the word (the first demo without it: 10 of 16 alignments,
  other voices far worse). A faint noise floor (RMS 24, about
  -63 dBFS, like a quiet microphone) under the whole file makes detection
  reliable at the default sensitivity 0.5 for every frame alignment (RMS 16
  still missed "jarvis" at about 1 alignment in 80).
* Of the voices tried, the ``en-us+f2`` variant is by far the one Porcupine
  accepts best ("computer", "jarvis", "porcupine"; the plain ``en-us`` voice is
  fine for "bumblebee"), and Whisper transcribes it well. The demo is the
  exception: in ``en-us+f2`` its sentence came out wrong on both Whisper
  models, in a lower plain ``en-us`` voice right on every profile, and
  Porcupine hears "computer" in it as well (see :data:`DEMO_VOICE`).

:func:`generate_demo` writes the demo recording shipped in the package
(``rtap_trio/audio/data/demo.wav``, see the README there);
:func:`generate_fixtures` writes the test fixtures and their ``manifest.json``
and returns at once when they are already there and were made by this very
generator (see :func:`generator_hash`). ``scripts/make_speech.py`` is the
command line over this module (``just speech``).

espeak-ng and sox are system programs (scripts/setup.sh installs them);
without them the generators raise :class:`SpeechToolMissing`. Porcupine and
webrtcvad, needed only by the checks, are imported when a check runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
import wave
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEMO",
    "DEMO_TOOLS",
    "DEMO_VOICE",
    "DERIVED_FROM",
    "FIXTURES",
    "MANIFEST_NAME",
    "NOISE_FILE",
    "RAW_FILE",
    "SAMPLE_RATE",
    "STEREO_FILE",
    "VAD_MODES",
    "WAKE_WORDS",
    "Fixture",
    "SpeechToolMissing",
    "Utterance",
    "Voice",
    "check_audio",
    "check_demo",
    "check_fixtures",
    "check_vad",
    "check_wake_words",
    "demo_entry",
    "demo_path",
    "detect_wake_word",
    "generate_demo",
    "generate_fixtures",
    "generator_hash",
    "load_manifest",
    "read_pcm",
    "render",
    "synthesize",
    "tool_versions",
    "vad_flags",
    "write_wav",
]


def demo_path() -> Path:
    """Where the package keeps the demo recording (in a checkout: the source tree's file)."""
    return Path(str(resources.files("rtap_trio.audio") / "data" / "demo.wav"))


MANIFEST_NAME = "manifest.json"
#: Bumped by hand when the manifest's layout changes in a way readers notice.
MANIFEST_VERSION = 1

SAMPLE_RATE = 16_000
#: Sensitivity every wake word is checked at (Porcupine's default).
WAKE_SENSITIVITY = 0.5

# Each synthesised piece is scaled to this peak (-6 dBFS): loud enough to be
# clear, with headroom so the noise floor and resampling never clip.
SPEECH_PEAK = 0.5 * 32767
# Quiet microphone hiss under everything; see the module docstring for why it
# matters to Porcupine. -63 dBFS is far below what webrtcvad calls speech.
NOISE_FLOOR_RMS = 24.0
# espeak-ng pads its output with silence; samples below this level (-50 dBFS)
# at either end are cut so that recorded speech start/end times are real.
TRIM_LEVEL = 100
#: Pause between the wake word and the command, like a speaker's comma.
WAKE_GAP_S = 0.3
LEAD_S = 0.5
TRAIL_S = 1.5
#: Silence between the two utterances of the two-utterance fixture.
BETWEEN_S = 1.5
#: Extra silence after the raw (ALSA file-plugin) capture copy.
RAW_PAD_S = 3.0


@dataclass(frozen=True)
class Voice:
    """espeak-ng settings: ``-v name -s speed -p pitch``."""

    name: str
    speed: int  # words per minute
    pitch: int  # 0-99

    def describe(self) -> str:
        return f"-v {self.name} -s {self.speed} -p {self.pitch}"


# Slower German and Spanish: at 150 wpm espeak-ng's accent costs Whisper words.
EN_F2 = Voice("en-us+f2", 150, 50)
EN_M = Voice("en-us", 150, 50)
DE = Voice("de", 130, 50)
ES = Voice("es", 130, 50)


@dataclass(frozen=True)
class Utterance:
    """One spoken turn: an optional wake word, a pause, then the command or sentence."""

    text: str
    voice: Voice
    wake_word: str | None = None
    #: Pause after the wake word. Porcupine fires some time after the word ends (about
    #: 0.1-0.16 s for en-us+f2, 0.23-0.31 s for en-us) and the pipeline's utterance
    #: starts no earlier than that, so the pause must outlast the delay or the
    #: command's first word is cut.
    wake_gap_s: float = WAKE_GAP_S
    #: Silence where the text has a "|": a pause inside the sentence, as people
    #: make them (the endpointer must not end the utterance there).
    pause_s: float = 0.0

    @property
    def words(self) -> str:
        """The text as said, without its pause marks."""
        return " ".join(part.strip() for part in self.text.split("|"))


@dataclass(frozen=True)
class Fixture:
    file: str
    language: str
    utterances: tuple[Utterance, ...]
    description: str


#: The demo's voice. en-us+f2 (the fixtures' voice) said "weather" so that
#: multilingual base heard "winner" and "today" so that tiny.en heard "okay".
#: The plain en-us voice a little lower (pitch 40) is heard right by base
#: (q8_0 and f16) and tiny.en with speed 140-160, pitch 30-50 and pauses of
#: 0.4-0.6 s alike; at pitch 60 base turns "weather" into "winner" again.
DEMO_VOICE = Voice("en-us", 150, 40)
#: The demo: wake word, then the command the README's walkthrough shows. With
#: this voice Porcupine fires 0.23-0.31 s after "computer" ends and the utterance
#: cannot start before that, so the pause is 0.5 s: after the fixtures' 0.3 s it
#: may fire once the command has begun (with 0.2 s a trial lost its first words).
DEMO = Utterance("What is the weather in Berlin today?", DEMO_VOICE, "computer", wake_gap_s=0.5)

#: Commands with a pause inside the sentence, 0.35-0.55 s (less than the 600 ms
#: hangover): each must come out as one utterance, early endpointing or not.
PAUSED = (
    Utterance("Remind me to buy milk | and eggs tomorrow.", EN_F2, pause_s=0.45),
    Utterance("Turn on the lights in the kitchen | and in the hallway.", EN_F2, pause_s=0.55),
    Utterance("Set a timer for | ten minutes.", EN_F2, pause_s=0.35),
    Utterance("What is the weather | in Paris?", EN_F2, pause_s=0.5),
    Utterance("Play the new album | by the Beatles.", EN_F2, pause_s=0.4),
)

FIXTURES: tuple[Fixture, ...] = (
    Fixture(
        "computer_garage.wav",
        "en",
        (Utterance("Open the garage door.", EN_F2, "computer"),),
        "wake word 'computer' and an English command",
    ),
    Fixture(
        "jarvis_lights.wav",
        "en",
        (Utterance("Turn on the kitchen lights.", EN_F2, "jarvis"),),
        "wake word 'jarvis' and an English command",
    ),
    Fixture(
        "porcupine_music.wav",
        "en",
        (Utterance("Play some relaxing music.", EN_F2, "porcupine"),),
        "wake word 'porcupine' and an English command",
    ),
    Fixture(
        "bumblebee_tokyo.wav",
        "en",
        (Utterance("What time is it in Tokyo?", EN_M, "bumblebee"),),
        "wake word 'bumblebee' and an English command, male voice",
    ),
    Fixture(
        "en_no_wake.wav",
        "en",
        (Utterance("Lock the front door and turn off the lights.", EN_F2),),
        "English command without a wake word",
    ),
    Fixture(
        "de_kino.wav",
        "de",
        (Utterance("Ich möchte heute Abend ins Kino gehen.", DE),),
        "German sentence without a wake word",
    ),
    Fixture(
        "es_restaurante.wav",
        "es",
        (Utterance("Vamos a comer en un restaurante italiano.", ES),),
        "Spanish sentence without a wake word",
    ),
    Fixture(
        "two_utterances.wav",
        "en",
        (
            Utterance("What is on my calendar tomorrow?", EN_F2, "computer"),
            Utterance("Remind me to call my mother.", EN_F2, "computer"),
        ),
        "two wake word + command turns, 1.5 s of silence between them",
    ),
    Fixture(
        "paused_sentences.wav",
        "en",
        PAUSED,
        "five commands, each with a 0.35-0.55 s pause inside it, 1.5 s between them",
    ),
)

#: Derived files: a 44.1 kHz stereo copy and a raw capture copy of this fixture.
DERIVED_FROM = "jarvis_lights.wav"
STEREO_FILE = "jarvis_lights_44k_stereo.wav"
RAW_FILE = "jarvis_lights_s16le_16k_mono.raw"
NOISE_FILE = "noise_only.wav"
NOISE_S = 5.0

#: espeak-ng and sox that made the shipped demo.wav (other versions may differ in bytes).
DEMO_TOOLS = {"espeak_ng": "eSpeak NG text-to-speech: 1.51", "sox": "v14.4.2"}

#: Every wake word used (the demo's is "computer"); the false-accept check
#: listens for all of them in every file.
WAKE_WORDS: tuple[str, ...] = tuple(
    sorted({u.wake_word for f in FIXTURES for u in f.utterances if u.wake_word} | {"computer"})
)

Pcm = npt.NDArray[np.int16]
Signal = npt.NDArray[np.float64]


# --- synthesis ---------------------------------------------------------------------


# -R seeds sox's random generators, -D turns dithering off: both keep output
# byte-identical between runs. -V1 keeps harmless warnings off stderr.
SOX = ("sox", "-R", "-D", "-V1")
#: 16 kHz mono signed 16-bit headerless PCM, as sox format options.
RAW16 = ("-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-r", str(SAMPLE_RATE))


class SpeechToolMissing(RuntimeError):
    """espeak-ng or sox is not installed: nothing can be generated."""


def _run(cmd: Sequence[str], data: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(list(cmd), input=data, capture_output=True, check=False)
    except FileNotFoundError:
        raise SpeechToolMissing(
            f"{cmd[0]} is not installed (apt-get install espeak-ng sox, or scripts/setup.sh)"
        ) from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed ({done.returncode}): {err}")
    return done.stdout


def tool_versions() -> dict[str, str]:
    """espeak-ng's and sox's versions: a different version may make different bytes."""
    espeak = _run(["espeak-ng", "--version"]).decode().strip()
    sox = _run(["sox", "--version"]).decode().strip()
    # sox prints "sox:      SoX v14.4.2"; the program name is noise.
    return {"espeak_ng": espeak.split(" Data at:")[0].strip(), "sox": sox.split()[-1]}


def synthesize(text: str, voice: Voice) -> Signal:
    """``text`` spoken at 16 kHz, trimmed to the speech and scaled to SPEECH_PEAK."""
    # -b 1: the text is UTF-8 whatever the locale (CI may run with LANG=C,
    # which would garble "möchte").
    voice_args = ["-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch)]
    wav = _run(["espeak-ng", "-b", "1", *voice_args, "--stdout", text])
    raw = _run([*SOX, "-t", "wav", "-", *RAW16, "-"], wav)
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    loud = np.flatnonzero(np.abs(pcm) > TRIM_LEVEL)
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced no audible speech for {text!r}")
    speech = pcm[loud[0] : loud[-1] + 1]
    scaled: Signal = speech * (SPEECH_PEAK / float(np.abs(speech).max()))
    return scaled


def noise(n: int, rms: float, seed: int) -> Signal:
    """Deterministic near-Gaussian noise.

    Built from the raw PCG64 bit stream, which numpy keeps stable across
    releases (unlike Generator.normal), so the bytes do not change with numpy.
    """
    bits = np.random.PCG64(seed).random_raw(n)
    total = np.zeros(n, dtype=np.float64)
    for shift in (0, 16, 32, 48):
        total += ((bits >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.float64)
    # Sum of four uniforms on [0, 65535]: mean 2 * 65535, variance 4 * 65536**2 / 12.
    unit: Signal = (total - 2 * 65535.0) / (65536.0 * np.sqrt(4 / 12))
    return unit * rms


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _silence(seconds: float) -> Signal:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float64)


def _to_pcm(signal: Signal, seed_name: str) -> Pcm:
    noisy = signal + noise(signal.size, NOISE_FLOOR_RMS, _seed(seed_name))
    return np.clip(np.round(noisy), -32768, 32767).astype(np.int16)


def _seconds(samples: int) -> float:
    return round(samples / SAMPLE_RATE, 4)


def render(utterances: Sequence[Utterance], seed_name: str) -> tuple[Pcm, list[dict[str, Any]]]:
    """The utterances with lead, gaps and trail; plus each one's timing in seconds.

    The wake word and the command are separate espeak-ng calls joined with a
    fixed gap, which is what makes the exact command start time known.
    """
    parts: list[Signal] = [_silence(LEAD_S)]
    pos = parts[0].size
    timings: list[dict[str, Any]] = []
    for i, utt in enumerate(utterances):
        if i:
            parts.append(_silence(BETWEEN_S))
            pos += parts[-1].size
        words = utt.words
        timing: dict[str, Any] = {
            "text": words,
            "spoken_text": f"{utt.wake_word.capitalize()}, {words[0].lower()}{words[1:]}"
            if utt.wake_word
            else words,
            "wake_word": utt.wake_word,
            "voice": utt.voice.describe(),
            "wake_start_s": None,
            "wake_end_s": None,
        }
        start = pos
        if utt.wake_word:
            wake = synthesize(utt.wake_word, utt.voice)
            parts += [wake, _silence(utt.wake_gap_s)]
            timing["wake_start_s"] = _seconds(pos)
            timing["wake_end_s"] = _seconds(pos + wake.size)
            pos += wake.size + parts[-1].size
        pieces = [synthesize(piece.strip(), utt.voice) for piece in utt.text.split("|")]
        if len(pieces) > 1:
            timing["pause_s"] = utt.pause_s
        gap = _silence(utt.pause_s)
        command = np.concatenate([x for piece in pieces for x in (piece, gap)][:-1])
        parts.append(command)
        timing["command_start_s"] = _seconds(pos)
        timing["command_end_s"] = _seconds(pos + command.size)
        timing["speech_start_s"] = _seconds(start)
        timing["speech_end_s"] = _seconds(pos + command.size)
        pos += command.size
        timings.append(timing)
    parts.append(_silence(TRAIL_S))
    return _to_pcm(np.concatenate(parts), seed_name), timings


def render_noise(seconds: float, seed_name: str) -> Pcm:
    """Room noise without speech: low rumble, a faint mains hum and hiss.

    Loud enough (RMS about 110, -50 dBFS) that a VAD or ASR which treats any energy as
    speech gets caught, yet nothing a real VAD should call speech.
    """
    n = round(seconds * SAMPLE_RATE)
    white = noise(n, 1.0, _seed(seed_name))
    # Leaky integration turns white noise into a fan-like rumble; a Python loop
    # over 80k samples costs ~30 ms, cheaper than pulling in scipy for lfilter.
    rumble = np.empty(n, dtype=np.float64)
    acc = 0.0
    for i, x in enumerate(white.tolist()):
        acc = 0.97 * acc + x
        rumble[i] = acc
    rumble *= 100.0 / rumble.std()
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    hum = 60.0 * np.sin(2 * np.pi * 50 * t) + 25.0 * np.sin(2 * np.pi * 150 * t)
    return _to_pcm(rumble + hum, seed_name + "/hiss")


# --- files -------------------------------------------------------------------------


def write_wav(path: Path, pcm: Pcm, sample_rate: int = SAMPLE_RATE) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.astype("<i2").tobytes())


def write_stereo_44k(path: Path, pcm: Pcm) -> None:
    """44.1 kHz stereo copy, right channel 6 dB down so a downmix is not a no-op."""
    stereo = ["-b", "16", "-r", "44100", str(path), "remix", "1", "1v0.5"]
    _run([*SOX, *RAW16, "-", *stereo], pcm.astype("<i2").tobytes())


def read_pcm(path: Path) -> Pcm:
    """Any fixture as 16 kHz mono int16 (sox averages channels and resamples)."""
    if path.suffix == ".raw":
        return np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.int16)
    with wave.open(str(path), "rb") as src:
        if (src.getnchannels(), src.getframerate(), src.getsampwidth()) == (1, SAMPLE_RATE, 2):
            return np.frombuffer(src.readframes(src.getnframes()), dtype="<i2").astype(np.int16)
    raw = _run([*SOX, str(path), *RAW16, "-"])
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generator_hash() -> str:
    """Changes whenever the output could: this module's source or the tools' versions."""
    h = hashlib.sha256(resources.files("rtap_trio").joinpath("speechgen.py").read_bytes())
    h.update(json.dumps(tool_versions(), sort_keys=True).encode())
    h.update(np.__version__.encode())
    return h.hexdigest()[:16]


def generate_demo(path: Path | None = None) -> dict[str, Any]:
    """Write the demo recording to ``path`` (default: the packaged file); returns its timing."""
    path = demo_path() if path is None else Path(path)
    pcm, (timing,) = render([DEMO], "demo")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write_wav(tmp, pcm)
    os.replace(tmp, path)
    timing["duration_s"] = _seconds(pcm.size)
    return timing


def _entry(file: str, pcm: Pcm, **extra: Any) -> dict[str, Any]:
    return {
        "file": file,
        "format": "wav",
        "sample_rate": SAMPLE_RATE,
        "channels": 1,
        "duration_s": _seconds(pcm.size),
        **extra,
    }


def _speech_entry(fixture: Fixture, pcm: Pcm, timings: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = timings[0], timings[-1]
    return _entry(
        fixture.file,
        pcm,
        description=fixture.description,
        language=fixture.language,
        text=" ".join(t["text"] for t in timings),
        spoken_text=" ".join(t["spoken_text"] for t in timings),
        wake_word=first["wake_word"],
        speech_start_s=first["speech_start_s"],
        speech_end_s=last["speech_end_s"],
        wake_end_s=first["wake_end_s"],
        command_start_s=first["command_start_s"],
        command_end_s=first["command_end_s"],
        utterances=timings,
    )


def _up_to_date(out_dir: Path, expected_hash: str) -> bool:
    manifest = out_dir / MANIFEST_NAME
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("generator_hash") != expected_hash:
            return False
        # A hand-edited or half-copied file must not pass for a good one.
        return all(_sha256(out_dir / f["file"]) == f["sha256"] for f in data["fixtures"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    # Parallel test workers may all ask for the fixtures at once: one makes
    # them, the others wait and then find them up to date.
    with open(out_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def generate_fixtures(out_dir: Path, *, force: bool = False) -> Path:
    """Make the test fixtures and ``manifest.json`` in ``out_dir``; return the manifest path.

    Returns without work when the manifest there was written by the same
    generator (script source + espeak-ng/sox/numpy versions) and every file
    still has its recorded checksum. Files are written to a scratch directory
    and moved in, manifest last, so a reader never sees a half-made set.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    expected = generator_hash()
    with _locked(out_dir):
        if not force and _up_to_date(out_dir, expected):
            return manifest_path
        entries: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".new-") as scratch:
            tmp = Path(scratch)
            source: dict[str, tuple[Pcm, dict[str, Any]]] = {}
            for fixture in FIXTURES:
                pcm, timings = render(fixture.utterances, fixture.file)
                write_wav(tmp / fixture.file, pcm)
                entry = _speech_entry(fixture, pcm, timings)
                entries.append(entry)
                source[fixture.file] = (pcm, entry)

            pcm, base = source[DERIVED_FROM]
            write_stereo_44k(tmp / STEREO_FILE, pcm)
            with wave.open(str(tmp / STEREO_FILE), "rb") as stereo:
                stereo_s = _seconds(round(stereo.getnframes() * SAMPLE_RATE / 44100))
            entries.append(
                {
                    **base,
                    "file": STEREO_FILE,
                    "sample_rate": 44100,
                    "channels": 2,
                    "duration_s": stereo_s,
                    "description": "44.1 kHz stereo copy (right channel -6 dB) of " + DERIVED_FROM,
                    "derived_from": DERIVED_FROM,
                }
            )

            padded = np.concatenate([pcm, _to_pcm(_silence(RAW_PAD_S), RAW_FILE)])
            (tmp / RAW_FILE).write_bytes(padded.astype("<i2").tobytes())
            entries.append(
                {
                    **base,
                    "file": RAW_FILE,
                    "format": "raw_s16le",
                    "duration_s": _seconds(padded.size),
                    "description": f"headerless s16le copy of {DERIVED_FROM} with "
                    f"{RAW_PAD_S:g} s more silence, for an ALSA file-plugin capture",
                    "derived_from": DERIVED_FROM,
                }
            )

            quiet = render_noise(NOISE_S, NOISE_FILE)
            write_wav(tmp / NOISE_FILE, quiet)
            entries.append(
                _entry(
                    NOISE_FILE,
                    quiet,
                    description="room noise (rumble, 50 Hz hum, hiss), no speech",
                    language=None,
                    text="",
                    spoken_text="",
                    wake_word=None,
                    speech_start_s=None,
                    speech_end_s=None,
                    wake_end_s=None,
                    command_start_s=None,
                    command_end_s=None,
                    utterances=[],
                )
            )

            for entry in entries:
                entry["sha256"] = _sha256(tmp / entry["file"])
            old = _old_files(manifest_path)
            for entry in entries:
                os.replace(tmp / entry["file"], out_dir / entry["file"])
            for stale in old - {e["file"] for e in entries}:
                (out_dir / stale).unlink(missing_ok=True)
            manifest = {
                "manifest_version": MANIFEST_VERSION,
                "generator_hash": expected,
                "tools": tool_versions(),
                "sample_rate": SAMPLE_RATE,
                "wake_sensitivity": WAKE_SENSITIVITY,
                "wake_words": list(WAKE_WORDS),
                "notes": "Times are seconds from the file start at its own rate. "
                "'text' is what ASR should return for the command(s) (wake word left out); "
                "'spoken_text' is everything spoken. Speech sits on a -63 dBFS noise floor.",
                "fixtures": entries,
            }
            (tmp / MANIFEST_NAME).write_text(
                json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            os.replace(tmp / MANIFEST_NAME, manifest_path)
    return manifest_path


def _old_files(manifest_path: Path) -> set[str]:
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
        return {str(f["file"]) for f in data["fixtures"] if "/" not in str(f["file"])}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def load_manifest(manifest_path: Path) -> list[dict[str, Any]]:
    data = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    fixtures: list[dict[str, Any]] = data["fixtures"]
    return fixtures


# --- checks --------------------------------------------------------------------------


def detect_wake_word(
    pcm: Pcm, keyword: str, sensitivity: float = WAKE_SENSITIVITY, offset: int = 0
) -> list[float]:
    """Times (s, end of the frame that fired) at which Porcupine hears ``keyword``.

    ``offset`` samples of noise floor are put in front first, to shift how the
    512-sample frames line up with the speech; returned times exclude it.
    """
    import pvporcupine

    if offset:
        pcm = np.concatenate([_to_pcm(_silence(offset / SAMPLE_RATE), "offset"), pcm])
    porcupine = pvporcupine.create(keywords=[keyword], sensitivities=[sensitivity])
    try:
        n = porcupine.frame_length
        hits = []
        for i in range(0, pcm.size - n + 1, n):
            if porcupine.process(pcm[i : i + n].tolist()) >= 0:
                hits.append(round((i + n - offset) / SAMPLE_RATE, 3))
        return hits
    finally:
        porcupine.delete()


def vad_flags(pcm: Pcm, mode: int = 3, frame_ms: int = 20) -> npt.NDArray[np.bool_]:
    """webrtcvad's speech decision per ``frame_ms`` frame (a trailing partial frame is dropped)."""
    import webrtcvad

    vad = webrtcvad.Vad(mode)
    n = SAMPLE_RATE * frame_ms // 1000
    data = pcm.astype("<i2")
    return np.array(
        [
            vad.is_speech(data[i : i + n].tobytes(), SAMPLE_RATE)
            for i in range(0, data.size - n + 1, n)
        ],
        dtype=bool,
    )


#: Frame alignments every wake-word detection must survive.
OFFSETS = (0, 128, 256, 384)
# Porcupine decides shortly after the word ends; a detection later than this
# after the wake word's end would be a lucky hit on the command instead.
MAX_WAKE_LATENCY_S = 1.0
# A turn counts as heard by the VAD when at least this share of its frames
# (wake word and command separately; pauses between words are not speech) is speech.
MIN_SPEECH_SHARE = 0.5
# Away from speech (VAD_MARGIN_S either side) at most this share may be speech.
MAX_SILENCE_SPEECH_SHARE = 0.02
VAD_MARGIN_S = 0.3
# webrtcvad starts without a noise estimate and may call the first few frames
# of any file speech; the pipeline's minimum speech length absorbs that.
VAD_WARMUP_S = 0.1
#: webrtcvad's two strict modes; the pipeline uses one of them.
VAD_MODES = (2, 3)


def _share(flags: npt.NDArray[np.bool_], start_s: float, end_s: float, frame_s: float) -> float:
    a, b = int(start_s / frame_s), int(np.ceil(end_s / frame_s))
    part = flags[max(a, 0) : max(b, 0)]
    return float(part.mean()) if part.size else 0.0


def check_wake_words(
    name: str, pcm: Pcm, entry: dict[str, Any], offsets: Sequence[int] = OFFSETS
) -> list[str]:
    """Each turn's wake word heard once, soon after it ends; no other wake word heard."""
    problems: list[str] = []
    turns: list[dict[str, Any]] = entry.get("utterances", [])
    for keyword in WAKE_WORDS:
        expected = [t for t in turns if t["wake_word"] == keyword]
        for offset in offsets:
            hits = detect_wake_word(pcm, keyword, offset=offset)
            where = f"{name}: '{keyword}' (offset {offset})"
            if len(hits) != len(expected):
                problems.append(f"{where}: {len(hits)} detections at {hits}, want {len(expected)}")
                continue
            for hit, turn in zip(hits, expected, strict=True):
                if not turn["wake_end_s"] <= hit + 0.05 <= turn["wake_end_s"] + MAX_WAKE_LATENCY_S:
                    problems.append(
                        f"{where}: fired at {hit}s, wake word ends {turn['wake_end_s']}"
                    )
    return problems


def check_vad(name: str, pcm: Pcm, entry: dict[str, Any], mode: int = 3) -> list[str]:
    """webrtcvad hears each wake word and command, and (almost) nothing away from them."""
    problems: list[str] = []
    frame_s = 0.02
    flags = vad_flags(pcm, mode)
    speech = np.zeros(flags.size, dtype=bool)
    speech[: int(VAD_WARMUP_S / frame_s)] = True
    for turn in entry.get("utterances", []):
        spans = [("command", turn["command_start_s"], turn["command_end_s"])]
        if turn["wake_word"]:
            spans.append(("wake word", turn["wake_start_s"], turn["wake_end_s"]))
        for label, start, end in spans:
            share = _share(flags, start, end, frame_s)
            if share < MIN_SPEECH_SHARE:
                problems.append(f"{name}: VAD mode {mode} hears {share:.0%} of the {label}")
        a = int((turn["speech_start_s"] - VAD_MARGIN_S) / frame_s)
        b = int(np.ceil((turn["speech_end_s"] + VAD_MARGIN_S) / frame_s))
        speech[max(a, 0) : b] = True
    if (~speech).any():
        share = float(flags[~speech].mean())
        if share > MAX_SILENCE_SPEECH_SHARE:
            problems.append(f"{name}: VAD mode {mode} calls {share:.1%} of the silence speech")
    return problems


def check_audio(name: str, pcm: Pcm, entry: dict[str, Any]) -> list[str]:
    """Problems with one file: wake words missed or falsely heard, VAD disagreeing."""
    return check_wake_words(name, pcm, entry) + [
        problem for mode in VAD_MODES for problem in check_vad(name, pcm, entry, mode)
    ]


def check_fixtures(manifest_path: Path) -> list[str]:
    """Every fixture checked (see check_audio); returns the problems found."""
    problems: list[str] = []
    for entry in load_manifest(manifest_path):
        path = Path(manifest_path).parent / entry["file"]
        problems += check_audio(entry["file"], read_pcm(path), entry)
    return problems


def demo_entry() -> dict[str, Any]:
    """The demo's timing, as a manifest-style entry (it is not stored next to the file)."""
    _, timings = render([DEMO], "demo")
    return {"file": "demo.wav", "utterances": timings, **timings[0]}


def check_demo(path: Path | None = None) -> list[str]:
    """Problems with the demo at ``path`` (default: the packaged file): stale bytes, wake
    word or VAD (see :func:`check_audio`)."""
    path = demo_path() if path is None else Path(path)
    problems = []
    pcm, _ = render([DEMO], "demo")
    if read_pcm(path).tobytes() != pcm.tobytes():
        # Only a fault when the tools are the ones that made the shipped file.
        problems.append(
            f"{path} differs from what rtap_trio.speechgen makes now (tools: {tool_versions()}; "
            f"shipped demo made with {DEMO_TOOLS}): run scripts/make_speech.py --demo"
        )
    return problems + check_audio("demo.wav", read_pcm(path), demo_entry())
