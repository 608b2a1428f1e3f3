"""One whisper.cpp context, blocking: load it, transcribe on it, free it.

Two ways through whisper.cpp, one per configuration: ``whisper_full`` through
pywhispercpp, and, where ``whisper_full`` would encode the window twice (a
multilingual model asked to detect the language), the one-pass decoder of
:mod:`.direct`.
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
from ..engine import EngineResult, Task
from .devices import gpu_devices
from .direct import DirectWhisper, context_pointer, count_tokens, no_speech_after_sot, tokenize
from .logs import route_whisper_logs
from .models import resolve_whisper_model
from .text import clean_transcript
from .window import audio_ctx_for, final_token_cap, first_try_failed, partial_token_cap
from .words import TimedToken, join_words

__all__ = ["MAX_PROMPT_TOKENS", "WhisperContext", "is_english_only"]

#: The most prompt tokens whisper.cpp uses: it keeps the last n_text_ctx / 2
#: (448 / 2 for every Whisper model) before <|startoftranscript|>. A longer
#: prompt is refused rather than silently cut.
MAX_PROMPT_TOKENS = 224

#: A partial of at most this much audio is an utterance's first (the 300 ms
#: pre-roll and about a second of speech): it gets the first partials' floor.
_FIRST_PARTIAL_SAMPLES = 16000 * 8 // 5
#: whisper.cpp's temperature fallback: finals keep its default (0.2 a step);
#: a partial, a guess the next one replaces, is decoded once (at 0.0).
_TEMPERATURE_INC = 0.2


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
            "token_timestamps": False,
            "translate": False,
        }
        self._audio_ctx = whisper.audio_ctx
        self._audio_ctx_floor = whisper.audio_ctx_floor
        self._audio_ctx_margin = whisper.audio_ctx_margin
        self._partial_floor = whisper.partial_audio_ctx_floor
        self._first_partial_floor = whisper.first_partial_audio_ctx_floor
        self._partial_threads = min(whisper.partial_threads, whisper.n_threads)
        self._first_floor = whisper.audio_ctx_first_floor
        self._max_compression_ratio = settings.max_compression_ratio
        #: The audio_ctx of the latest transcription (0: the full window).
        self.last_audio_ctx = 0
        self._lock = threading.Lock()
        #: where it runs: "cuda" only when asked for and the build has a GPU backend
        self.device = "cuda" if whisper.device == "cuda" and gpu_devices() else "cpu"
        use_gpu = self.device == "cuda"
        #: Language detection and decoding on one encoder pass (see .direct):
        #: only where whisper_full would encode twice, i.e. a multilingual model
        #: asked to detect the language (in the full window or one sized to the
        #: utterance: .encoder_window), and on the CPU: on an H200 it crashed
        #: (SIGSEGV at the warm-up, cause not found in the time lent), while
        #: whisper_full detected and transcribed a command in 38-44 ms there,
        #: its second encoder pass included (docs/cuda.md).
        self._direct: DirectWhisper | None = None
        self._model: Any = None
        self._words_model: Any = None
        self._context: int | None = None
        self._words_context: int | None = None
        self._context_params: Any = {"use_gpu": use_gpu, "flash_attn": whisper.flash_attn}
        if whisper.one_pass_language and self.default_language == "" and not use_gpu:
            self._direct = DirectWhisper(
                self.model_file,
                n_threads=whisper.n_threads,
                flash_attn=whisper.flash_attn,
                use_gpu=use_gpu,
                max_compression_ratio=settings.max_compression_ratio,
            )
            return
        self._load_full_model()
        if self._context is None:
            logger.bind(component="stt").warning(
                "this pywhispercpp build hides whisper.cpp's context: "
                "no no-speech probability on transcripts"
            )

    def _load_full_model(self) -> Any:
        """The pywhispercpp model (whisper_full), loaded now if it is not yet."""
        if self._model is None:
            self._model = self._load(self._context_params)
            self._context = context_pointer(self._model._ctx)
        return self._model

    def _load_words_model(self) -> Any:
        """A second context, for requests that want word times: DTW token times
        (see .words), which whisper.cpp computes only without flash attention.

        Loaded on the first such request, so a service that never times words
        pays neither its memory (process RSS +148 MB with tiny.en, +259 MB with
        base, measured after the first such request) nor slower finals.
        """
        if self._words_model is None:
            self._words_model = self._load(
                {
                    **self._context_params,
                    "flash_attn": False,
                    "dtw_token_timestamps": True,
                    "dtw_aheads_preset": alignment_heads(self.name),
                }
            )
            self._words_context = context_pointer(self._words_model._ctx)
        return self._words_model

    def _load(self, context_params: Any) -> Any:
        from pywhispercpp.model import Model

        try:
            return Model(
                str(self.model_file),
                redirect_whispercpp_logs_to=None,
                context_params=context_params,
                **self._params,
            )
        except Exception as exc:  # pywhispercpp raises RuntimeError or worse on a bad file
            raise ModelError(f"whisper.cpp cannot load {self.model_file}: {exc}") from exc

    def prompt_tokens(self, prompt: str) -> int:
        """How many tokens ``prompt`` is to this model (its UTF-8 bytes, an
        upper bound, where this build hides whisper.cpp's context)."""
        pointer = self._direct.context if self._direct is not None else self._context
        return len(prompt.encode()) if pointer is None else count_tokens(pointer, prompt)

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
        prompt: str = "",
        words: bool = False,
        task: Task = "transcribe",
    ) -> EngineResult:
        """Blocking. ``should_abort`` is polled by whisper.cpp between steps.

        ``language`` fixes the language for this call (None: the settings');
        ``partial``: a partial transcript, ``prompt``, ``words`` and ``task`` as
        :class:`~rtap_trio.stt.engine.EngineRequest` says.
        """
        translate = task == "translate" and not self.english_only
        if self.english_only:
            language = None  # it knows one language; the caller has been told
        if partial:
            # A guess: a smaller window (auto-sized above its own floor) and a
            # token cap, which bounds what a looping decode costs (a short
            # window made tiny.en loop to the 224-token limit: 2-9 s of CPU
            # for one partial instead of ~0.3 s). An utterance's first
            # partials, on its first second of speech, get a smaller window
            # still: words sooner and at a third of the CPU (issue 18).
            first = audio.size <= _FIRST_PARTIAL_SAMPLES
            floor = self._first_partial_floor if first else self._partial_floor
            audio_ctx = audio_ctx_for(
                audio.size, "auto", floor=floor, margin=self._audio_ctx_margin
            )
            max_tokens = partial_token_cap(audio.size)
            threads = self._partial_threads
            temperature_inc = 0.0
        else:
            audio_ctx = audio_ctx_for(
                audio.size,
                self._audio_ctx,
                floor=self._audio_ctx_floor,
                margin=self._audio_ctx_margin,
            )
            max_tokens = final_token_cap(audio.size)
            threads = self._params["n_threads"]
            temperature_inc = _TEMPERATURE_INC
        # Not for a prompt: its names need the full-size window (tiny.en wrote
        # "Quillirook" for the prompted "Quelbrook" at 512 frames, right at 768).
        first_try = (
            self._first_try(audio.size, audio_ctx) if not (partial or words or prompt) else None
        )
        with self._lock:
            started = time.thread_time()
            self.last_audio_ctx = audio_ctx
            if self._direct is not None and not words:
                decoded = self._direct.transcribe(
                    audio,
                    should_abort,
                    language,
                    prompt=prompt,
                    translate=translate,
                    audio_ctx=audio_ctx,
                )
                # the full window where the smaller one looped or was unsure
                self.last_audio_ctx = self._direct.audio_ctx
                return EngineResult(
                    clean_transcript(decoded.text),
                    decoded.language,
                    decoded.language_probability,
                    decoded.no_speech_probability,
                    self._cpu_ms(started, self._params["n_threads"]),
                )
            asked = self.default_language if language is None else language
            # pywhispercpp keeps per-call parameters on the model, so the full
            # set is passed every time rather than trusting what is left over:
            # a short window left by the last utterance would cut this one.
            model = self._load_words_model() if words else self._load_full_model()
            samples = np.ascontiguousarray(audio, dtype=np.float32)
            call = {
                **self._params,
                "audio_ctx": audio_ctx,
                "language": asked,
                "max_tokens": max_tokens,
                "n_threads": threads,
                "temperature_inc": temperature_inc,
                "translate": translate,
                # whisper.cpp computes DTW times only with token timestamps
                "token_timestamps": words,
            }
            pointer = self._words_context if words else self._context
            if pointer is not None:
                # The prompt as tokens, and None (a null pointer) for none. An
                # initial_prompt of "" (how no prompt was asked for) made every
                # whisper_full crash (SIGSEGV) in pywhispercpp 1.5.1 built with
                # CUDA on an H200 (docs/cuda.md), and pywhispercpp can set it to
                # "" but never back to null. whisper_full would tokenize an
                # initial_prompt with this very tokenizer: the same decoder input.
                call["prompt_tokens"] = tokenize(pointer, prompt) if prompt else None
            else:
                call["initial_prompt"] = prompt
            segments = None
            decoded_again = False
            if first_try is not None:
                # The smaller window first, decoded once at a tight token cap,
                # and kept unless it looped; then as before. tiny.en, 512 frames
                # against 768: 29 % less CPU a final, held-out commands' WER
                # 14.1 % against 13.8 %, 3 loops in 280 cuts of the fixtures
                # (docs/performance.md, "A smaller window first").
                try_ctx, try_tokens = first_try
                segments = model.transcribe(
                    samples,
                    abort_callback=should_abort,
                    **{
                        **call,
                        "audio_ctx": try_ctx,
                        "max_tokens": try_tokens,
                        "temperature_inc": 0.0,
                    },
                )
                text = clean_transcript(" ".join(segment.text.strip() for segment in segments))
                tokens = self._decoded_tokens(model._ctx)
                aborted = should_abort is not None and should_abort()
                if not aborted and first_try_failed(
                    text, tokens, try_tokens, self._max_compression_ratio
                ):
                    segments, decoded_again = None, True
                    logger.bind(component="stt").debug(
                        "first try at {} frames looped ({} tokens: {!r}); again at {}",
                        try_ctx,
                        tokens,
                        text[:80],
                        audio_ctx,
                    )
                else:
                    self.last_audio_ctx = try_ctx
            if segments is None:
                segments = model.transcribe(samples, abort_callback=should_abort, **call)
            no_speech = None
            aborted = should_abort is not None and should_abort()
            if pointer is not None and not aborted:  # an aborted result is dropped
                no_speech = no_speech_after_sot(pointer, threads)
            detected = asked
            if not asked:
                import _pywhispercpp

                detected = _pywhispercpp.whisper_lang_str(
                    _pywhispercpp.whisper_full_lang_id(model._ctx)
                )
            cpu_ms = self._cpu_ms(started, threads)
            timed = join_words(_timed_tokens(model._ctx), audio) if words and not aborted else ()
        text = clean_transcript(" ".join(segment.text.strip() for segment in segments))
        return EngineResult(
            text, detected, None, no_speech, cpu_ms, timed, decoded_again=decoded_again
        )

    def _first_try(self, samples: int, audio_ctx: int) -> tuple[int, int] | None:
        """The smaller window and token cap a final is decoded in first (see
        ``audio_ctx_first_floor``), or None where it would not be smaller."""
        if self._audio_ctx != "auto" or not self._first_floor:
            return None
        try_ctx = audio_ctx_for(
            samples, "auto", floor=self._first_floor, margin=self._audio_ctx_margin
        )
        return (try_ctx, partial_token_cap(samples)) if try_ctx < audio_ctx else None

    @staticmethod
    def _decoded_tokens(context: Any) -> int:
        """How many text tokens whisper_full last decoded on ``context``."""
        import _pywhispercpp as pw

        end = pw.whisper_token_eot(context)
        return sum(
            1
            for segment in range(pw.whisper_full_n_segments(context))
            for index in range(pw.whisper_full_n_tokens(context, segment))
            if pw.whisper_full_get_token_id(context, segment, index) < end
        )

    @staticmethod
    def _cpu_ms(started: float, threads: int) -> float:
        """The CPU a call took, from this thread's CPU time at its start: the
        calling thread is one of the call's ``threads`` and they are
        busy alike from start to end (13.96 s of process CPU for 7.14 s of
        two-thread calls, measured), so its CPU time times the threads. Not
        wall time: on a busy machine that would count the waits for a core."""
        return (time.thread_time() - started) * 1000 * threads

    def close(self) -> None:
        """Free the whisper context now, while Python can still take its log lines."""
        with self._lock:
            model, self._model, self._context = self._model, None, None
            words_model, self._words_model, self._words_context = self._words_model, None, None
            del model, words_model
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


