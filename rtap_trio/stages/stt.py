"""Speech to text with whisper.cpp (pywhispercpp), off the event loop.

whisper.cpp is blocking C++: each transcription runs in a worker thread under a
capacity limiter, one model instance per worker (a whisper context is not safe
to share between threads). A transcription that outlives its budget is aborted
through whisper.cpp's abort callback, so the worker is free again at once.
"""

from __future__ import annotations

import atexit
import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import trio
from loguru import logger

from ..errors import ModelError
from ..models.whisper import resolve_whisper_model
from ..session import SessionStateMachine, Transcription, Utterance
from ..settings import Settings, SttSettings
from ..telemetry import Metrics, now
from ..transport.outbox import Outbox
from ..transport.schemas import EventType
from .preprocess import Float32, prepare_for_stt
from .whisper_direct import DirectWhisper

__all__ = ["SttResult", "SttStage", "WhisperEngine", "WhisperPool", "audio_ctx_for"]

#: How long a cancelled transcription may take to notice its abort flag.
ABORT_WAIT_S = 0.5

# Whisper writes sounds it hears in brackets or parentheses ("[BLANK_AUDIO]",
# "(upbeat music)", "[ Silence ]"); none of that was said.
_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)")


def clean_transcript(text: str) -> str:
    """Whisper's text without sound annotations and with single spaces."""
    return re.sub(r"\s+", " ", _NON_SPEECH.sub(" ", text)).strip()


@functools.cache  # once per process: every engine shares whisper.cpp's one logger
def _route_whisper_logs() -> None:
    """Send whisper.cpp's own log lines to loguru (DEBUG) instead of raw stderr.

    Without this, every transcription prints to stderr around the JSON logs.
    """
    import _pywhispercpp

    whisper_log = logger.bind(component="whisper.cpp")

    def forward(level: int, text: str) -> None:
        text = text.strip()
        if text:
            whisper_log.debug(text)

    _pywhispercpp.whisper_log_set(forward)
    # A model freed during interpreter shutdown would call back into Python
    # while it is finalising, which aborts the process: hand logging back to
    # whisper.cpp's default before that, whatever path the exit takes.
    atexit.register(_pywhispercpp.whisper_log_set, None)


#: whisper.cpp's encoder sees 20 ms frames (hop 160, stride-2 convolution)
#: and at most 30 s of them.
SAMPLES_PER_AUDIO_FRAME = 320
FULL_AUDIO_CTX = 1500


