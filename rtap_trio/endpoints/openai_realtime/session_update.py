"""What a client may send in ``session.update``: the GA and the beta session format, as models.

A Realtime client changes its session with ``session.update`` (GA) or
``transcription_session.update`` (beta); RTAP reads both formats in either
event. :class:`BetaSessionUpdate` holds the beta's flat fields
(``input_audio_format``, ``input_audio_transcription``, ``turn_detection``),
:class:`GaSessionUpdate` the GA nesting (``audio.input.format``,
``.transcription``, ``.turn_detection``); fields of the API that RTAP does not
model (``include``, ``noise_reduction``, ...) are accepted and not used.

The first field a client got wrong is refused with the ``error`` event the
Realtime API gives (:func:`_refusal` turns pydantic's error into RTAP's
message, ``param`` and ``code``), in the order the fields are read: the
session's type, the beta's fields, then the GA's. An update that is taken is
applied by :func:`updated_config`. Apart from the connection because it is
the endpoint's whole input contract, and pure: no socket, no session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from .client_error import ClientError
from .config import SessionConfig, TurnDetection

__all__ = [
    "MAX_PROMPT_CHARS",
    "AudioFormatUpdate",
    "BetaSessionUpdate",
    "GaSessionUpdate",
    "TranscriptionUpdate",
    "TurnDetectionUpdate",
    "updated_config",
]

#: Whisper reads at most 224 prompt tokens; a longer prompt is refused, not
#: kept and echoed in every session.updated.
MAX_PROMPT_CHARS = 4096
#: Server VAD timings the session's VAD settings can take (settings.VadSettings).
SILENCE_MS = (60, 5000)
PREFIX_MS = (0, 2000)

#: Asks whether the STT engine can transcribe a language: why not, or None.
LanguageProblem = Callable[[str | None], str | None]
#: Asks whether the STT engine takes a prompt (its length in tokens): why not, or None.
PromptProblem = Callable[[str | None], str | None]


def _whole_number(value: float) -> int:
    if value != int(value):
        raise PydanticCustomError("whole_number", "a whole number is expected")
    return int(value)


#: A whole number of milliseconds: 800 and 800.0, not "800" or true.
_WholeMilliseconds = Annotated[float, Strict(), AfterValidator(_whole_number)]
_SilenceMilliseconds = Annotated[_WholeMilliseconds, Field(ge=SILENCE_MS[0], le=SILENCE_MS[1])]
_PrefixMilliseconds = Annotated[_WholeMilliseconds, Field(ge=PREFIX_MS[0], le=PREFIX_MS[1])]


class _Update(BaseModel):
    # The API's fields RTAP does not model are ignored, as the API ignores none
    # of them: a client written for it sends them.
    model_config = ConfigDict(extra="ignore", frozen=True)


class TranscriptionUpdate(_Update):
    """``input_audio_transcription`` (beta) or ``audio.input.transcription`` (GA)."""

    #: Any name: the service has one model (as on /v1/audio/transcriptions).
    model: StrictStr | None = None
    language: StrictStr | None = None
    #: The session's vocabulary prompt (whisper.cpp's initial prompt), for every
    #: utterance; refused over the engine's token limit.
    prompt: Annotated[StrictStr, Field(max_length=MAX_PROMPT_CHARS)] | None = None

    @field_validator("prompt")
    @classmethod
    def _promptable(cls, value: str | None, info: ValidationInfo) -> str | None:
        prompt_problem: PromptProblem | None = (info.context or {}).get("prompt_problem")
        problem = prompt_problem(value or None) if prompt_problem else None
        if problem is not None:
            raise PydanticCustomError("prompt_too_long", "{problem}", {"problem": problem})
        return value

    @field_validator("language")
    @classmethod
    def _transcribable(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Whisper would raise only at the first utterance: refused now.
        language_problem: LanguageProblem | None = (info.context or {}).get("language_problem")
        problem = language_problem(value or None) if language_problem else None
        if problem is not None:
            raise PydanticCustomError("unsupported_language", "{problem}", {"problem": problem})
        return value


class TurnDetectionUpdate(_Update):
    """``turn_detection``: server VAD with its timings (null, above it: manual commits)."""

    # semantic_vad is served by the same VAD: its eagerness is not modelled.
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    silence_duration_ms: _SilenceMilliseconds | None = None
    prefix_padding_ms: _PrefixMilliseconds | None = None
    threshold: Annotated[float, Strict(), Field(ge=0, le=1)] | None = None


class AudioFormatUpdate(_Update):
    """``audio.input.format`` (GA): pcm16 at 24 kHz is all there is."""

    type: Literal["audio/pcm"] | None = None
    rate: Literal[24_000] | None = None  # config.PCM16_RATE


class _AudioInputUpdate(_Update):
    format: AudioFormatUpdate | None = None
    transcription: TranscriptionUpdate | None = None
    turn_detection: TurnDetectionUpdate | None = None


class _AudioUpdate(_Update):
    input: _AudioInputUpdate | None = None


class BetaSessionUpdate(_Update):
    """The beta's ``transcription_session.update`` session: flat fields."""

    type: Literal["transcription"] | None = None
    input_audio_format: Literal["pcm16"] = "pcm16"
    input_audio_transcription: TranscriptionUpdate | None = None
    turn_detection: TurnDetectionUpdate | None = None