def _timed_tokens(context: Any) -> list[TimedToken]:
    """The text tokens whisper_full last decoded on ``context``, with their times."""
    import _pywhispercpp as pw

    first_special = pw.whisper_token_eot(context)
    tokens = []
    for segment in range(pw.whisper_full_n_segments(context)):
        for index in range(pw.whisper_full_n_tokens(context, segment)):
            data = pw.whisper_full_get_token_data(context, segment, index)
            if data.id >= first_special:  # end of text, timestamps, other specials
                continue
            piece = pw.whisper_token_to_bytes(context, data.id)
            tokens.append(TimedToken(piece, data.t_dtw / 100))
    return tokens


def alignment_heads(model_name: str) -> Any:
    """whisper.cpp's preset of alignment heads (the cross-attention heads that
    follow the audio) for a model, by its name ("base", "tiny.en", a file
    "ggml-base.en-q8_0.bin"); a model it has none for uses the top heads of
    its last layers (``WHISPER_AHEADS_N_TOP_MOST``)."""
    import _pywhispercpp as pw

    stem = model_name.removeprefix("ggml-").split("-q")[0].removesuffix(".bin")
    preset = "WHISPER_AHEADS_" + stem.upper().replace(".", "_").replace("-", "_")
    return getattr(pw, preset, pw.WHISPER_AHEADS_N_TOP_MOST)  # the binding's enum
