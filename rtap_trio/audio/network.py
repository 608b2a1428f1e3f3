"""Audio pushed in by a network client: decoded, down-mixed, resampled, framed.

A client sends raw PCM in the format it announced (any rate from 8 to 48 kHz,
s16le or f32le, mono or stereo) in messages of any length. :class:`PushSource`
turns them into the pipeline's 16 kHz mono int16 frames with a streaming soxr
resampler (no clicks at message boundaries) and hands the frames on through a
bounded channel: a client that sends faster than the pipeline takes its audio
waits (``push`` blocks, so TCP pushes back), and loses nothing. A client that
ends its own turns (a Realtime manual commit) says so with ``end_turn``: the
audio so far goes out whole, then a :class:`~rtap_trio.items.TurnEnd` mark
between the frames.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soxr
import trio

from ..items import Float32, Samples, TurnEnd
from .base import AudioSource
from .pcm import float_to_pcm, pcm_to_float

__all__ = ["ENCODINGS", "AudioFormatError", "Encoding", "PushSource", "PushedAudio"]

Encoding = Literal["pcm_s16le", "pcm_f32le"]
#: bytes per sample of each encoding a client may announce
ENCODINGS: dict[str, int] = {"pcm_s16le": 2, "pcm_f32le": 4}
MIN_RATE, MAX_RATE = 8_000, 48_000


class AudioFormatError(ValueError):
    """Audio that does not fit the announced format."""


@dataclass(frozen=True, slots=True)
class PushedAudio:
    """How a client will push its audio: the format it announced, checked when
    its :class:`PushSource` is made, and whether someone waits on each answer
    (see :class:`PushSource`)."""

    sample_rate: int
    encoding: Encoding
    channels: int
    interactive: bool = True


class PushSource(AudioSource):
    # A client's audio is never dropped: one that sends faster than the
    # front-end takes it waits (TCP back-pressure). By default it is a person
    # talking: when transcription falls behind, the oldest waiting utterance
    # goes, as for a microphone, rather than the whole session stalling behind
    # it. ``interactive=False`` is for clients that send recordings faster than
    # real time and want every word (Wyoming): their utterances wait too, and
    # the back-pressure reaches the client.
    live = False

    @property
    def interactive(self) -> bool:
        return self._interactive

    def __init__(
        self,
        *,
        name: str,
        sample_rate: int,
        encoding: Encoding,
        channels: int,
        frame_samples: int,
        target_rate: int = 16_000,
        queue_frames: int = 50,
        interactive: bool = True,
    ) -> None:
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            raise AudioFormatError(f"sample_rate {sample_rate} is outside {MIN_RATE}..{MAX_RATE}")
        if encoding not in ENCODINGS:
            raise AudioFormatError(f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
        if channels not in (1, 2):
            raise AudioFormatError(f"channels must be 1 or 2, not {channels}")
        self.name = name
        self._interactive = interactive
        self.sample_rate = sample_rate
        self.encoding = encoding
        self.channels = channels
        self._frame_bytes = ENCODINGS[encoding] * channels
        self._dtype = np.dtype("<i2") if encoding == "pcm_s16le" else np.dtype("<f4")
        self._frame_samples = frame_samples
        self._resampler = (
            soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32", quality="HQ")
            if sample_rate != target_rate
            else None
        )
        self._carry = np.zeros(0, dtype=np.int16)
        self._send, self._receive = trio.open_memory_channel[Samples | TurnEnd](queue_frames)
        #: audio received, in seconds of the client's stream
        self.received_s = 0.0

    async def open(self) -> None:
        """Nothing to open: the client is already connected."""

    async def push(self, data: bytes) -> None:
        """One message of the client's audio; waits while the pipeline is behind.

        Raises AudioFormatError when ``data`` is not whole samples of the format.
        """
        if len(data) % self._frame_bytes:
            raise AudioFormatError(
                f"an audio message of {len(data)} bytes is not whole samples of "
                f"{self.encoding} x {self.channels} channel(s) ({self._frame_bytes} bytes each)"
            )
        samples = np.frombuffer(data, dtype=self._dtype).reshape(-1, self.channels)
        self.received_s += samples.shape[0] / self.sample_rate
        audio: Float32
        if self.encoding == "pcm_s16le":
            # Little-endian on the wire; native int16 here (no copy on this machine).
            audio = pcm_to_float(samples.astype(np.int16, copy=False))
        else:
            # NaN or infinities mean nothing as sound; beyond full scale is clipping
            # anyway, and unbounded values would overflow the resampler into NaN.
            audio = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
            audio = np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
        mono = audio.mean(axis=1) if self.channels == 2 else audio[:, 0]
        await self._emit(mono)

    async def end_turn(self, language: str | None = None) -> None:
        """The client ended its turn: what it sent so far goes out whole, then the
        :class:`~rtap_trio.items.TurnEnd` mark (transcribe it in ``language``;
        None: detect it). The next turn is resampled afresh."""
        await self._flush()
        if self._resampler is not None:
            self._resampler.clear()
        await self._send.send(TurnEnd(language))

    async def finish(self) -> None:
        """The client has no more audio: the rest of it goes out whole, then the end."""
        await self._flush()
        self._send.close()

    async def _flush(self) -> None:
        """The resampler's tail and a last frame padded with silence."""
        if self._resampler is not None:
            await self._emit(np.zeros(0, dtype=np.float32), last=True)
        if self._carry.size:
            frame = np.zeros(self._frame_samples, dtype=np.int16)
            frame[: self._carry.size] = self._carry
            self._carry = frame[:0]
            await self._send.send(frame)

    def close(self) -> None:
        """End at once (the client is gone): whatever is queued is dropped."""
        self._send.close()

    async def _emit(self, mono: Float32, *, last: bool = False) -> None:
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        pcm = float_to_pcm(mono)
        pending = np.concatenate((self._carry, pcm)) if self._carry.size else pcm
        whole = pending.size - pending.size % self._frame_samples
        for start in range(0, whole, self._frame_samples):
            await self._send.send(pending[start : start + self._frame_samples].copy())
        self._carry = pending[whole:].copy()

    async def stream(self) -> AsyncIterator[Samples | TurnEnd]:
        async for item in self._receive:
            yield item

    async def frames(self) -> AsyncIterator[Samples]:
        async for item in self._receive:
            if not isinstance(item, TurnEnd):
                yield item

    async def aclose(self) -> None:
        self._send.close()
        self._receive.close()
