"""The two voice activity engines side by side: webrtcvad and Silero VAD in noise.

Generated commands (espeak-ng, each one's start and end known to the sample)
are mixed with white noise at 20, 10 and 0 dB SNR (speech level over the
spoken spans) and run through the real front-end (wake word off, no early
transcription) with each engine. Per engine and level:

- utterances found whole: one utterance covers the command and no other;
  split, merged and missed otherwise;
- words lost at the start and the end: the *clean* audio cut where the
  engine cut the noisy one is transcribed, and the reference words before the
  first and after the last word heard are counted (so the STT's trouble with
  noise does not count against the VAD); the same cut at the true boundaries
  is the floor;
- false starts on noise alone: utterances opened by 30 s of the same noise;
- CPU per 20 ms frame of the engine alone.
"""

from __future__ import annotations

import difflib
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import trio

from ..audio.pcm import pcm_to_float
from ..devtools import speechgen
from ..devtools.textmetrics import normalize_text
from ..items import AudioFrame, Samples
from ..metrics import Metrics
from ..settings import Settings
from ..stt import SttBackend, load_backend
from ..testing import detached_context, detached_frontend
from ..transport.outbox import Outbox
from ..vad import load_vad
from .common import progress, summarize

__all__ = ["ENGINES", "SNR_DB", "measure_vad"]

ENGINES = ("webrtc", "silero")
#: None: the generated audio as it is (its noise floor is ~50 dB under the speech)
SNR_DB: tuple[float | None, ...] = (None, 20.0, 10.0, 0.0)
NOISE_ONLY_S = 30.0

#: Commands without a wake word: five with a pause inside, five plain, two voices.
_COMMANDS = (
    *speechgen.PAUSED,
    speechgen.Utterance("Lock the front door and turn off the lights.", speechgen.EN_F2),
    speechgen.Utterance("Open the garage door.", speechgen.EN_F2),
    speechgen.Utterance("What time is it in Tokyo?", speechgen.EN_M),
    speechgen.Utterance("Play some relaxing music.", speechgen.EN_F2),
    speechgen.Utterance("Turn on the kitchen lights.", speechgen.EN_M),
)

Pcm = npt.NDArray[np.int16]


@dataclass(frozen=True)
class _Segment:
    start_s: float
    end_s: float


def _speech_rms(pcm: Pcm, timings: Sequence[dict[str, Any]]) -> float:
    spans = [
        pcm[round(t["speech_start_s"] * 16000) : round(t["speech_end_s"] * 16000)] for t in timings
    ]
    speech = np.concatenate(spans).astype(np.float64)
    return float(np.sqrt(np.mean(speech**2)))


def _noise(samples: int, rms: float, seed: str) -> npt.NDArray[np.float64]:
    return speechgen.noise(samples, rms, zlib.crc32(seed.encode()))


def _mix(pcm: Pcm, noise: npt.NDArray[np.float64]) -> Pcm:
    mixed = pcm.astype(np.float64) + noise
    return np.clip(np.round(mixed), -32768, 32767).astype(np.int16)