def audio_ctx_for(samples: int, setting: Literal["auto"] | int, *, floor: int, margin: int) -> int:
    """The ``audio_ctx`` to give whisper.cpp for ``samples`` of 16 kHz audio.

    0 means whisper.cpp's own full 30 s window. "auto" sizes the window to the
    utterance plus ``margin`` frames, never under ``floor``: Whisper was only
    trained on 30 s windows, and a window that ends right at the speech makes
    it drop or invent words.
    """
    if setting != "auto":
        return setting
    frames = -(-samples // SAMPLES_PER_AUDIO_FRAME)
    ctx = max(floor, frames + margin)
    return 0 if ctx >= FULL_AUDIO_CTX else ctx


@dataclass(frozen=True, slots=True)
class SttResult:
    text: str
    #: The language whisper detected, when it was asked to ("" otherwise).
    language: str = ""


class WhisperEngine:
    """One whisper.cpp context. Construct in a worker thread: loading blocks."""

    def __init__(self, settings: SttSettings) -> None:
        from pywhispercpp.model import Model

        _route_whisper_logs()
        spec = str(settings.model_path) if settings.model_path else settings.model_name
        self.model_file: Path = resolve_whisper_model(
            spec, settings.model_cache_dir, ftype=settings.compute_dtype
        )
        self.name = settings.model_name if settings.model_path is None else self.model_file.name
        english_only = self.model_file.name.endswith(".en.bin") or self.name.endswith(".en")
        # whisper.cpp detects the language when given "" ("auto" works but logs an error).
        language = (
            "en" if english_only else ("" if settings.language == "auto" else settings.language)
        )
        self._params: dict[str, Any] = {
            "n_threads": settings.n_threads,
            "language": language,
            "print_progress": False,
            "print_realtime": False,
            "print_timestamps": False,
            "no_context": True,
            # Utterances are short: one segment and no timestamp tokens
            # decode faster and nothing downstream uses segment times.
            "single_segment": True,
            "no_timestamps": True,
            "suppress_blank": True,
            "audio_ctx": 0,
        }
        self._audio_ctx = settings.audio_ctx
        self._audio_ctx_floor = settings.audio_ctx_floor
        self._audio_ctx_margin = settings.audio_ctx_margin
        #: The audio_ctx of the latest transcription (0: the full window).
        self.last_audio_ctx = 0
        self._lock = threading.Lock()
        #: Language detection and decoding on one encoder pass (see whisper_direct):
        #: only where whisper_full would encode twice, i.e. a multilingual model
        #: asked to detect the language over the full window.
        self._direct: DirectWhisper | None = None
        # language "" means auto, which an English-only model never gets.
        if settings.one_pass_language and language == "" and settings.audio_ctx == 0:
            self._direct = DirectWhisper(
                self.model_file,
                n_threads=settings.n_threads,
                flash_attn=settings.flash_attn,
                use_gpu=settings.device == "cuda",
            )
            return
        try:
            self._model = Model(
                str(self.model_file),
                redirect_whispercpp_logs_to=None,
                context_params={
                    "use_gpu": settings.device == "cuda",
                    "flash_attn": settings.flash_attn,
                },
                **self._params,
            )
        except Exception as exc:  # pywhispercpp raises RuntimeError or worse on a bad file
            raise ModelError(f"whisper.cpp cannot load {self.model_file}: {exc}") from exc

    @property
    def one_pass(self) -> bool:
        """Language detection and decoding on one encoder pass (see whisper_direct)."""
        return self._direct is not None

    def transcribe(
        self, audio: Float32, should_abort: Callable[[], bool] | None = None
    ) -> SttResult:
        """Blocking. ``should_abort`` is polled by whisper.cpp between steps."""
        audio_ctx = audio_ctx_for(
            audio.size,
            self._audio_ctx,
            floor=self._audio_ctx_floor,
            margin=self._audio_ctx_margin,
        )
        with self._lock:
            self.last_audio_ctx = audio_ctx
            if self._direct is not None:
                text, language = self._direct.transcribe(audio, should_abort)
                return SttResult(text=clean_transcript(text), language=language)
            # pywhispercpp keeps per-call parameters on the model, so the full
            # set is passed every time rather than trusting what is left over:
            # a short window left by the last utterance would cut this one.
            segments = self._model.transcribe(
                np.ascontiguousarray(audio, dtype=np.float32),
                abort_callback=should_abort,
                **{**self._params, "audio_ctx": audio_ctx},
            )
        text = " ".join(segment.text.strip() for segment in segments)
        text = clean_transcript(text)
        return SttResult(text=text)

    def close(self) -> None:
        """Free the whisper context now, while Python can still take its log lines."""
        with self._lock:
            model = self.__dict__.pop("_model", None)
            del model
            if self._direct is not None:
                self._direct.close()

    def wait_idle(self) -> None:
        """Block until no transcription is running on this engine."""
        with self._lock:
            pass

    def warm_up(self) -> None:
        # The first call allocates whisper.cpp's compute buffers; pay that at
        # start, not on the first user's utterance.
        self.transcribe(np.zeros(16000, dtype=np.float32))


class WhisperPool:
    """``workers`` engines behind a capacity limiter; ``await transcribe(...)``."""

    def __init__(self, engines: list[WhisperEngine]) -> None:
        if not engines:
            raise ValueError("a pool needs at least one engine")
        self._free = list(engines)
        self._limiter = trio.CapacityLimiter(len(engines))
        self.name = engines[0].name
        self.model_file = engines[0].model_file

    @classmethod
    async def load(cls, settings: SttSettings) -> WhisperPool:
        """Load (and on first use convert) the model, one engine per worker, warmed up."""

        def load_one() -> WhisperEngine:
            engine = WhisperEngine(settings)
            if settings.warmup:
                engine.warm_up()
            return engine

        first = await trio.to_thread.run_sync(load_one)
        engines = [first]
        for _ in range(settings.workers - 1):
            engines.append(await trio.to_thread.run_sync(load_one))
        logger.bind(component="stt").info(
            "whisper model {} loaded from {} ({} worker(s))",
            first.name,
            first.model_file,
            len(engines),
        )
        return cls(engines)

    async def aclose(self) -> None:
        """Free every model now rather than at interpreter exit."""
        engines, self._free = self._free, []
        with trio.CancelScope(shield=True):
            for engine in engines:
                await trio.to_thread.run_sync(engine.close)

    async def transcribe(self, audio: Float32) -> SttResult:
        """Transcribe in a worker thread; cancelling aborts whisper.cpp promptly."""
        abort = threading.Event()
        async with self._limiter:
            engine = self._free.pop()
            try:
                return await trio.to_thread.run_sync(
                    engine.transcribe, audio, abort.is_set, abandon_on_cancel=True
                )
            except trio.Cancelled:
                # The thread was abandoned but whisper.cpp is still running: ask
                # it to stop, and wait (shielded, bounded) until it has, so no
                # thread is left inside whisper.cpp when the service exits.
                abort.set()
                with trio.CancelScope(shield=True), trio.move_on_after(ABORT_WAIT_S):
                    await trio.to_thread.run_sync(engine.wait_idle)
                raise
            finally:
                self._free.append(engine)


class SttStage:
    """Utterances in, transcriptions out; a blown budget becomes an ``stt_timeout`` event."""

    def __init__(
        self,
        settings: Settings,
        *,
        pool: WhisperPool,
        session: SessionStateMachine,
        outbox: Outbox,
        metrics: Metrics,
        utterances: trio.MemoryReceiveChannel[Utterance],
        transcriptions: trio.MemorySendChannel[Transcription],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._session = session
        self._outbox = outbox
        self._metrics = metrics
        self._utterances = utterances
        self._transcriptions = transcriptions
        self._budget_s = settings.stt.budget_ms / 1000
        self._stt_time = metrics.stage_time.labels("stt")
        self._preprocess_time = metrics.stage_time.labels("preprocess")

    async def run(self) -> None:
        async for utterance in self._utterances:
            await self._handle(utterance)
        await self._transcriptions.aclose()

    async def _handle(self, utterance: Utterance) -> None:
        done = False
        try:
            queued_ms = (now() - utterance.endpointed_at) * 1000
            started = now()
            audio = await trio.to_thread.run_sync(
                prepare_for_stt,
                utterance.samples,
                self._settings.audio.sample_rate,
                self._settings.preprocess,
            )
            prepared = now()
            self._preprocess_time.observe(prepared - started)
            with trio.move_on_after(self._budget_s) as scope:
                result = await self._pool.transcribe(audio)
            finished = now()
            self._stt_time.observe(finished - prepared)
            if scope.cancelled_caught:
                self._timed_out(utterance, (finished - prepared) * 1000)
                done = True
                return
            if not result.text:
                self._metrics.utterances.labels("no_text").inc()
                self._outbox.event(
                    EventType.UTTERANCE_DISCARDED,
                    utterance.session_id,
                    utterance.id,
                    reason="no_text",
                )
                done = True
                self._session.utterance_done("no_text")
                return
            await self._transcriptions.send(
                Transcription(
                    utterance=utterance,
                    text=result.text,
                    queue_ms=queued_ms,
                    preprocess_ms=(prepared - started) * 1000,
                    stt_ms=(finished - prepared) * 1000,
                )
            )
            done = True
        finally:
            if not done:  # crashed or cancelled mid-way: the utterance is gone
                self._session.utterance_done("stt_failed")

    def _timed_out(self, utterance: Utterance, elapsed_ms: float) -> None:
        self._metrics.budget_exceeded.labels("stt").inc()
        self._metrics.errors.labels("stt", "timeout").inc()
        self._metrics.utterances.labels("stt_timeout").inc()
        self._outbox.event(
            EventType.STT_TIMEOUT,
            utterance.session_id,
            utterance.id,
            budget_ms=self._settings.stt.budget_ms,
            elapsed_ms=round(elapsed_ms, 1),
            audio_s=round(utterance.samples.size / self._settings.audio.sample_rate, 3),
        )
        logger.bind(component="stt", stage="stt", utterance_id=utterance.id).warning(
            "transcription over budget ({} ms): aborted", self._settings.stt.budget_ms
        )
        self._session.utterance_done("stt_timeout")