class GaSessionUpdate(_Update):
    """The GA ``session.update`` session: the input's fields under ``audio.input``."""

    type: Literal["transcription"] | None = None
    audio: _AudioUpdate | None = None


_INVALID_VALUE, _INVALID_TYPE = "invalid_value", "invalid_type"
_INTEGER = ("'{param}' must be an integer", _INVALID_TYPE)
_SILENCE = (f"'{{param}}' must be between {SILENCE_MS[0]} and {SILENCE_MS[1]}", _INVALID_VALUE)
_PREFIX = (f"'{{param}}' must be between {PREFIX_MS[0]} and {PREFIX_MS[1]}", _INVALID_VALUE)
_THRESHOLD = ("'{param}' must be between 0 and 1", _INVALID_VALUE)

#: (the field, or the object and the field; pydantic's error type) -> (message, code).
#: ``{param}``: the field's path from ``session``; ``{input!r}``: what the client sent.
_MESSAGES: dict[tuple[str, str], tuple[str, str]] = {
    ("session.type", "literal_error"): (
        "RTAP serves transcription sessions only, not {input!r}",
        _INVALID_VALUE,
    ),
    ("session.input_audio_format", "literal_error"): (
        "input_audio_format {input!r} is not taken: only 'pcm16' (16-bit PCM, 24 kHz, mono)",
        _INVALID_VALUE,
    ),
    ("format.type", "literal_error"): (
        "format {input!r} is not taken: only 'audio/pcm' at 24000 Hz",
        _INVALID_VALUE,
    ),
    ("format.rate", "literal_error"): (
        "rate {input!r} is not taken: audio/pcm is 24000 Hz",
        _INVALID_VALUE,
    ),
    ("turn_detection.type", "literal_error"): (
        "turn_detection type {input!r} is not taken: 'server_vad' or null",
        _INVALID_VALUE,
    ),
    ("silence_duration_ms", "float_type"): _INTEGER,
    ("silence_duration_ms", "whole_number"): _INTEGER,
    ("silence_duration_ms", "greater_than_equal"): _SILENCE,
    ("silence_duration_ms", "less_than_equal"): _SILENCE,
    ("prefix_padding_ms", "float_type"): _INTEGER,
    ("prefix_padding_ms", "whole_number"): _INTEGER,
    ("prefix_padding_ms", "greater_than_equal"): _PREFIX,
    ("prefix_padding_ms", "less_than_equal"): _PREFIX,
    ("threshold", "float_type"): ("'{param}' must be a number", _INVALID_TYPE),
    ("threshold", "greater_than_equal"): _THRESHOLD,
    ("threshold", "less_than_equal"): _THRESHOLD,
    ("prompt", "string_too_long"): (
        f"'{{param}}' is at most {MAX_PROMPT_CHARS} characters",
        _INVALID_VALUE,
    ),
    ("language", "unsupported_language"): ("{problem}", _INVALID_VALUE),
    ("prompt", "prompt_too_long"): ("{problem}", _INVALID_VALUE),
}
#: Whatever the field: pydantic's error type -> (message, code).
_BY_TYPE: dict[str, tuple[str, str]] = {
    "model_type": ("'{param}' must be an object", _INVALID_TYPE),
    "string_type": ("'{param}' must be a string", _INVALID_TYPE),
}


