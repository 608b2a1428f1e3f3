"""WAV (or any libsndfile format) as an audio source: resampled, downmixed, framed.

Decoding is streamed: a block of at most ``_BLOCK_SAMPLES`` samples (all
channels together) is read, downmixed to mono and resampled on its own, so a
file never exists in memory as a whole multi-channel float array. Before any
of it is decoded the header is read, and what is over a caller's
:class:`AudioLimits` (duration, channels, sample rate) is refused.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import stat
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soundfile
import soxr
import trio

from ..errors import AudioSourceError
from ..items import Samples
from ..settings import AudioSettings, VadSettings
from .base import AudioSource
from .framing import pace, split_frames
from .pcm import float_to_pcm

__all__ = [
    "AudioDecoder",
    "AudioLimitError",
    "AudioLimits",
    "DecodingSource",
    "DemoSource",
    "FileSource",
    "check_audio_file",
    "decode_audio",
    "demo_recording",
    "load_audio",
    "replay_source",
]

#: Samples (all channels together) decoded per block: 1 MiB of float32 whatever
#: the channel count, so one block of a 10-minute 8-channel 48 kHz upload costs
#: what one block of a mono one does (the whole file as float32 was 921 MB).
_BLOCK_SAMPLES = 1 << 18
#: The frame count libsndfile reports for a stream whose header does not say
#: (SF_COUNT_MAX): its length is known only once decoded.
_UNKNOWN_FRAMES = 2**63 - 1


class AudioLimitError(AudioSourceError):
    """The audio is over a budget (duration, channels, sample rate): refused unheard."""


@dataclass(frozen=True, slots=True)
class AudioLimits:
    """What a caller accepts of a file; None: anything (a local file the operator chose)."""

    max_seconds: float | None = None
    max_channels: int | None = None
    max_sample_rate: int | None = None


class AudioDecoder:
    """A file's audio as int16 mono at ``sample_rate``, block by block.

    Opening reads the header only and refuses (:class:`AudioLimitError`) what
    is over ``limits``; the duration is checked again while decoding, since a
    header may not say it (a FLAC stream) or may be wrong (an MP3's estimate).
    Channels are averaged (not just the left one taken) and the rate is
    converted with soxr's high-quality resampler, whose stream keeps its filter
    state from block to block: the result is the one-shot resampling's, sample
    for sample. Blocking (libsndfile): call it from a worker thread, one call
    at a time. Raises AudioSourceError with ``label`` in the message.
    """

    def __init__(
        self,
        source: str | BinaryIO,
        sample_rate: int,
        *,
        label: str,
        limits: AudioLimits | None = None,
    ) -> None:
        self.label = label
        self.sample_rate = sample_rate
        limits = limits or AudioLimits()
        with _decode_errors(label):
            self._file = soundfile.SoundFile(source)
        try:
            self.channels: int = self._file.channels
            self.source_rate: int = self._file.samplerate
            frames: int = self._file.frames
            self._max_frames = _check_header(label, self.channels, self.source_rate, frames, limits)
        except BaseException:
            self._file.close()
            raise
        #: what the header says, None when it does not
        self.header_frames = None if frames >= _UNKNOWN_FRAMES else frames
        self._block = np.empty(
            (max(1, _BLOCK_SAMPLES // self.channels), self.channels), dtype=np.float32
        )
        self._resampler = (
            soxr.ResampleStream(self.source_rate, sample_rate, 1, dtype="float32", quality="HQ")
            if self.source_rate != sample_rate
            else None
        )
        self._frames_read = 0
        self._done = False
        #: int16 samples at ``sample_rate`` returned so far
        self.samples_out = 0

    @property
    def decoded_s(self) -> float:
        return self.samples_out / self.sample_rate

    def expected_samples(self) -> int | None:
        """How many samples the header says the whole file makes (None: it does not say)."""
        if self.header_frames is None:
            return None
        return math.ceil(self.header_frames * self.sample_rate / self.source_rate)

    def read(self) -> Samples | None:
        """The next block (maybe empty), None once the file is all read."""
        if self._done:
            return None
        with _decode_errors(self.label):
            block = self._file.read(
                len(self._block), dtype="float32", always_2d=True, out=self._block
            )
        count = len(block)
        self._frames_read += count
        if self._max_frames is not None and self._frames_read > self._max_frames:
            seconds = self._max_frames / self.source_rate
            raise AudioLimitError(
                f"{self.label}: the audio goes on past the {seconds:g} s accepted "
                "(its header did not say so)"
            )
        last = count < len(self._block)
        if last:
            self._done = True
            if self._frames_read == 0:
                raise AudioSourceError(f"{self.label}: the file holds no audio")
        pcm = _to_pcm(self._mono(block), self._resampler, last=last)
        self.samples_out += pcm.size
        return pcm

    def _mono(self, block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if block.size and (not np.isfinite(block).all() or np.abs(block).max() > 1.0):
            # A float file may hold NaN, infinities or values far past full scale;
            # as samples they mean nothing (silence), or clipping, and unbounded
            # values would overflow the resampler (and numpy warn on the cast).
            np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            np.clip(block, -1.0, 1.0, out=block)
        if self.channels == 1:
            return np.ascontiguousarray(block[:, 0])
        mono: npt.NDArray[np.float32] = block.mean(axis=1, dtype=np.float32)
        return mono

    def close(self) -> None:
        self._done = True
        self._file.close()

    def __enter__(self) -> AudioDecoder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _check_header(
    label: str, channels: int, rate: int, frames: int, limits: AudioLimits
) -> int | None:
    """The most frames ``limits`` let be decoded (None: no limit); raises past them."""
    if limits.max_channels is not None and channels > limits.max_channels:
        raise AudioLimitError(
            f"{label}: the audio has {channels} channels; "
            f"at most {limits.max_channels} are accepted"
        )
    if limits.max_sample_rate is not None and rate > limits.max_sample_rate:
        raise AudioLimitError(
            f"{label}: the audio's sample rate is {rate} Hz; "
            f"at most {limits.max_sample_rate} Hz is accepted"
        )
    if frames == 0:
        raise AudioSourceError(f"{label}: the file holds no audio")
    if limits.max_seconds is None:
        return None
    max_frames = int(limits.max_seconds * rate)
    if max_frames < frames < _UNKNOWN_FRAMES:
        raise AudioLimitError(
            f"{label}: the audio lasts {frames / rate:.0f} s; "
            f"at most {limits.max_seconds:g} s is accepted"
        )
    return max_frames


def _to_pcm(
    mono: npt.NDArray[np.float32], resampler: soxr.ResampleStream | None, *, last: bool
) -> Samples:
    if resampler is not None:
        mono = resampler.resample_chunk(mono, last=last)
    return float_to_pcm(mono)


@contextlib.contextmanager
def _decode_errors(label: str) -> Iterator[None]:
    """libsndfile's errors (and soundfile's own) as AudioSourceError."""
    try:
        yield
    except soundfile.LibsndfileError as exc:
        raise AudioSourceError(f"{label}: cannot decode audio: {exc.error_string}") from None
    except (RuntimeError, ValueError, TypeError) as exc:
        raise AudioSourceError(f"{label}: cannot decode audio: {exc}") from None


def check_audio_file(path: Path, sample_rate: int) -> None:
    """Raise AudioSourceError now, as :func:`load_audio` would, for a path that is
    not an audio file it can decode: its header only is read."""
    _check_regular_file(path)
    with AudioDecoder(str(path), sample_rate, label=str(path)):
        pass


def load_audio(path: Path, sample_rate: int) -> Samples:
    """The whole file as int16 mono at ``sample_rate``; raises AudioSourceError."""
    _check_regular_file(path)
    with AudioDecoder(str(path), sample_rate, label=str(path)) as decoder:
        return _decode_all(decoder)


def decode_audio(
    data: bytes | BinaryIO,
    sample_rate: int,
    label: str = "upload",
    limits: AudioLimits | None = None,
) -> Samples:
    """Audio in any format libsndfile reads (WAV, FLAC, OGG, MP3, ...), from memory.

    Raises AudioLimitError for what is over ``limits`` (before decoding it).
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    with AudioDecoder(source, sample_rate, label=label, limits=limits) as decoder:
        return _decode_all(decoder)


