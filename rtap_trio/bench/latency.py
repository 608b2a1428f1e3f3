"""End of speech to transcript received by a real ZeroMQ subscriber, and where the time goes.

The service runs in this process on a microphone-paced source (so frame ``i``
arrives at ``t0 + (i + 1) * 20 ms``) and a SUB socket on 127.0.0.1 receives
both streams in a thread, stamping each message as it arrives. The end of
speech is the end of the last voiced frame, taken from the ``speech_end``
event's offset, so ``received - (t0 + offset)`` is what a user waits.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import trio
import zmq

from ..app import Service
from ..devtools.textmetrics import word_error_rate
from ..items import Samples
from ..settings import Settings
from .common import ArraySource, ZmqSubscriber, summarize

__all__ = ["ZmqReceiver", "measure_latency", "measure_latency_ab"]


@dataclass
class ZmqReceiver:
    """One SUB socket on several ports; a thread receives and stamps with time.time()."""

    ports: list[int]
    received: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._subscriber = ZmqSubscriber(self.ports, receive_timeout_ms=100)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="bench-zmq-sub", daemon=True)

    async def start(self) -> None:
        await self._subscriber.wait_connected()
        self._thread.start()
        await trio.sleep(0.2)  # the subscription reaches the publisher after the handshake

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                topic, payload = self._subscriber.socket.recv_multipart()
            except zmq.Again:
                continue
            # Stamp first: parsing is the subscriber's business, not the pipeline's.
            stamp = time.time()
            # The topic is "<type>.<session id>": keep the type.
            kind = topic.decode().split(".", 1)[0]
            self.received.append((stamp, kind, json.loads(payload)))

    def transcripts(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, topic, m in self.received if topic == "transcript"]

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._subscriber.close()


def _settings(settings: Settings) -> Settings:
    # Every utterance must count, so VAD alone opens one; ports are ephemeral.
    return settings.model_copy(
        update={
            "wakeword": settings.wakeword.model_copy(update={"enabled": False}),
            "output": settings.output.model_copy(
                update={
                    "zmq_pub_port_events": 0,
                    "zmq_pub_port_transcripts": 0,
                    "websocket_port": 0,
                    "zmq_catchup_port": 0,
                }
            ),
            "http": settings.http.model_copy(update={"port": 0}),
        }
    )


async def measure_latency(settings: Settings, audio: Samples, limit_s: float) -> dict[str, Any]:
    settings = _settings(settings)
    gate = trio.Event()
    source = ArraySource(
        audio,
        frame_samples=settings.audio.frame_samples,
        paced=True,
        gate=gate,
        trailing_silence_s=settings.vad.hangover_ms / 1000 + 0.5,
    )
    service = Service(settings, source=source, handle_signals=False)
    receiver: ZmqReceiver | None = None
    try:
        # When the source ends the service drains, flushes its emitters and
        # returns on its own: the nursery ends with it.
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(service.run)
            assert ports.zmq_events is not None and ports.zmq_transcripts is not None
            receiver = ZmqReceiver([ports.zmq_events, ports.zmq_transcripts])
            await receiver.start()
            gate.set()
            with trio.move_on_after(limit_s) as scope:
                await source.finished.wait()
            if scope.cancelled_caught:
                service.stop()
        await trio.sleep(0.3)  # the last messages are on their way through the socket
    finally:
        if receiver is not None:
            receiver.close()
    assert receiver is not None
    return _analyse(receiver, source, settings)


_PARTS = ("endpoint", "queue", "preprocess", "stt", "language", "emit")


def _partials(receiver: ZmqReceiver, source: ArraySource) -> dict[str, Any]:
    """Partial transcripts: how soon the first, how many, how many words changed later."""
    starts = {
        m["utterance_id"]: float(m["data"]["offset_s"])
        for _, topic, m in receiver.received
        if topic == "speech_start" and m.get("utterance_id")
    }
    by_utterance: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for received, topic, message in receiver.received:
        if topic == "transcript_partial":
            by_utterance.setdefault(message["utterance_id"], []).append((received, message))
    first_ms, heard_ms, counts, unstable, changed = [], [], [], 0, 0
    for utterance_id, partials in by_utterance.items():
        counts.append(len(partials))
        if utterance_id in starts:
            first = partials[0][0] - (source.started_wall + starts[utterance_id])
            first_ms.append(first * 1000)
            # How much of the speech it heard; the rest of first_ms is its
            # decode (and any wait for the engine) and the trip to the SUB.
            audio_end = float(partials[0][1]["data"]["audio_end_s"])
            heard_ms.append((audio_end - starts[utterance_id]) * 1000)
        for (_, before), (_, after) in itertools.pairwise(partials):
            words, later = before["data"]["text"].split(), after["data"]["text"].split()
            for position in range(before["data"]["stable_words"], len(words)):
                unstable += 1
                if position >= len(later) or later[position] != words[position]:
                    changed += 1
    return {
        "utterances_with_partials": len(by_utterance),
        "per_utterance": summarize(counts, 1),
        "first_after_speech_start_ms": summarize(first_ms, 1),
        "first_heard_speech_ms": summarize(heard_ms, 1),
        "unstable_words": unstable,
        "unstable_words_changed_share": round(changed / unstable, 3) if unstable else None,
    }


async def measure_latency_ab(
    settings: Settings,
    audio: Samples,
    limit_s: float,
    *,
    compare_turn: bool = True,
    real_speech: Samples | None = None,
) -> dict[str, Any]:
    """The profile as it is; the plain silence timer (no early or partial
    transcription, no end-of-turn detector); and, where the profile has a
    detector and ``compare_turn``, the profile without it. Same audio.

    ``real_speech`` (recorded commands, the corpus's) is measured too, with the
    profile as it is and without its detector: the detector's answers on
    espeak-ng's speech depend on the host's CPU (docs/performance.md, "The
    detector's answers and the host's CPU"); on recorded speech they did not."""
    no_turn = settings.turn.model_copy(update={"engine": "none"})
    off = settings.model_copy(
        update={
            "vad": settings.vad.model_copy(update={"early_ms": 0}),
            "stt": settings.stt.model_copy(update={"partials": False}),
            "turn": no_turn,
        }
    )
    # The profile without its detector (None: it has none).
    without_detector = (
        settings.model_copy(update={"turn": no_turn}) if settings.turn.engine != "none" else None
    )
    variants = [("without_early", off), ("with_early", settings)]
    if compare_turn and without_detector is not None:
        variants.insert(1, ("without_turn", without_detector))
    results = {}
    for name, variant in variants:
        process = psutil.Process()
        before = process.cpu_times()
        results[name] = await measure_latency(variant, audio, limit_s)
        after = process.cpu_times()
        results[name]["cpu_s"] = round(after.user + after.system - before.user - before.system, 2)
    on, without = results["with_early"], results["without_early"]
    on["without_early"] = without
    if "without_turn" in results:
        on["without_turn"] = results["without_turn"]
    on["same_words_wer"] = round(
        word_error_rate(" ".join(without["texts"]), " ".join(on["texts"])), 4
    )
    on["peer"] = await trio.to_thread.run_sync(_peer_policy, settings, audio, without)
    if real_speech is not None:
        on["real_speech"] = await _measure_real_speech(
            settings, without_detector, real_speech, limit_s
        )
    return on


async def _measure_real_speech(
    settings: Settings, without_detector: Settings | None, audio: Samples, limit_s: float
) -> dict[str, Any]:
    """End of speech -> transcript on recorded commands: the profile, and the
    profile without its detector where it has one."""
    measured = await measure_latency(settings, audio, limit_s)
    result: dict[str, Any] = {
        "utterances": measured["utterances"],
        "ms": measured["ms"],
        "texts": measured["texts"],
    }
    if without_detector is not None:
        without = await measure_latency(without_detector, audio, limit_s)
        result["without_turn"] = {"utterances": without["utterances"], "ms": without["ms"]}
    return result


def _peer_policy(settings: Settings, audio: Samples, without: dict[str, Any]) -> dict[str, Any]:
    """What speaches, WhisperLive and RealtimeSTT (without early transcription) do:
    a fixed silence, then faster-whisper (int8, the same weights) on the utterance.

    Each utterance the service cut is transcribed by faster-whisper; its latency
    is the same hangover plus that STT time (no pipeline or transport counted,
    which flatters the peer).
    """
    from ..stages.preprocess import prepare_for_stt
    from .stt_ab import _faster_whisper_status, _FasterWhisper, ct2_model_dir

    stt = settings.stt.whispercpp
    status = _faster_whisper_status(stt.model_name)
    if status is not None:
        return {"status": "skipped", "reason": status}
    english = settings.stt.language == "en" or stt.model_name.endswith(".en")
    model = _FasterWhisper(
        ct2_model_dir(stt.model_name, stt.model_cache_dir),
        "int8",
        stt.n_threads,
        "en" if english else None,
    )
    model.transcribe(np.zeros(16000, dtype=np.float32))  # warm-up, as whisper.cpp's
    rate = settings.audio.sample_rate
    totals = []
    for row in without["per_utterance"]:
        clip = audio[round(row["audio_start_s"] * rate) : round(row["audio_end_s"] * rate)]
        prepared = prepare_for_stt(clip, rate, settings.preprocess)
        started = time.perf_counter()
        model.transcribe(prepared)
        totals.append(settings.vad.hangover_ms + (time.perf_counter() - started) * 1000)
    return {
        "status": "ok",
        "policy": f"{settings.vad.hangover_ms} ms of silence, then faster-whisper int8",
        "ms": summarize(totals, 2),
    }


def _analyse(receiver: ZmqReceiver, source: ArraySource, settings: Settings) -> dict[str, Any]:
    ends = {
        m["utterance_id"]: float(m["data"]["offset_s"])
        for _, topic, m in receiver.received
        if topic == "speech_end"
    }
    rows: list[dict[str, float]] = []
    for received, message in receiver.transcripts():
        offset = ends.get(message["utterance_id"])
        if offset is None:
            continue
        parts = message["latency_ms"]
        total = (received - (source.started_wall + offset)) * 1000
        transport = (received - message["emitted_at"]) * 1000
        row = {name: float(parts[name]) for name in _PARTS}
        row["transport"] = transport
        row["total"] = total
        # Waiting for a busy STT worker is STT capacity, not pipeline overhead:
        # it is reported on its own as "queue".
        # An early transcript ran during the endpoint's wait: only the wait for
        # it after the endpoint is STT time.
        if parts.get("early"):
            row["overhead"] = total - row["endpoint"] - float(parts["early_wait"])
        else:
            row["overhead"] = total - row["endpoint"] - row["stt"] - row["queue"]
        row["early"] = 1.0 if parts.get("early") else 0.0
        # Frame delivery and scheduling: what no stage accounts for.
        row["unattributed"] = (
            0.0 if row["early"] else total - sum(row[name] for name in (*_PARTS, "transport"))
        )
        row["audio_start_s"] = float(message["audio_start_s"])
        row["audio_end_s"] = float(message["audio_end_s"])
        row["audio_s"] = row["audio_end_s"] - row["audio_start_s"]
        rows.append(row)
    keys = ("total", "overhead", *_PARTS, "transport", "unattributed")
    partials = _partials(receiver, source)
    return {
        "model": settings.stt.whispercpp.model_name,
        "wake_word": False,
        "hangover_ms": settings.vad.hangover_ms,
        "audio_s": round(source.duration_s, 1),
        "utterances": len(rows),
        "transcripts_received": len(receiver.transcripts()),
        "ms": {key: summarize((row[key] for row in rows), 2) for key in keys},
        "per_utterance": [{k: round(v, 2) for k, v in row.items()} for row in rows],
        "early_used": int(sum(row["early"] for row in rows)),
        "partials": partials,
        "texts": [m["text"] for _, m in receiver.transcripts()],
        "definitions": {
            "total": "end of the last voiced frame -> transcript received by a ZeroMQ SUB",
            "overhead": "total - endpoint hangover - STT - queue (preprocess, language, "
            "emit, transport, frame delivery)",
            "queue": "waiting for a free STT worker (grows when STT is slower than speech)",
            "transport": "message emitted_at -> received by the SUB socket",
            "unattributed": "total minus every named part: frame delivery and scheduling",
            "first_heard_speech_ms": "speech start -> the end of the audio the first partial "
            "transcribed (first_after_speech_start_ms minus this: its decode and delivery)",
        },
    }
