"""Generated music and noise without speech, for the hallucination tests (issue 16).

Everything is numpy arithmetic from a seed, so a clip is the same bytes on
every machine: no recording, no download. Each kind is a different way music
is not speech that a VAD may still call voiced: sustained chords, plucked
arpeggios, harmonic-rich tones over a drum beat, organ pads with tremolo, a
bass line with drums, a sung-like lead with vibrato. Noise kinds are the
stationary sounds a room has: white, pink and brown noise, mains hum, a fan,
rain-like crackle.

The kinds are split in two: :data:`TUNE_MUSIC` / :data:`TUNE_NOISE` are what
the discard rule was tuned on, :data:`HELD_OUT_MUSIC` / :data:`HELD_OUT_NOISE`
(other kinds, other seeds) only what it was checked on afterwards.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RATE = 16_000
Signal = npt.NDArray[np.float64]
Pcm = npt.NDArray[np.int16]

#: Peak of a rendered clip: music played at a normal level near the microphone.
PEAK = 0.5 * 32767
#: chord progressions as semitones above the key's root (I-V-vi-IV, ii-V-I-vi, ...)
_PROGRESSIONS = (
    ((0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12)),
    ((2, 5, 9), (7, 11, 14), (0, 4, 7), (9, 12, 16)),
    ((0, 3, 7), (5, 8, 12), (7, 10, 14), (3, 7, 10)),
)
#: a pentatonic scale, for melodies
_SCALE = (0, 2, 4, 7, 9, 12, 14, 16)


@dataclass(frozen=True)
class Clip:
    kind: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.seed}"


def _rng(kind: str, seed: int) -> np.random.Generator:
    # The bytes of a clip only need to repeat on this project's pinned numpy.
    return np.random.default_rng(zlib.crc32(f"{kind}/{seed}".encode()))


def _hz(midi: float) -> float:
    return float(440.0 * 2.0 ** ((midi - 69) / 12))


def _t(seconds: float) -> Signal:
    return np.arange(round(seconds * RATE), dtype=np.float64) / RATE


def _tone(
    midi: float,
    seconds: float,
    harmonics: tuple[float, ...],
    *,
    decay_s: float | None = None,
    attack_s: float = 0.01,
    vibrato: tuple[float, float] = (0.0, 0.0),
) -> Signal:
    """A note with its harmonics' amplitudes, an attack, an optional exponential
    decay and vibrato (rate in Hz, depth in semitones)."""
    t = _t(seconds)
    rate, depth = vibrato
    phase_mod = 1.0 + (2.0 ** (depth / 12) - 1.0) * np.sin(2 * np.pi * rate * t)
    phase = 2 * np.pi * _hz(midi) * np.cumsum(phase_mod) / RATE
    wave = sum(
        (a * np.sin((k + 1) * phase) for k, a in enumerate(harmonics) if a), np.zeros_like(t)
    )
    envelope = np.minimum(1.0, t / attack_s)
    if decay_s is not None:
        envelope *= np.exp(-t / decay_s)
    release = np.minimum(1.0, (seconds - t) / 0.02)  # no click at the end
    return wave * envelope * release


def _place(out: Signal, start_s: float, sound: Signal) -> None:
    start = round(start_s * RATE)
    end = min(out.size, start + sound.size)
    if start < out.size:
        out[start:end] += sound[: end - start]


def _kick(rng: np.random.Generator) -> Signal:
    t = _t(0.25)
    freq = 50 + 100 * np.exp(-t / 0.04)
    return np.sin(2 * np.pi * np.cumsum(freq) / RATE) * np.exp(-t / 0.08)


def _hat(rng: np.random.Generator, seconds: float = 0.05) -> Signal:
    burst = rng.standard_normal(round(seconds * RATE))
    return np.diff(burst, prepend=0.0) * np.exp(-_t(seconds) / (seconds / 4)) * 0.3


def _snare(rng: np.random.Generator) -> Signal:
    t = _t(0.18)
    body = np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.03)
    return body + rng.standard_normal(t.size) * np.exp(-t / 0.05) * 0.6


def _beat(rng: np.random.Generator, seconds: float, bpm: float, snare: bool) -> Signal:
    out = np.zeros(round(seconds * RATE))
    beat = 60.0 / bpm
    for i in range(int(seconds / beat) + 1):
        at = i * beat
        if i % 2 == 0 or not snare:
            _place(out, at, _kick(rng))
        else:
            _place(out, at, _snare(rng))
        _place(out, at + beat / 2, _hat(rng))
    return out


# --- music ---------------------------------------------------------------------


def _chords(rng: np.random.Generator, seconds: float) -> Signal:
    """Piano-like chords, a bar each: harmonics falling as 1/k, decaying."""
    out = np.zeros(round(seconds * RATE))
    key = 48 + int(rng.integers(0, 12))
    bar = float(rng.uniform(1.6, 2.4))
    progression = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
    piano = tuple(1.0 / k for k in range(1, 9))
    for i in range(int(seconds / bar) + 1):
        for note in progression[i % len(progression)]:
            _place(out, i * bar, _tone(key + note, bar, piano, decay_s=0.8))
        _place(out, i * bar, _tone(key - 12 + progression[i % 4][0], bar, piano, decay_s=1.2))
    return out


def _arpeggio(rng: np.random.Generator, seconds: float) -> Signal:
    """Plucked chord notes one after another, eighth notes at 100-150 bpm."""
    out = np.zeros(round(seconds * RATE))
    key = 55 + int(rng.integers(0, 12))
    step = 30.0 / float(rng.uniform(100, 150))
    progression = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
    pluck = (1.0, 0.6, 0.4, 0.25, 0.15, 0.1)
    pattern = (0, 1, 2, 1, 0, 2, 1, 2)
    for i in range(int(seconds / step) + 1):
        chord = progression[(i // 8) % len(progression)]
        note = key + chord[pattern[i % 8]] + (12 if i % 16 >= 8 else 0)
        _place(out, i * step, _tone(note, step * 2, pluck, decay_s=step * 0.7))
    return out


def _beat_tones(rng: np.random.Generator, seconds: float) -> Signal:
    """A melody of saw-like tones (ten harmonics) over kick and hi-hat."""
    bpm = float(rng.uniform(90, 130))
    out = _beat(rng, seconds, bpm, snare=False) * 0.8
    key = 60 + int(rng.integers(0, 12))
    saw = tuple(1.0 / k for k in range(1, 11))
    beat = 60.0 / bpm
    at = 0.0
    while at < seconds:
        length = beat * float(rng.choice([0.5, 1.0, 1.0, 2.0]))
        note = key + _SCALE[int(rng.integers(len(_SCALE)))]
        _place(out, at, _tone(note, length, saw, decay_s=length) * 0.5)
        at += length
    return out


def _pad_tremolo(rng: np.random.Generator, seconds: float) -> Signal:
    """Organ pads (odd harmonics) held for bars, with a 4-7 Hz tremolo."""
    out = np.zeros(round(seconds * RATE))
    key = 50 + int(rng.integers(0, 12))
    bar = float(rng.uniform(2.5, 4.0))
    progression = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
    organ = (1.0, 0.0, 0.5, 0.0, 0.3, 0.0, 0.2)
    for i in range(int(seconds / bar) + 1):
        for note in progression[i % len(progression)]:
            _place(out, i * bar, _tone(key + note, bar, organ, attack_s=0.15))
    tremolo = 1.0 + 0.4 * np.sin(2 * np.pi * float(rng.uniform(4, 7)) * _t(seconds))
    return out * tremolo


def _bass_drums(rng: np.random.Generator, seconds: float) -> Signal:
    """A walking bass line over kick, snare and hi-hat."""
    bpm = float(rng.uniform(80, 120))
    out = _beat(rng, seconds, bpm, snare=True)
    key = 36 + int(rng.integers(0, 12))
    bass = (1.0, 0.5, 0.3, 0.2)
    beat = 60.0 / bpm
    for i in range(int(seconds / beat) + 1):
        note = key + _SCALE[int(rng.integers(0, 5))]
        _place(out, i * beat, _tone(note, beat, bass, decay_s=beat * 0.8) * 1.2)
    return out


def _vibrato_lead(rng: np.random.Generator, seconds: float) -> Signal:
    """A sung-like lead: voice-range notes with vibrato and a formant-like
    harmonic weighting, over soft chords."""
    out = _chords(rng, seconds) * 0.4
    key = 57 + int(rng.integers(0, 8))
    # strong 2nd-4th harmonics, as a vowel's first formant lifts them
    voice = (0.6, 1.0, 0.8, 0.5, 0.2, 0.15, 0.1, 0.08)
    at = 0.0
    while at < seconds:
        length = float(rng.choice([0.4, 0.6, 0.8, 1.2]))
        note = key + _SCALE[int(rng.integers(len(_SCALE)))]
        tone = _tone(note, length, voice, attack_s=0.05, vibrato=(5.5, 0.4))
        _place(out, at, tone * 0.8)
        at += length + float(rng.choice([0.0, 0.0, 0.1, 0.3]))
    return out


MUSIC: dict[str, Callable[[np.random.Generator, float], Signal]] = {
    "chords": _chords,
    "arpeggio": _arpeggio,
    "beat_tones": _beat_tones,
    "pad_tremolo": _pad_tremolo,
    "bass_drums": _bass_drums,
    "vibrato_lead": _vibrato_lead,
}


# --- noise ---------------------------------------------------------------------


def _coloured(rng: np.random.Generator, seconds: float, exponent: float) -> Signal:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    n = round(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    freqs[0] = freqs[1]
    return np.fft.irfft(spectrum / freqs ** (exponent / 2), n)


def _hum(rng: np.random.Generator, seconds: float) -> Signal:
    t = _t(seconds)
    base = float(rng.choice([50.0, 60.0]))
    hum = sum(a * np.sin(2 * np.pi * base * k * t) for k, a in ((1, 1.0), (2, 0.3), (3, 0.5)))
    return hum + _coloured(rng, seconds, 0) * 0.02 * np.std(hum)


def _fan(rng: np.random.Generator, seconds: float) -> Signal:
    rumble = _coloured(rng, seconds, 1.5)
    blade = np.sin(2 * np.pi * float(rng.uniform(90, 160)) * _t(seconds))
    return rumble / np.std(rumble) + 0.3 * blade


def _crackle(rng: np.random.Generator, seconds: float) -> Signal:
    """Rain on a window: sparse random clicks over a soft hiss."""
    n = round(seconds * RATE)
    clicks = (rng.random(n) < 0.002) * rng.standard_normal(n)
    drop = np.exp(-np.arange(80) / 15.0)
    return np.convolve(clicks, drop, mode="same") + _coloured(rng, seconds, 1) * 0.05


NOISE: dict[str, Callable[[np.random.Generator, float], Signal]] = {
    "white": lambda rng, s: _coloured(rng, s, 0),
    "pink": lambda rng, s: _coloured(rng, s, 1),
    "brown": lambda rng, s: _coloured(rng, s, 2),
    "hum": _hum,
    "fan": _fan,
    "crackle": _crackle,
}

#: what the discard rule was tuned on
TUNE_MUSIC = tuple(
    Clip(kind, seed) for kind in ("chords", "arpeggio", "beat_tones") for seed in (1, 2, 3)
)
TUNE_NOISE = tuple(Clip(kind, 1) for kind in ("white", "pink", "brown"))
#: only checked afterwards: other kinds, other seeds
HELD_OUT_MUSIC = tuple(
    Clip(kind, seed)
    for kind in ("pad_tremolo", "bass_drums", "vibrato_lead", "chords", "arpeggio", "beat_tones")
    for seed in (11, 12)
)
HELD_OUT_NOISE = tuple(
    Clip(kind, 11) for kind in ("white", "pink", "brown", "hum", "fan", "crackle")
)


def render(clip: Clip, seconds: float, *, tail_s: float = 2.0) -> Pcm:
    """The clip as 16 kHz mono int16 at :data:`PEAK`, followed by ``tail_s`` of
    near silence (as after anything a microphone hears)."""
    rng = _rng(clip.kind, clip.seed)
    make = MUSIC.get(clip.kind) or NOISE[clip.kind]
    signal = make(rng, seconds)[: round(seconds * RATE)]
    signal = signal / float(np.max(np.abs(signal))) * PEAK
    quiet = rng.standard_normal(round(tail_s * RATE)) * 24.0  # the fixtures' noise floor
    return np.clip(np.round(np.concatenate([signal, quiet])), -32768, 32767).astype(np.int16)
