"""Microphone capture through PortAudio (sounddevice).

PortAudio calls back on its own thread; the callback copies the block and hands
it to trio with ``TrioToken.run_sync_soon``, which never blocks the audio
thread. Frames wait in a bounded queue that drops its oldest when full, so a
stalled pipeline costs old audio, never a PortAudio overflow.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import trio

from ..buffers import FullPolicy, open_channel
from ..errors import AudioSourceError
from ..items import Samples
from .base import AudioSource

__all__ = ["MicSource", "list_input_devices"]


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio library itself is missing
        raise AudioSourceError(
            f"PortAudio is not available ({exc}); install libportaudio2"
        ) from exc
    return sounddevice


def list_input_devices() -> list[dict[str, Any]]:
    sd = _sounddevice()
    return [
        {"index": i, "name": d["name"], "channels": d["max_input_channels"]}
        for i, d in enumerate(sd.query_devices())
        if d["max_input_channels"] > 0
    ]


def _resolve_device(device: str | int | None) -> int | None:
    """A device index from an index, a numeric string, or a (sub)string of its name."""
    if device is None or device == "":
        return None
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        index = int(device)
        if not any(d["index"] == index for d in list_input_devices()):
            raise AudioSourceError(f"audio device {index}: no such input device")
        return index
    inputs = list_input_devices()
    exact = [d for d in inputs if d["name"] == device]
    matches = exact or [d for d in inputs if device.lower() in d["name"].lower()]
    if len(matches) == 1:
        return int(matches[0]["index"])
    names = ", ".join(f"{d['index']}: {d['name']}" for d in inputs) or "none"
    what = "is ambiguous" if matches else "not found"
    raise AudioSourceError(f"audio device '{device}' {what}; input devices: {names}")


class MicSource(AudioSource):
    live = True
    joins_mid_stream = True

    def __init__(
        self,
        device: str | int | None,
        *,
        frame_samples: int,
        sample_rate: int = 16000,
        queue_frames: int = 100,
    ) -> None:
        self._device_spec = device
        self._device: int | None = None
        self._frame_samples = frame_samples
        self._sample_rate = sample_rate
        self._queue_frames = queue_frames
        self.name = f"mic:{device if device is not None else 'default'}"
        self.overflows = 0
        self.dropped = 0

    async def open(self) -> None:
        sd = _sounddevice()
        self._device = await trio.to_thread.run_sync(_resolve_device, self._device_spec)
        try:
            await trio.to_thread.run_sync(
                lambda: sd.check_input_settings(
                    device=self._device, channels=1, dtype="int16", samplerate=self._sample_rate
                )
            )
        except Exception as exc:  # PortAudioError or ValueError, depending on the fault
            raise AudioSourceError(f"{self.name}: cannot capture 16 kHz mono: {exc}") from None

    async def frames(self) -> AsyncIterator[Samples]:
        sd = _sounddevice()
        token = trio.lowlevel.current_trio_token()

        def count_drop(_: Samples) -> None:
            self.dropped += 1

        send, receive = open_channel("mic", self._queue_frames, FullPolicy.DROP_OLDEST, count_drop)

        def deliver(block: Samples) -> None:
            # The stream may be torn down while a block is on its way.
            with contextlib.suppress(trio.ClosedResourceError):
                send.send_nowait(block)

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            if status.input_overflow:
                self.overflows += 1
            try:
                token.run_sync_soon(deliver, indata[:, 0].copy())
            except trio.RunFinishedError:
                raise sd.CallbackStop from None

        try:
            stream = sd.InputStream(
                device=self._device,
                channels=1,
                dtype="int16",
                samplerate=self._sample_rate,
                blocksize=self._frame_samples,
                callback=callback,
            )
        except Exception as exc:
            raise AudioSourceError(f"{self.name}: cannot open input stream: {exc}") from None
        await trio.to_thread.run_sync(stream.start)
        try:
            async with receive:
                async for block in receive:
                    if block.size == self._frame_samples:
                        yield block
                    else:  # PortAudio may deliver a short last block; pad it
                        frame = np.zeros(self._frame_samples, dtype=np.int16)
                        frame[: block.size] = block[: self._frame_samples]
                        yield frame
        finally:
            send.close()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stream.close)
