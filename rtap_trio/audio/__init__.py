"""Audio sources: microphone, file, and the built-in demo."""

from __future__ import annotations

from pathlib import Path

from ..settings import AudioSettings
from .base import AudioSource
from .file import DemoSource, FileSource, demo_recording, load_audio, replay_source
from .mic import MicSource, list_input_devices

__all__ = [
    "AudioSource",
    "DemoSource",
    "FileSource",
    "MicSource",
    "demo_recording",
    "list_input_devices",
    "load_audio",
    "replay_source",
    "source_from_settings",
]


def source_from_settings(settings: AudioSettings) -> AudioSource | None:
    """The local source the settings name; None for ``none`` (network sessions only)."""
    spec = settings.effective_source
    if spec == "none":
        return None
    if spec == "demo":
        return DemoSource(
            frame_samples=settings.frame_samples,
            realtime=settings.realtime,
            loop=settings.loop_demo,
            loop_gap_ms=settings.loop_gap_ms,
            start_at=settings.start_at,
        )
    if spec.startswith("file:"):
        return FileSource(
            Path(spec[5:]),
            frame_samples=settings.frame_samples,
            realtime=settings.realtime,
            trailing_silence_ms=1000,
            start_at=settings.start_at,
        )
    return MicSource(
        settings.device,
        frame_samples=settings.frame_samples,
        sample_rate=settings.sample_rate,
        queue_frames=settings.capture_queue_frames,
    )
