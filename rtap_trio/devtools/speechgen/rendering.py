"""Speech rendered to audio: espeak-ng voices, sox resampling, a noise floor, WAV files.

Everything is synthesised with espeak-ng and resampled with sox, so no recording
or download is needed and the output is byte-for-byte reproducible on a machine
with the same espeak-ng and sox (both are deterministic; sox runs with ``-R``,
which seeds its random generators, and ``-D``, which turns dithering off).

Porcupine often misses espeak-ng's voice when the speech sits in digital
silence (exact zeros): detection then depends on how the 512-sample frames
happen to line up with the word (the first demo without it: 10 of 16 alignments,
other voices far worse). A faint noise floor (RMS 24, about -63 dBFS, like a
quiet microphone) under the whole file makes detection reliable at the default
sensitivity 0.5 for every frame alignment (RMS 16 still missed "jarvis" at
about 1 alignment in 80); :mod:`.checks` proves it for every file.

espeak-ng and sox are system programs (scripts/setup.sh installs them);
without them rendering raises :class:`SpeechToolMissing`.
"""

from __future__ import annotations

import subprocess
import wave
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .catalogue import Utterance, Voice

__all__ = [
    "BETWEEN_S",
    "LEAD_S",
    "SAMPLE_RATE",
    "TRAIL_S",
    "Pcm",
    "Signal",
    "SpeechToolMissing",
    "noise",
    "read_pcm",
    "render",
    "render_noise",
    "seconds_of",
    "silence",
    "synthesize",
    "to_pcm",
    "tool_versions",
    "write_stereo_44k",
    "write_wav",
]

SAMPLE_RATE = 16_000


# Each synthesised piece is scaled to this peak (-6 dBFS): loud enough to be
# clear, with headroom so the noise floor and resampling never clip.
SPEECH_PEAK = 0.5 * 32767
# Quiet microphone hiss under everything; see the module docstring for why it
# matters to Porcupine. -63 dBFS is far below what webrtcvad calls speech.
NOISE_FLOOR_RMS = 24.0
# espeak-ng pads its output with silence; samples below this level (-50 dBFS)
# at either end are cut so that recorded speech start/end times are real.
TRIM_LEVEL = 100
LEAD_S = 0.5
TRAIL_S = 1.5
#: Silence between the two utterances of the two-utterance fixture.
BETWEEN_S = 1.5

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


def silence(seconds: float) -> Signal:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float64)


def to_pcm(signal: Signal, seed_name: str) -> Pcm:
    noisy = signal + noise(signal.size, NOISE_FLOOR_RMS, _seed(seed_name))
    return np.clip(np.round(noisy), -32768, 32767).astype(np.int16)


def seconds_of(samples: int) -> float:
    return round(samples / SAMPLE_RATE, 4)


def render(utterances: Sequence[Utterance], seed_name: str) -> tuple[Pcm, list[dict[str, Any]]]:
    """The utterances with lead, gaps and trail; plus each one's timing in seconds.

    The wake word and the command are separate espeak-ng calls joined with a
    fixed gap, which is what makes the exact command start time known.
    """
    parts: list[Signal] = [silence(LEAD_S)]
    pos = parts[0].size
    timings: list[dict[str, Any]] = []
    for i, utt in enumerate(utterances):
        if i:
            parts.append(silence(BETWEEN_S))
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
            parts += [wake, silence(utt.wake_gap_s)]
            timing["wake_start_s"] = seconds_of(pos)
            timing["wake_end_s"] = seconds_of(pos + wake.size)
            pos += wake.size + parts[-1].size
        pieces = [synthesize(piece.strip(), utt.voice) for piece in utt.text.split("|")]
        if len(pieces) > 1:
            timing["pause_s"] = utt.pause_s
        gap = silence(utt.pause_s)
        command = np.concatenate([x for piece in pieces for x in (piece, gap)][:-1])
        parts.append(command)
        timing["command_start_s"] = seconds_of(pos)
        timing["command_end_s"] = seconds_of(pos + command.size)
        timing["speech_start_s"] = seconds_of(start)
        timing["speech_end_s"] = seconds_of(pos + command.size)
        pos += command.size
        timings.append(timing)
    parts.append(silence(TRAIL_S))
    return to_pcm(np.concatenate(parts), seed_name), timings


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
    return to_pcm(rumble + hum, seed_name + "/hiss")


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
