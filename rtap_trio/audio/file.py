"""WAV (or any libsndfile format) as an audio source: resampled, downmixed, framed."""

from __future__ import annotations

import io
import itertools
import stat
import time
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
import soxr
import trio

from ..errors import AudioSourceError
from ..items import Samples
from ..settings import AudioSettings, VadSettings
from .base import AudioSource
from .framing import pace, split_frames

__all__ = [
    "DemoSource",
    "FileSource",
    "decode_audio",
    "demo_recording",
    "load_audio",
    "replay_source",
]


def load_audio(path: Path, sample_rate: int) -> Samples:
    """The whole file as int16 mono at ``sample_rate``; raises AudioSourceError.

    Channels are averaged (not just the left one taken) and the rate is
    converted with soxr's high-quality resampler, never by dropping samples.
    """
    _check_regular_file(path)
    return _decode(str(path), str(path), sample_rate)


def decode_audio(data: bytes, sample_rate: int, label: str = "upload") -> Samples:
    """Audio in any format libsndfile reads (WAV, FLAC, OGG, MP3, ...), from memory."""
    return _decode(io.BytesIO(data), label, sample_rate)


def _decode(source: str | BinaryIO, label: str, sample_rate: int) -> Samples:
    try:
        data, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise AudioSourceError(f"{label}: cannot decode audio: {exc.error_string}") from None
    except (RuntimeError, ValueError, TypeError) as exc:
        raise AudioSourceError(f"{label}: cannot decode audio: {exc}") from None
    if data.size == 0:
        raise AudioSourceError(f"{label}: the file holds no audio")
    if not np.isfinite(data).all() or np.abs(data).max() > 1.0:
        # A float file may hold NaN, infinities or values far past full scale;
        # as samples they mean nothing (silence), or clipping, and unbounded
        # values would overflow the resampler (and numpy warn on the cast).
        data = np.clip(np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    pcm: Samples = (np.clip(mono, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    return pcm


def _check_regular_file(path: Path) -> None:
    """Say what is wrong with a path that is not an audio file (before reading it)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AudioSourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise AudioSourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise AudioSourceError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(mode):
        # A FIFO or a device such as /dev/zero never ends: reading it whole
        # would never finish.
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise AudioSourceError(f"{path}: is {kind}, not a regular audio file")


def demo_recording() -> Path:
    """The demo recording shipped in the package (scripts/make_speech.py makes it)."""
    return Path(str(resources.files("rtap_trio.audio") / "data" / "demo.wav"))


class FileSource(AudioSource):
    """Plays a file once (or looped), paced like a microphone or as fast as possible.

    Unpaced, it is not live: a full channel makes it wait, so replay loses
    nothing. Paced, it behaves like a microphone and never waits.
    """

    def __init__(
        self,
        path: Path,
        *,
        frame_samples: int,
        sample_rate: int = 16000,
        realtime: bool = True,
        loop: bool = False,
        loop_gap_ms: int = 0,
        trailing_silence_ms: int = 0,
        start_at: float | None = None,
    ) -> None:
        """``start_at``: the Unix time the (paced) file is at its first sample, as if
        live since then: it waits for that moment, or starts where it would be now."""
        self.path = Path(path)
        self._start_at = start_at
        self.name = f"file:{self.path}"
        self.live = realtime
        self._frame_samples = frame_samples
        self._sample_rate = sample_rate
        self._loop = loop
        self._gap = np.zeros(sample_rate * loop_gap_ms // 1000, dtype=np.int16)
        self._trailing = np.zeros(sample_rate * trailing_silence_ms // 1000, dtype=np.int16)
        self._audio: Samples | None = None

    @classmethod
    def from_samples(
        cls,
        samples: Samples,
        *,
        name: str,
        frame_samples: int,
        sample_rate: int = 16000,
        trailing_silence_ms: int = 0,
    ) -> FileSource:
        """Audio already decoded (an upload), played once as fast as it is taken."""
        source = cls(
            Path(name),
            frame_samples=frame_samples,
            sample_rate=sample_rate,
            realtime=False,
            trailing_silence_ms=trailing_silence_ms,
        )
        source.name = name
        source._audio = samples
        return source

    @property
    def duration_s(self) -> float:
        return 0.0 if self._audio is None else self._audio.size / self._sample_rate

    async def open(self) -> None:
        # Joined after its start moment: the room was already talking.
        self.joins_mid_stream = (
            self.live and self._start_at is not None and time.time() > self._start_at
        )
        if self._audio is None:
            self._audio = await trio.to_thread.run_sync(load_audio, self.path, self._sample_rate)

    async def frames(self) -> AsyncIterator[Samples]:
        await self.open()
        assert self._audio is not None
        tail = self._gap if self._loop else self._trailing
        frames = split_frames(np.concatenate((self._audio, tail)), self._frame_samples)

        def rounds() -> Iterator[Samples]:
            while True:
                yield from frames
                if not self._loop:
                    return

        if not self.live:  # as fast as the pipeline takes them (its send is the checkpoint)
            for frame in rounds():
                yield frame
            return
        frame_s = self._frame_samples / self._sample_rate
        played = rounds()
        if self._start_at is not None:
            late = time.time() - self._start_at
            if late < 0:
                await trio.sleep(-late)
            else:  # joined late: where a live source would be now
                played = itertools.islice(played, int(late / frame_s), None)
        async for frame in pace(played, frame_s):
            yield frame


def replay_source(
    path: Path, audio: AudioSettings, vad: VadSettings, *, realtime: bool = False
) -> FileSource:
    """A file played once, as ``replay`` and ``eval`` play it.

    Silence past the hangover follows it, so that the endpointer ends the last
    utterance on silence (as it would live) rather than on the end of the stream.
    """
    return FileSource(
        path,
        frame_samples=audio.frame_samples,
        sample_rate=audio.sample_rate,
        realtime=realtime,
        trailing_silence_ms=vad.hangover_ms + 200,
    )


class DemoSource(FileSource):
    """The built-in demo: a wake word and a command, looped with a pause between."""

    def __init__(
        self,
        *,
        frame_samples: int,
        realtime: bool = True,
        loop: bool = True,
        loop_gap_ms: int,
        start_at: float | None = None,
    ) -> None:
        super().__init__(
            demo_recording(),
            frame_samples=frame_samples,
            realtime=realtime,
            loop=loop,
            loop_gap_ms=loop_gap_ms,
            trailing_silence_ms=1000,
            start_at=start_at,
        )
        self.name = "demo"
