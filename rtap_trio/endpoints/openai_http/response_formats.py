"""The transcription response in each ``response_format``: json, text, srt, vtt, verbose_json.

Apart from the handler because it is pure formatting: the upload's
transcripts in, a Starlette response out, in the shapes OpenAI documents
(``verbose_json`` with its segments' fields and, when word timestamps were
asked for, ``words`` as OpenAI's ``TranscriptionWord``; SubRip and WebVTT
timestamps, a cue per segment, or per word when words were asked for).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response

from ...stt import Task
from ...stt.hallucination import compression_ratio as _compression_ratio
from ...transport.schemas import TranscriptMessage

__all__ = ["RESPONSE_FORMATS", "Segment", "render"]

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


@dataclass(frozen=True, slots=True)
class Segment:
    """One transcript of the upload, as a segment of the response."""

    start: float
    end: float
    text: str
    no_speech_probability: float | None


def _timestamp(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _srt(segments: list[Segment]) -> str:
    blocks = [
        f"{n}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for n, s in enumerate(segments, 1)
    ]
    return "\n".join(blocks)


def _vtt(segments: list[Segment]) -> str:
    blocks = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(
    response_format: str,
    transcripts: list[TranscriptMessage],
    duration: float,
    language: str | None,
    language_name: Callable[[str], str],
    *,
    words: bool = False,
    task: Task = "transcribe",
) -> Response:
    """The response for an upload of ``duration`` seconds; ``language``: the one asked for.

    ``language_name`` names a language code as verbose_json gives it ("english");
    ``words``: word timestamps were asked for; ``task``: a translation answers
    in English.
    """
    segments = [
        Segment(t.audio_start_s, min(t.audio_end_s, duration), t.text, t.no_speech_probability)
        for t in transcripts
    ]
    timed = [
        Segment(round(w.start, 3), round(min(w.end, duration), 3), w.word, None)
        for t in transcripts
        for w in t.words or ()
    ]
    text = " ".join(s.text for s in segments).strip()
    if response_format == "text":
        return PlainTextResponse(text)
    cues = timed if words else segments
    if response_format == "srt":
        return PlainTextResponse(_srt(cues))
    if response_format == "vtt":
        return PlainTextResponse(_vtt(cues), media_type="text/vtt")
    if response_format == "json":
        return JSONResponse({"text": text})
    spoken = language or next((t.stt_language for t in transcripts if t.stt_language), None)
    spoken = spoken or (transcripts[0].language if transcripts else "en")
    if task == "translate":
        spoken = "en"  # OpenAI: the language of the output translation (always english)
    body: dict[str, Any] = {
        "task": task,
        "language": language_name(spoken),
        "duration": round(duration, 3),
        "text": text,
        "segments": [
            {
                "id": n,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                # whisper.cpp's greedy decoder here keeps no log-probabilities.
                "avg_logprob": 0.0,
                "compression_ratio": _compression_ratio(s.text),
                "no_speech_prob": s.no_speech_probability or 0.0,
            }
            for n, s in enumerate(segments)
        ],
    }
    if words:
        body["words"] = [{"word": w.text, "start": w.start, "end": w.end} for w in timed]
    return JSONResponse(body)
