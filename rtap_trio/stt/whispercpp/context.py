"""One whisper.cpp context, blocking: load it, transcribe on it, free it.

Two ways through whisper.cpp, one per configuration: ``whisper_full`` through
pywhispercpp, and, where ``whisper_full`` would encode the window twice (a
multilingual model asked to detect the language over the full window), the
one-pass decoder of :mod:`.direct`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from ...errors import ModelError
from ...items import Float32
from ...settings import SttSettings
from ..engine import EngineResult
from .devices import gpu_devices
from .direct import DirectWhisper, context_pointer, no_speech_after_sot
from .logs import route_whisper_logs
from .models import resolve_whisper_model
from .text import clean_transcript
from .window import audio_ctx_for

__all__ = ["WhisperContext", "is_english_only"]

#: A partial transcript's token cap: this many, plus this many per second of
#: audio (English speech runs at 3-4 tokens a second).
_PARTIAL_TOKENS = 8
_PARTIAL_TOKENS_PER_S = 6


def is_english_only(model_name: str, model_file: Path | None = None) -> bool:
    """Whisper's English-only models are named ``*.en`` (files ``ggml-*.en.bin``)."""
    return model_name.endswith(".en") or (
        model_file is not None and model_file.name.endswith(".en.bin")
    )


def _whisper_languages() -> tuple[str, ...]:
    """Every language code whisper.cpp knows (a multilingual model's)."""
    import _pywhispercpp

    return tuple(
        _pywhispercpp.whisper_lang_str(i) for i in range(_pywhispercpp.whisper_lang_max_id() + 1)
    )


