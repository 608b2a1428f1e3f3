"""Language detection and greedy decoding on one encoder pass, through libwhisper itself.

With ``language: auto``, whisper.cpp 1.8.5's ``whisper_full`` encodes the
window once to detect the language and then again to transcribe: for base on
a CPU that second pass is most of the time an utterance takes, and the reason
whisper.cpp trailed faster-whisper, which detects on the encoder output it
then decodes from. This module does the same with whisper.cpp: one
``whisper_encode``, one decoder step on ``<|startoftranscript|>`` whose
language-token logits pick the language, then greedy decoding.

pywhispercpp 1.5.1 binds ``whisper_get_logits`` as a single float, so its
low-level API cannot decode; the few calls needed are bound here with ctypes,
from the very libwhisper that pywhispercpp loaded into this process.

The decoding mirrors ``whisper_full``'s first pass as the service configures it
(temperature 0, ``no_timestamps``, ``single_segment``, ``suppress_blank``):
the prompt ``[SOT, language, transcribe, no-timestamps]`` (``translate`` for a
translation; after ``[<|startofprev|>, prompt tokens...]`` when the session
has a vocabulary prompt, as ``whisper_full`` builds it), the same suppressed
tokens, the arg-max token, and its no-speech rule (no-speech probability
> 0.6 and mean log-probability < -1: no text). What it leaves out is the
temperature fallback; a runaway decode is bounded instead by a token budget
that grows with the audio, and one whose text already repeats itself past
``stt.max_compression_ratio`` stops there (see :mod:`..hallucination`).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import ModelError
from ...items import Float32
from ..hallucination import compression_ratio
from .encoder_window import EncoderWindow, bind_whisper_full
from .text import clean_transcript
from .window import final_token_cap

__all__ = [
    "DecodedUtterance",
    "DirectWhisper",
    "context_pointer",
    "count_tokens",
    "libwhisper",
    "loaded_libwhisper",
    "no_speech_after_sot",
    "tokenize",
]

_NO_SPEECH_THRESHOLD = 0.6  # whisper_full_default_params: no_speech_thold
_LOGPROB_THRESHOLD = -1.0  # whisper_full_default_params: logprob_thold
# A language detected in a window smaller than 30 s below this probability is
# detected (and decoded) again in the full one. base q8_0 at 768 frames: real
# speech 0.97-1.0 (the corpus); generated de/es/fr/it speech it took for another
# language 0.14-0.91, and with this rule the language was right on 58 of 84
# clips against 60 in the full window and 54 without it (docs/performance.md).
_SURE_LANGUAGE = 0.5
# A looping decode (what base writes for music: "I'm a man, I'm a man, ...")
# runs to the budget, 196 tokens for 15 s, for text that is then discarded:
# 46 s for 15 s of generated chords on two busy cores. Its text passes a
# compression ratio of 2.4 after 3-5 repetitions (about 32 tokens; then 5 s),
# so the ratio is checked every few tokens and the decode stops once it is
# over stt.max_compression_ratio. Speech never gets near it (0.50-1.36 on the
# fixtures and the corpus).
_LOOP_CHECK_FROM = 24
_LOOP_CHECK_EVERY = 8


class _Aheads(ctypes.Structure):
    _fields_ = [("n_heads", ctypes.c_size_t), ("heads", ctypes.c_void_p)]


class _ContextParams(ctypes.Structure):
    # whisper.h 1.8.5, struct whisper_context_params.
    _fields_ = [
        ("use_gpu", ctypes.c_bool),
        ("flash_attn", ctypes.c_bool),
        ("gpu_device", ctypes.c_int),
        ("dtw_token_timestamps", ctypes.c_bool),
        ("dtw_aheads_preset", ctypes.c_int),
        ("dtw_n_top", ctypes.c_int),
        ("dtw_aheads", _Aheads),
        ("dtw_mem_size", ctypes.c_size_t),
    ]


def loaded_libwhisper() -> Path:
    """The libwhisper shared library pywhispercpp's extension loaded into this process.

    The wheel ships it renamed (``pywhispercpp.libs/libwhisper-<hash>.so``), a
    native build next to the extension: the process's own mappings say which.
    """
    import _pywhispercpp  # noqa: F401  # loads libwhisper

    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            path = line.rstrip("\n").split(" ", 5)[-1].strip()
            if "/libwhisper" in path and ".so" in path:
                return Path(path)
    raise ModelError("pywhispercpp is imported but no libwhisper is mapped in this process")


@functools.cache  # once per process: every engine shares the one loaded library
def libwhisper() -> ctypes.CDLL:
    library = ctypes.CDLL(str(loaded_libwhisper()))
    ctx = ctypes.c_void_p
    c_int = ctypes.c_int
    library.whisper_context_default_params_by_ref.restype = ctypes.POINTER(_ContextParams)
    library.whisper_context_default_params_by_ref.argtypes = []
    library.whisper_free_context_params.argtypes = [ctypes.POINTER(_ContextParams)]
    library.whisper_init_from_file_with_params.restype = ctx
    library.whisper_init_from_file_with_params.argtypes = [ctypes.c_char_p, _ContextParams]
    library.whisper_free.argtypes = [ctx]
    library.whisper_pcm_to_mel.argtypes = [ctx, ctypes.POINTER(ctypes.c_float), c_int, c_int]
    library.whisper_encode.argtypes = [ctx, c_int, c_int]
    library.whisper_decode.argtypes = [ctx, ctypes.POINTER(ctypes.c_int32), c_int, c_int, c_int]
    library.whisper_get_logits.restype = ctypes.POINTER(ctypes.c_float)
    library.whisper_get_logits.argtypes = [ctx]
    for name in (
        "whisper_n_vocab",
        "whisper_n_text_ctx",
        "whisper_is_multilingual",
        "whisper_token_sot",
        "whisper_token_eot",
        "whisper_token_not",
        "whisper_token_beg",
        "whisper_token_solm",
        "whisper_token_prev",
        "whisper_token_nosp",
        "whisper_token_translate",
        "whisper_token_transcribe",
    ):
        getattr(library, name).argtypes = [ctx]
        getattr(library, name).restype = c_int
    library.whisper_token_lang.argtypes = [ctx, c_int]
    library.whisper_token_lang.restype = c_int
    library.whisper_lang_max_id.argtypes = []
    library.whisper_lang_max_id.restype = c_int
    library.whisper_lang_str.argtypes = [c_int]
    library.whisper_lang_str.restype = ctypes.c_char_p
    library.whisper_lang_str_full.argtypes = [c_int]
    library.whisper_lang_str_full.restype = ctypes.c_char_p
    library.whisper_token_to_str.argtypes = [ctx, c_int]
    library.whisper_token_to_str.restype = ctypes.c_char_p
    tokens = ctypes.POINTER(ctypes.c_int32)
    library.whisper_tokenize.argtypes = [ctx, ctypes.c_char_p, tokens, c_int]
    library.whisper_tokenize.restype = c_int
    library.whisper_lang_id.argtypes = [ctypes.c_char_p]
    library.whisper_lang_id.restype = c_int
    library.whisper_full_get_segment_no_speech_prob.argtypes = [ctx, c_int]
    library.whisper_full_get_segment_no_speech_prob.restype = ctypes.c_float
    bind_whisper_full(library)
    return library


@functools.cache
def _language_names() -> dict[str, str]:
    lib = libwhisper()
    return {
        lib.whisper_lang_str(i).decode(): lib.whisper_lang_str_full(i).decode()
        for i in range(lib.whisper_lang_max_id() + 1)
    }


def whisper_language_name(code: str) -> str:
    """whisper.cpp's English name of a language code ("english"), or the code itself."""
    return _language_names().get(code, code)