def _refusal(error: ErrorDetails) -> ClientError:
    """The ``error`` event's fields for the first thing wrong in a session update."""
    path = ("session", *(str(part) for part in error["loc"]))
    param = ".".join(path)
    kind = error["type"]
    message, code = (
        _MESSAGES.get((".".join(path[-2:]), kind))
        or _MESSAGES.get((path[-1], kind))
        or _BY_TYPE.get(kind)
        or ("'{param}' is not taken: {msg}", _INVALID_VALUE)
    )
    values = {**error.get("ctx", {}), "param": param, "input": error["input"], "msg": error["msg"]}
    return ClientError(message.format(**values), param=param, code=code)


def _transcription(
    config: SessionConfig, update: TranscriptionUpdate | None, default_model: str
) -> SessionConfig:
    if update is None:  # a transcription session always transcribes: the defaults
        return replace(config, model=default_model, language=None, prompt=None)
    given = update.model_fields_set
    return replace(
        config,
        model=update.model or config.model,
        language=(update.language or None) if "language" in given else config.language,
        prompt=(update.prompt or None) if "prompt" in given else config.prompt,
    )


def _turn_detection(
    config: SessionConfig, update: TurnDetectionUpdate | None, defaults: TurnDetection
) -> SessionConfig:
    if update is None:
        return replace(config, turn_detection=None)
    silence, prefix = update.silence_duration_ms, update.prefix_padding_ms
    turn_detection = TurnDetection(
        defaults.silence_duration_ms if silence is None else int(silence),
        defaults.prefix_padding_ms if prefix is None else int(prefix),
        update.threshold,
    )
    return replace(config, turn_detection=turn_detection)


def updated_config(
    config: SessionConfig,
    session: object,
    *,
    default_model: str,
    default_turn_detection: TurnDetection,
    language_problem: LanguageProblem,
    prompt_problem: PromptProblem | None = None,
) -> SessionConfig:
    """``config`` with an update's ``session`` applied (beta fields, then GA).

    Raises :class:`ClientError` for the first field it cannot take.
    ``default_turn_detection``: the timings of the service's own VAD settings,
    for a ``turn_detection`` that names none.
    """
    context = {"language_problem": language_problem, "prompt_problem": prompt_problem}
    try:
        beta = BetaSessionUpdate.model_validate(session, context=context)
        ga = GaSessionUpdate.model_validate(session, context=context)
    except ValidationError as exc:
        raise _refusal(exc.errors()[0]) from None
    if "input_audio_transcription" in beta.model_fields_set:
        config = _transcription(config, beta.input_audio_transcription, default_model)
    if "turn_detection" in beta.model_fields_set:
        config = _turn_detection(config, beta.turn_detection, default_turn_detection)
    audio_input = ga.audio.input if ga.audio is not None else None
    if audio_input is not None:
        if "transcription" in audio_input.model_fields_set:
            config = _transcription(config, audio_input.transcription, default_model)
        if "turn_detection" in audio_input.model_fields_set:
            config = _turn_detection(config, audio_input.turn_detection, default_turn_detection)
    return config
