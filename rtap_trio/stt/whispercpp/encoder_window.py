"""The encoder's window of a whisper.cpp context, set without ``whisper_full`` encoding.

whisper.cpp 1.8.5 encodes ``state->exp_n_audio_ctx`` frames in every
``whisper_encode`` (0: the model's 1500, a 30 s window), and only
``whisper_full`` sets that field, from its ``audio_ctx`` parameter; the value
stays in the state for later calls. The one-pass decoder (:mod:`.direct`)
encodes with ``whisper_encode`` itself, so it could only use the full window:
base's ~2 s of two cores per command on this machine.

:class:`EncoderWindow` calls ``whisper_full`` with the window asked for, the
language given (no detection), no new audio (the spectrogram already computed
is kept) and ``duration_ms`` of 100: its main loop then stops before the encoder
("only 100 ms left"), having stored the window and done nothing else. Measured
(base q8_0, two threads, the one pass at a 768-frame floor against the full
window): 960-981 against 2069-2128 ms a command, the same words and languages
on the shared corpus (docs/performance.md, "what the default profile's 1.2 s
would take").

``whisper_full`` takes its parameters by value, so their layout is declared
here as whisper.h 1.8.5 has it, and checked against the library's own defaults
before use: a libwhisper with another layout is refused, not written into.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

from ...errors import ModelError

__all__ = ["EncoderWindow", "bind_whisper_full"]

_GREEDY = 0  # enum whisper_sampling_strategy


class _VadParams(ctypes.Structure):
    _fields_ = [
        ("threshold", ctypes.c_float),
        ("min_speech_duration_ms", ctypes.c_int),
        ("min_silence_duration_ms", ctypes.c_int),
        ("max_speech_duration_s", ctypes.c_float),
        ("speech_pad_ms", ctypes.c_int),
        ("samples_overlap", ctypes.c_float),
    ]


class _Greedy(ctypes.Structure):
    _fields_ = [("best_of", ctypes.c_int)]


class _BeamSearch(ctypes.Structure):
    _fields_ = [("beam_size", ctypes.c_int), ("patience", ctypes.c_float)]


_P = ctypes.c_void_p


class _FullParams(ctypes.Structure):
    # whisper.h 1.8.5, struct whisper_full_params, field for field.
    _fields_ = [
        ("strategy", ctypes.c_int),
        ("n_threads", ctypes.c_int),
        ("n_max_text_ctx", ctypes.c_int),
        ("offset_ms", ctypes.c_int),
        ("duration_ms", ctypes.c_int),
        ("translate", ctypes.c_bool),
        ("no_context", ctypes.c_bool),
        ("no_timestamps", ctypes.c_bool),
        ("single_segment", ctypes.c_bool),
        ("print_special", ctypes.c_bool),
        ("print_progress", ctypes.c_bool),
        ("print_realtime", ctypes.c_bool),
        ("print_timestamps", ctypes.c_bool),
        ("token_timestamps", ctypes.c_bool),
        ("thold_pt", ctypes.c_float),
        ("thold_ptsum", ctypes.c_float),
        ("max_len", ctypes.c_int),
        ("split_on_word", ctypes.c_bool),
        ("max_tokens", ctypes.c_int),
        ("debug_mode", ctypes.c_bool),
        ("audio_ctx", ctypes.c_int),
        ("tdrz_enable", ctypes.c_bool),
        ("suppress_regex", ctypes.c_char_p),
        ("initial_prompt", ctypes.c_char_p),
        ("carry_initial_prompt", ctypes.c_bool),
        ("prompt_tokens", _P),
        ("prompt_n_tokens", ctypes.c_int),
        ("language", ctypes.c_char_p),
        ("detect_language", ctypes.c_bool),
        ("suppress_blank", ctypes.c_bool),
        ("suppress_nst", ctypes.c_bool),
        ("temperature", ctypes.c_float),
        ("max_initial_ts", ctypes.c_float),
        ("length_penalty", ctypes.c_float),
        ("temperature_inc", ctypes.c_float),
        ("entropy_thold", ctypes.c_float),
        ("logprob_thold", ctypes.c_float),
        ("no_speech_thold", ctypes.c_float),
        ("greedy", _Greedy),
        ("beam_search", _BeamSearch),
        ("new_segment_callback", _P),
        ("new_segment_callback_user_data", _P),
        ("progress_callback", _P),
        ("progress_callback_user_data", _P),
        ("encoder_begin_callback", _P),
        ("encoder_begin_callback_user_data", _P),
        ("abort_callback", _P),
        ("abort_callback_user_data", _P),
        ("logits_filter_callback", _P),
        ("logits_filter_callback_user_data", _P),
        ("grammar_rules", _P),
        ("n_grammar_rules", ctypes.c_size_t),
        ("i_start_rule", ctypes.c_size_t),
        ("grammar_penalty", ctypes.c_float),
        ("vad", ctypes.c_bool),
        ("vad_model_path", ctypes.c_char_p),
        ("vad_params", _VadParams),
    ]


def _defaults_match(params: _FullParams) -> bool:
    """whisper_full_default_params' values (whisper.cpp 1.8.5) where this layout
    puts them: a field moved or added shifts some of these."""
    close = math.isclose
    return (
        params.strategy == _GREEDY
        and params.n_max_text_ctx == 16384
        and params.no_context
        and params.audio_ctx == 0
        and params.language == b"en"
        and params.suppress_blank
        and close(params.max_initial_ts, 1.0)
        and close(params.entropy_thold, 2.4, rel_tol=1e-6)
        and close(params.no_speech_thold, 0.6, rel_tol=1e-6)
        and close(params.grammar_penalty, 100.0)
        and not params.vad
        and params.vad_params.min_speech_duration_ms == 250
        and close(params.vad_params.samples_overlap, 0.1, rel_tol=1e-6)
    )


def bind_whisper_full(library: Any) -> None:
    """Declare the signatures this module calls (once, with the library's others)."""
    library.whisper_full_default_params_by_ref.restype = ctypes.POINTER(_FullParams)
    library.whisper_full_default_params_by_ref.argtypes = [ctypes.c_int]
    library.whisper_free_params.argtypes = [ctypes.POINTER(_FullParams)]
    library.whisper_full.argtypes = [_P, _FullParams, ctypes.POINTER(ctypes.c_float), ctypes.c_int]
    library.whisper_full.restype = ctypes.c_int


class EncoderWindow:
    """The window ``whisper_encode`` uses on one context; not thread-safe (the
    engine's lock holds it with the context)."""

    def __init__(self, library: Any, context: int, n_threads: int) -> None:
        """``library``: bound by :func:`bind_whisper_full`."""
        defaults = library.whisper_full_default_params_by_ref(_GREEDY)
        params = _FullParams.from_buffer_copy(defaults.contents)
        library.whisper_free_params(defaults)
        if not _defaults_match(params):
            raise ModelError(
                "this libwhisper's whisper_full_params is not whisper.cpp 1.8.5's: "
                "stt.whispercpp.audio_ctx must stay 0 with language auto (one pass)"
            )
        params.n_threads = n_threads
        params.greedy.best_of = 1  # no extra decoders allocated
        params.print_progress = False
        params.print_timestamps = False
        params.language = b"en"  # given, so nothing is detected (or encoded)
        params.duration_ms = 100  # the main loop stops before its first encode
        self._library = library
        self._context = context
        self._params = params
        #: the window now set (0: whisper.cpp's full one, a fresh state's)
        self.audio_ctx = 0

    def set(self, audio_ctx: int) -> None:
        """Encode ``audio_ctx`` frames from the next ``whisper_encode`` on (0: 1500)."""
        if audio_ctx == self.audio_ctx:
            return
        self._params.audio_ctx = audio_ctx
        if self._library.whisper_full(self._context, self._params, None, 0) != 0:
            raise RuntimeError(f"whisper.cpp refused an encoder window of {audio_ctx} frames")
        self.audio_ctx = audio_ctx