def context_pointer(context: Any) -> int | None:
    """The ``whisper_context *`` inside a pywhispercpp context object, or None.

    pywhispercpp 1.5.1 binds no getter for the no-speech probability that
    whisper_full computes, so it is read through libwhisper with the raw
    pointer. The pointer sits in the pybind11 instance (after the object
    header, a pointer to the wrapper whose first field it is); the layout is
    checked against what the binding itself answers, and None is returned
    when it does not match, so a different build costs the figure, not a crash.
    """
    import _pywhispercpp

    try:
        holder = ctypes.c_void_p.from_address(id(context) + 2 * ctypes.sizeof(ctypes.c_void_p))
        if not holder.value:
            return None
        pointer = ctypes.c_void_p.from_address(holder.value).value
        if not pointer:
            return None
        lib = libwhisper()
        same = all(
            getattr(lib, name)(pointer) == getattr(_pywhispercpp, name)(context)
            for name in ("whisper_n_vocab", "whisper_n_text_ctx", "whisper_is_multilingual")
        )
    except (AttributeError, OSError, ValueError):
        return None
    return int(pointer) if same else None


def count_tokens(context: int, text: str) -> int:
    """How many tokens whisper.cpp's tokenizer makes of ``text``."""
    return len(_tokenize(context, text))