def _decode_all(decoder: AudioDecoder) -> Samples:
    # Written into one array sized from the header, not gathered and joined:
    # the result exists once, not twice. A header that says less (or nothing)
    # makes it grow by half again when full.
    out = np.empty(decoder.expected_samples() or decoder.sample_rate * 60, dtype=np.int16)
    used = 0
    while (block := decoder.read()) is not None:
        if used + block.size > out.size:
            grown = np.empty(max(used + block.size, out.size * 3 // 2), dtype=np.int16)
            grown[:used] = out[:used]
            out = grown
        out[used : used + block.size] = block
        used += block.size
    return out[:used]


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


class DecodingSource(AudioSource):
    """An upload, decoded as it is played: once, as fast as the pipeline takes it.

    Each block is decoded in a worker thread when the last one's frames are
    taken, so what is held is the encoded file and a block, never the decoded
    whole. A decoding error ends the stream (what came before it goes through)
    and is kept in :attr:`error` for the caller to report. Resumed after a
    crash, it goes on from the next block.
    """

    live = False

    def __init__(
        self,
        decoder: AudioDecoder,
        *,
        name: str,
        frame_samples: int,
        trailing_silence_ms: int = 0,
    ) -> None:
        self.name = name
        self._decoder = decoder
        self._frame_samples = frame_samples
        self._pending: Samples = np.zeros(0, dtype=np.int16)
        self._trailing = np.zeros(decoder.sample_rate * trailing_silence_ms // 1000, dtype=np.int16)
        self._ended = False
        #: why decoding stopped early; None when the file was read to its end
        self.error: AudioSourceError | None = None

    @property
    def duration_s(self) -> float:
        """The audio decoded so far (all of it once the stream has ended)."""
        return self._decoder.decoded_s

    async def open(self) -> None:
        pass  # the decoder has read the header already

    def _next_block(self) -> Samples | None:
        try:
            return self._decoder.read()
        except AudioSourceError as exc:
            self.error = exc
            return None

    async def frames(self) -> AsyncIterator[Samples]:
        size = self._frame_samples
        while not self._ended:
            block = await trio.to_thread.run_sync(self._next_block)
            if block is None:
                self._ended = True
                break
            audio = np.concatenate((self._pending, block)) if self._pending.size else block
            whole = audio.size - audio.size % size
            self._pending = audio[whole:].copy()
            for frame in audio[:whole].reshape(-1, size):
                yield frame
        tail = np.concatenate((self._pending, self._trailing))
        self._pending = np.zeros(0, dtype=np.int16)
        self._trailing = self._pending
        for frame in split_frames(tail, size):
            yield frame

    async def aclose(self) -> None:
        self._decoder.close()


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