def _frames(pcm: Pcm, frame_samples: int) -> npt.NDArray[np.int16]:
    padded = np.zeros(-(-pcm.size // frame_samples) * frame_samples, dtype=np.int16)
    padded[: pcm.size] = pcm
    return padded.reshape(-1, frame_samples)


def _segments(settings: Settings, engine: str, pcm: Pcm) -> list[_Segment]:
    """Where the front-end with this engine cuts utterances (pre-roll and tail included)."""
    ctx = detached_context("bench", "bench", Outbox(), Metrics())
    vad = settings.vad.model_copy(update={"engine": engine})
    voice = load_vad(vad, 16000).stream(vad)
    frontend = detached_frontend(ctx, settings, wake=None, voice=voice)
    found: list[_Segment] = []
    for index, samples in enumerate(_frames(pcm, settings.audio.frame_samples)):
        utterance = frontend.process(AudioFrame(index, samples, 0.0))
        if utterance is not None:
            found.append(_Segment(utterance.start_s, utterance.end_s))
            ctx.state.utterance_done("bench")
    final = frontend.flush()
    if final is not None:
        found.append(_Segment(final.start_s, final.end_s))
    return found


def _cpu_per_frame_us(settings: Settings, engine: str, pcm: Pcm) -> float:
    vad = settings.vad.model_copy(update={"engine": engine})
    voice = load_vad(vad, 16000).stream(vad)
    frames: Sequence[Samples] = list(_frames(pcm, settings.audio.frame_samples))
    started = time.thread_time()
    for samples in frames:
        voice.is_speech(samples)
    return (time.thread_time() - started) / len(frames) * 1e6


def _lost_words(reference: str, heard: str) -> tuple[int, int]:
    """Reference words before the first and after the last one heard."""
    ref, hyp = normalize_text(reference), normalize_text(heard)
    blocks = [b for b in difflib.SequenceMatcher(None, ref, hyp).get_matching_blocks() if b.size]
    if not blocks:
        return len(ref), 0
    return blocks[0].a, len(ref) - (blocks[-1].a + blocks[-1].size)


class _Transcriber:
    """The clean audio between two times, transcribed once per distinct cut."""

    def __init__(self, backend: SttBackend, clean: Pcm) -> None:
        self._backend = backend
        self._clean = clean
        self._cache: dict[tuple[int, int], str] = {}

    async def text(self, start_s: float, end_s: float) -> str:
        key = (max(0, round(start_s * 16000)), round(end_s * 16000))
        if key not in self._cache:
            audio = pcm_to_float(self._clean[key[0] : key[1]])
            result = await self._backend.transcribe(audio, language="en")
            self._cache[key] = result.text
        return self._cache[key]


async def _score(
    segments: Sequence[_Segment],
    timings: Sequence[dict[str, Any]],
    transcriber: _Transcriber | None,
) -> dict[str, Any]:
    """How the segments cover the commands; without a transcriber, no words lost
    are counted (None)."""
    whole = split = merged = missed = 0
    lost_start: list[int] = []
    lost_end: list[int] = []
    for timing in timings:
        start, end = timing["speech_start_s"], timing["speech_end_s"]
        over = [s for s in segments if s.start_s < end and s.end_s > start]
        if not over:
            missed += 1
            lost_start.append(len(normalize_text(timing["text"])))
            lost_end.append(0)
            continue
        if len(over) > 1:
            split += 1
        elif any(
            o is not timing
            and o["speech_start_s"] < over[0].end_s
            and o["speech_end_s"] > over[0].start_s
            for o in timings
        ):
            merged += 1
        else:
            whole += 1
        if transcriber is not None:
            heard = " ".join([await transcriber.text(s.start_s, s.end_s) for s in over])
            first, last = _lost_words(timing["text"], heard)
            lost_start.append(first)
            lost_end.append(last)
    return {
        "utterances": len(timings),
        "found_whole": whole,
        "split": split,
        "merged": merged,
        "missed": missed,
        "segments": len(segments),
        "words_lost_start": sum(lost_start) if transcriber is not None else None,
        "words_lost_end": sum(lost_end) if transcriber is not None else None,
    }


async def _run(settings: Settings, quick: bool) -> dict[str, Any]:
    commands = (_COMMANDS[0], _COMMANDS[6]) if quick else _COMMANDS
    levels = (None, 0.0) if quick else SNR_DB
    noise_s = 8.0 if quick else NOISE_ONLY_S
    clean, timings = speechgen.render(commands, "bench/vad")
    speech_rms = _speech_rms(clean, timings)
    stt = settings.stt
    backend = await load_backend(stt)
    transcriber = _Transcriber(backend, clean)
    words = sum(len(normalize_text(t["text"])) for t in timings)
    # The floor: the true spans with the pre-roll the front-end adds.
    pre_roll = settings.vad.pre_roll_ms / 1000
    oracle = [_Segment(t["speech_start_s"] - pre_roll, t["speech_end_s"] + 0.3) for t in timings]
    result: dict[str, Any] = {
        "model": stt.whispercpp.model_name,
        "audio_s": round(clean.size / 16000, 1),
        "words": words,
        "noise": "white, near-Gaussian, at the SNR below the speech's RMS over its spans",
        "noise_only_s": noise_s,
        # Quick: words lost only where the tests read them (clean), and no floor:
        # each distinct cut is a whisper pass (~0.6 s of CPU on tiny.en), 9 -> 4.
        "true_boundaries": await _score(oracle, timings, None if quick else transcriber),
        "levels": [],
    }
    for snr in levels:
        noise_rms = 0.0 if snr is None else speech_rms / 10 ** (snr / 20)
        noisy = clean if snr is None else _mix(clean, _noise(clean.size, noise_rms, f"s{snr}"))
        noise_only = speechgen.render_noise(noise_s, "bench/vad/noise")
        if snr is not None:
            samples = round(noise_s * 16000)
            noise_only = _mix(
                np.zeros(samples, dtype=np.int16), _noise(samples, noise_rms, f"n{snr}")
            )
        level: dict[str, Any] = {"snr_db": snr, "engines": {}}
        for engine in ENGINES:
            progress(f"vad: {engine} at {'clean' if snr is None else f'{snr:g} dB'}")
            scorer = None if quick and snr is not None else transcriber
            row = await _score(_segments(settings, engine, noisy), timings, scorer)
            row["false_starts_noise_only"] = len(_segments(settings, engine, noise_only))
            level["engines"][engine] = row
        result["levels"].append(level)
    result["cpu_us_per_frame"] = {
        engine: summarize((_cpu_per_frame_us(settings, engine, clean) for _ in range(3)), 1)
        for engine in ENGINES
    }
    await backend.aclose()
    return result


def measure_vad(settings: Settings, *, quick: bool = False) -> dict[str, Any]:
    """Both engines on the same noisy audio, with the profile's other VAD settings."""
    vad = settings.vad.model_copy(update={"early_ms": 0})
    wakeword = settings.wakeword.model_copy(update={"enabled": False})
    return trio.run(_run, settings.model_copy(update={"vad": vad, "wakeword": wakeword}), quick)