class WhisperContext:
    """One whisper.cpp context. Construct in a worker thread: loading blocks.

    Not safe to share between threads at once; a lock makes concurrent calls
    wait rather than corrupt the context.
    """

    def __init__(self, settings: SttSettings) -> None:
        """``settings.whispercpp`` says which model and how; ``settings.language``
        the language when a caller asks for none."""
        from pywhispercpp.model import Model

        route_whisper_logs()
        whisper = settings.whispercpp
        spec = str(whisper.model_path) if whisper.model_path else whisper.model_name
        self.model_file: Path = resolve_whisper_model(
            spec, whisper.model_cache_dir, ftype=whisper.compute_dtype
        )
        self.name = whisper.model_name if whisper.model_path is None else self.model_file.name
        self.english_only = is_english_only(self.name, self.model_file)
        self.languages: tuple[str, ...] = ("en",) if self.english_only else _whisper_languages()
        #: The language when none is asked for: "" lets whisper.cpp detect it.
        self.default_language = (
            "en"
            if self.english_only
            else ("" if settings.language == "auto" else settings.language)
        )
        self._params: dict[str, Any] = {
            "n_threads": whisper.n_threads,
            "language": self.default_language,
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
        self._audio_ctx = whisper.audio_ctx
        self._audio_ctx_floor = whisper.audio_ctx_floor
        self._audio_ctx_margin = whisper.audio_ctx_margin
        self._partial_floor = whisper.partial_audio_ctx_floor
        #: The audio_ctx of the latest transcription (0: the full window).
        self.last_audio_ctx = 0
        self._lock = threading.Lock()
        #: where it runs: "cuda" only when asked for and the build has a GPU backend
        self.device = "cuda" if whisper.device == "cuda" and gpu_devices() else "cpu"
        use_gpu = self.device == "cuda"
        #: Language detection and decoding on one encoder pass (see .direct):
        #: only where whisper_full would encode twice, i.e. a multilingual model
        #: asked to detect the language over the full window.
        self._direct: DirectWhisper | None = None
        self._model: Any = None
        self._context: int | None = None
        if whisper.one_pass_language and self.default_language == "" and whisper.audio_ctx == 0:
            self._direct = DirectWhisper(
                self.model_file,
                n_threads=whisper.n_threads,
                flash_attn=whisper.flash_attn,
                use_gpu=use_gpu,
                max_compression_ratio=settings.max_compression_ratio,
            )
            return
        try:
            self._model = Model(
                str(self.model_file),
                redirect_whispercpp_logs_to=None,
                context_params={"use_gpu": use_gpu, "flash_attn": whisper.flash_attn},
                **self._params,
            )
        except Exception as exc:  # pywhispercpp raises RuntimeError or worse on a bad file
            raise ModelError(f"whisper.cpp cannot load {self.model_file}: {exc}") from exc
        self._context = context_pointer(self._model._ctx)
        if self._context is None:
            logger.bind(component="stt").warning(
                "this pywhispercpp build hides whisper.cpp's context: "
                "no no-speech probability on transcripts"
            )

    @property
    def one_pass(self) -> bool:
        """Language detection and decoding on one encoder pass (see .direct)."""
        return self._direct is not None

    def transcribe(
        self,
        audio: Float32,
        should_abort: Callable[[], bool] | None = None,
        language: str | None = None,
        *,
        partial: bool = False,
    ) -> EngineResult:
        """Blocking. ``should_abort`` is polled by whisper.cpp between steps.

        ``language`` fixes the language for this call (None: the settings');
        ``partial``: a partial transcript (:class:`~rtap_trio.stt.engine.EngineRequest`).
        """
        if self.english_only:
            language = None  # it knows one language; the caller has been told
        if partial:
            # A guess: a smaller window (auto-sized above its own floor) and a
            # token cap, which bounds what a looping decode costs (a short
            # window made tiny.en loop to the 224-token limit: 2-9 s of CPU
            # for one partial instead of ~0.3 s).
            audio_ctx = audio_ctx_for(
                audio.size, "auto", floor=self._partial_floor, margin=self._audio_ctx_margin
            )
            max_tokens = _PARTIAL_TOKENS + round(_PARTIAL_TOKENS_PER_S * audio.size / 16000)
        else:
            audio_ctx = audio_ctx_for(
                audio.size,
                self._audio_ctx,
                floor=self._audio_ctx_floor,
                margin=self._audio_ctx_margin,
            )
            max_tokens = 0
        with self._lock:
            started = time.thread_time()
            self.last_audio_ctx = audio_ctx
            if self._direct is not None:
                decoded = self._direct.transcribe(audio, should_abort, language)
                return EngineResult(
                    clean_transcript(decoded.text),
                    decoded.language,
                    decoded.language_probability,
                    decoded.no_speech_probability,
                    self._cpu_ms(started),
                )
            asked = self.default_language if language is None else language
            # pywhispercpp keeps per-call parameters on the model, so the full
            # set is passed every time rather than trusting what is left over:
            # a short window left by the last utterance would cut this one.
            segments = self._model.transcribe(
                np.ascontiguousarray(audio, dtype=np.float32),
                abort_callback=should_abort,
                **{
                    **self._params,
                    "audio_ctx": audio_ctx,
                    "language": asked,
                    "max_tokens": max_tokens,
                },
            )
            no_speech = None
            aborted = should_abort is not None and should_abort()
            if self._context is not None and not aborted:  # an aborted result is dropped
                no_speech = no_speech_after_sot(self._context, self._params["n_threads"])
            detected = asked
            if not asked:
                import _pywhispercpp

                detected = _pywhispercpp.whisper_lang_str(
                    _pywhispercpp.whisper_full_lang_id(self._model._ctx)
                )
            cpu_ms = self._cpu_ms(started)
        text = clean_transcript(" ".join(segment.text.strip() for segment in segments))
        return EngineResult(text, detected, None, no_speech, cpu_ms)

    def _cpu_ms(self, started: float) -> float:
        """The CPU a call took, from this thread's CPU time at its start: the
        calling thread is one of whisper.cpp's ``n_threads`` and they are
        busy alike from start to end (13.96 s of process CPU for 7.14 s of
        two-thread calls, measured), so its CPU time times the threads. Not
        wall time: on a busy machine that would count the waits for a core."""
        threads: int = self._params["n_threads"]
        return (time.thread_time() - started) * 1000 * threads

    def close(self) -> None:
        """Free the whisper context now, while Python can still take its log lines."""
        with self._lock:
            model, self._model, self._context = self._model, None, None
            del model
            if self._direct is not None:
                self._direct.close()

    def wait_idle(self) -> None:
        """Block until no transcription is running on this context."""
        with self._lock:
            pass

    def warm_up(self, should_abort: Callable[[], bool] | None = None) -> None:
        # The first call allocates whisper.cpp's compute buffers; pay that at
        # start, not on the first user's utterance.
        self.transcribe(np.zeros(16000, dtype=np.float32), should_abort)