def tokenize(context: int, text: str) -> tuple[int, ...]:
    """The tokens whisper.cpp's tokenizer makes of ``text`` (none for "")."""
    return tuple(_tokenize(context, text))


def _tokenize(context: int, text: str) -> list[int]:
    raw = text.encode()
    if not raw:
        return []
    # A byte-level BPE never makes more tokens than bytes.
    tokens = (ctypes.c_int32 * len(raw))()
    n = libwhisper().whisper_tokenize(context, raw, tokens, len(raw))
    if n < 0:
        raise ModelError(f"whisper.cpp cannot tokenize {text[:40]!r}")
    return list(tokens[:n])


def no_speech_after_sot(context: int, n_threads: int) -> float:
    """Whisper's no-speech probability for the audio ``whisper_full`` last encoded
    on ``context``: the ``<|nospeech|>`` token's after ``<|startoftranscript|>``.

    whisper.cpp 1.8.5 reads it after the whole prompt instead, which with
    ``no_timestamps`` ends in ``<|notimestamps|>``: there it is ~0 whatever
    the audio (tiny.en: 0.0000-0.0003 on silence, noise, music and speech
    alike), so ``stt.no_speech_threshold`` never fired on that path. Read where
    openai-whisper and :class:`DirectWhisper` read it, it costs one decoder step
    on the encoder output ``whisper_full`` left. The next ``whisper_full``
    clears the decoder cache; its junk on music ("the" or nothing) was seen to
    depend on what the context decoded before, with this step or without it.
    """
    lib = libwhisper()
    token = (ctypes.c_int32 * 1)(lib.whisper_token_sot(context))
    if lib.whisper_decode(context, token, 1, 0, n_threads) != 0:
        raise RuntimeError("whisper.cpp failed to decode")
    n_vocab = lib.whisper_n_vocab(context)
    logits = np.ctypeslib.as_array(lib.whisper_get_logits(context), shape=(n_vocab,))
    return float(_softmax(np.array(logits, dtype=np.float32))[lib.whisper_token_nosp(context)])


@dataclass(frozen=True, slots=True)
class DecodedUtterance:
    text: str
    language: str
    #: None when the language was given, not detected
    language_probability: float | None
    no_speech_probability: float


class DirectWhisper:
    """One whisper.cpp context decoded from Python; not thread-safe (the engine locks)."""

    def __init__(
        self,
        model_file: Path,
        *,
        n_threads: int,
        flash_attn: bool,
        use_gpu: bool,
        max_compression_ratio: float = 0.0,
    ) -> None:
        """``max_compression_ratio``: stop a decode whose text is over it (0: never)."""
        self._max_ratio = max_compression_ratio
        self._lib = libwhisper()
        lib = self._lib
        defaults = lib.whisper_context_default_params_by_ref()
        params = _ContextParams.from_buffer_copy(defaults.contents)
        lib.whisper_free_context_params(defaults)
        params.use_gpu = use_gpu
        params.flash_attn = flash_attn
        self._ctx: int | None = lib.whisper_init_from_file_with_params(
            str(model_file).encode(), params
        )
        if not self._ctx:
            raise ModelError(f"whisper.cpp cannot load {model_file}")
        ctx = self._ctx
        if not lib.whisper_is_multilingual(ctx):
            self.close()
            raise ModelError(f"{model_file}: an English-only model has no language to detect")
        self._threads = n_threads
        #: made at the first window other than the full one (see .encoder_window)
        self._window: EncoderWindow | None = None
        self._n_vocab = lib.whisper_n_vocab(ctx)
        self._max_tokens = lib.whisper_n_text_ctx(ctx) // 2
        self._sot = lib.whisper_token_sot(ctx)
        self._prev = lib.whisper_token_prev(ctx)
        self._translate = lib.whisper_token_translate(ctx)
        self._n_text_ctx = lib.whisper_n_text_ctx(ctx)
        self._eot = lib.whisper_token_eot(ctx)
        self._no_timestamps = lib.whisper_token_not(ctx)
        self._transcribe = lib.whisper_token_transcribe(ctx)
        self._no_speech = lib.whisper_token_nosp(ctx)
        languages = range(lib.whisper_lang_max_id() + 1)
        self._language_tokens = np.array([lib.whisper_token_lang(ctx, i) for i in languages])
        self._language_codes = [lib.whisper_lang_str(i).decode() for i in languages]
        # whisper_process_logits: never timestamps, task, language or special tokens.
        suppressed = np.zeros(self._n_vocab, dtype=bool)
        suppressed[lib.whisper_token_beg(ctx) :] = True
        for token in (
            self._no_timestamps,
            self._sot,
            self._no_speech,
            lib.whisper_token_solm(ctx),
            lib.whisper_token_translate(ctx),
            self._transcribe,
            lib.whisper_token_prev(ctx),
        ):
            suppressed[token] = True
        suppressed[self._language_tokens] = True
        self._suppressed = suppressed
        # suppress_blank: the first token may be neither end-of-text nor a space.
        self._suppressed_first = suppressed.copy()
        self._suppressed_first[[self._eot, self._token_id(b" ")]] = True

    @property
    def audio_ctx(self) -> int:
        """The encoder window of the latest transcription (0: the full 30 s)."""
        return 0 if self._window is None else self._window.audio_ctx

    @property
    def context(self) -> int | None:
        """The ``whisper_context *`` it decodes on (None once closed)."""
        return self._ctx

    def _token_id(self, text: bytes) -> int:
        tokens = (ctypes.c_int32 * 4)()
        if self._lib.whisper_tokenize(self._ctx, text, tokens, 4) != 1:
            raise ModelError(f"whisper.cpp vocabulary has no single token for {text!r}")
        return int(tokens[0])

    def _decode(self, tokens: list[int], n_past: int) -> npt.NDArray[np.float32]:
        """Logits after the last of ``tokens`` (a copy: the next call overwrites
        whisper.cpp's; it fills only the last row of a multi-token call)."""
        array = (ctypes.c_int32 * len(tokens))(*tokens)
        if self._lib.whisper_decode(self._ctx, array, len(tokens), n_past, self._threads) != 0:
            raise RuntimeError("whisper.cpp failed to decode")
        pointer = self._lib.whisper_get_logits(self._ctx)
        logits = np.ctypeslib.as_array(pointer, shape=(len(tokens) * self._n_vocab,))
        return np.array(logits[-self._n_vocab :], dtype=np.float32)

    def language_token(self, code: str) -> int:
        """The token of a language code; ModelError for a code Whisper does not know."""
        index = self._lib.whisper_lang_id(code.encode())
        if index < 0:
            raise ModelError(f"whisper.cpp knows no language {code!r}")
        return int(self._language_tokens[index])

    def transcribe(
        self,
        audio: Float32,
        should_abort: Callable[[], bool] | None = None,
        language: str | None = None,
        *,
        prompt: str = "",
        translate: bool = False,
        audio_ctx: int = 0,
    ) -> DecodedUtterance:
        """Detect the language (unless ``language`` is given) and decode greedily.

        ``prompt`` primes the decoder (whisper.cpp's ``initial_prompt``);
        ``translate`` decodes Whisper's translate task (English text);
        ``audio_ctx`` is the encoder's window in frames (0: the full 30 s).
        Blocking; abort is checked before the encoder and between tokens.
        """
        if self._ctx is None:
            raise RuntimeError("DirectWhisper is closed")
        asked = language
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        lib, ctx = self._lib, self._ctx
        pointer = samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        if lib.whisper_pcm_to_mel(ctx, pointer, samples.size, self._threads) != 0:
            raise RuntimeError("whisper.cpp failed to compute the log-mel spectrogram")
        # whisper_encode takes no abort callback: once started, base's 30 s
        # window costs its 2.9-4 s of CPU (one thread) whatever happens. An
        # abort that came while the job waited or the mel was computed ends it
        # here instead.
        if should_abort is not None and should_abort():
            return DecodedUtterance("", language or "", None, 0.0)
        if audio_ctx and self._window is None:
            self._window = EncoderWindow(lib, ctx, self._threads)
        if self._window is not None:
            self._window.set(audio_ctx)
        if lib.whisper_encode(ctx, 0, self._threads) != 0:
            raise RuntimeError("whisper.cpp failed to encode")

        after_sot = self._decode([self._sot], 0)
        probability: float | None = None
        if language is None:
            # The language: its token's logit after <|startoftranscript|>.
            language_logits = after_sot[self._language_tokens]
            best = int(np.argmax(language_logits))
            probability = float(_softmax(language_logits)[best])
            language = self._language_codes[best]
            language_token = int(self._language_tokens[best])
            if audio_ctx and probability < _SURE_LANGUAGE:
                return self.transcribe(
                    audio, should_abort, asked, prompt=prompt, translate=translate
                )
        else:
            language_token = self.language_token(language)
        # The no-speech probability is read after SOT, before any suppression
        # (as openai-whisper does; whisper_full reads it there too).
        no_speech = float(_softmax(after_sot)[self._no_speech])
        task = [language_token, self._translate if translate else self._transcribe]
        task.append(self._no_timestamps)
        if prompt:
            # As whisper_full: <|startofprev|> and the prompt's last n_text_ctx / 2
            # tokens before SOT. Language and no-speech were read without them,
            # as whisper.cpp detects the language on SOT alone; the decoder's
            # cache is rewritten from position 0.
            previous = [self._prev, *_tokenize(ctx, prompt)[-(self._n_text_ctx // 2) :]]
            logits = self._decode([*previous, self._sot, *task], 0)
            n_past = len(previous) + 1 + len(task)
        else:
            logits = self._decode(task, 1)
            n_past = 1 + len(task)

        budget = min(
            # as whisper_full's finals (never past half the decoder's context)
            final_token_cap(samples.size, self._max_tokens),
            # the decoder's context holds the prompt and every token decoded
            self._n_text_ctx - n_past - 1,
        )
        # The mean log-probability only matters when no-speech is likely.
        scoring = no_speech > _NO_SPEECH_THRESHOLD
        tokens: list[int] = []
        # Tokens are byte pieces: a character may span two of them.
        pieces: list[bytes] = []
        logprob_sum = 0.0
        silent = DecodedUtterance("", language, probability, no_speech)
        ran_out = False
        while True:
            if should_abort is not None and should_abort():
                return silent
            logits[self._suppressed_first if not tokens else self._suppressed] = -np.inf
            token = int(np.argmax(logits))
            if scoring:
                logprob_sum += _log_softmax_at(logits, token)
            if token == self._eot or len(tokens) >= budget:
                ran_out = token != self._eot
                break
            tokens.append(token)
            pieces.append(lib.whisper_token_to_str(ctx, token))
            if self._looping(pieces):
                ran_out = True
                break
            logits = self._decode([token], n_past)
            n_past += 1
        if ran_out and audio_ctx:
            # A window smaller than 30 s is what makes Whisper loop
            # (docs/cuda.md): decode again in the full one, as pc2's finals
            # do after a first try that loops.
            return self.transcribe(audio, should_abort, asked, prompt=prompt, translate=translate)
        if scoring and logprob_sum / (len(tokens) + 1) < _LOGPROB_THRESHOLD:
            return silent
        text = b"".join(pieces).decode("utf-8", errors="replace").strip()
        return DecodedUtterance(text, language, probability, no_speech)

    def _looping(self, pieces: list[bytes]) -> bool:
        """The text so far repeats itself past the limit (checked every few tokens)."""
        n = len(pieces)
        if not self._max_ratio or n < _LOOP_CHECK_FROM or n % _LOOP_CHECK_EVERY:
            return False
        text = clean_transcript(b"".join(pieces).decode("utf-8", errors="replace"))
        return compression_ratio(text) > self._max_ratio

    def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx:
            self._lib.whisper_free(ctx)


def _softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    shifted = logits.astype(np.float64) - float(np.max(logits))
    exp = np.exp(shifted)
    result: npt.NDArray[np.float64] = exp / exp.sum()
    return result


def _log_softmax_at(logits: npt.NDArray[np.float32], index: int) -> float:
    # Suppressed (-inf) logits contribute exp(-inf) = 0.
    top = float(np.max(logits))
    total = float(np.exp(logits.astype(np.float64) - top).sum())
    return float(logits[index]) - top - float(np.log(total))
