"""What each recording should yield: reference files and generated fixtures' manifests.

A project reference file (``eval/*.json``) holds ``keywords`` and ``files``
with ``file``, ``language``, ``text``, optional ``spoken_text``, ``wake_words``,
``score_wer``; a generated fixtures ``manifest.json`` holds ``wake_words`` and
``fixtures`` with ``utterances``. Both load into one :class:`ReferenceSet`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = [
    "DEFAULT_CORPUS",
    "DEFAULT_REFERENCES",
    "REPO",
    "Reference",
    "ReferenceSet",
    "load_references",
    "references_for",
]

#: The checkout this package runs from (an editable install: rtap_trio/evaluation/ in it).
#: Found from the package, not the working directory, so ``eval`` finds its
#: references from any folder, as before.
REPO = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
DEFAULT_REFERENCES = REPO / "eval" / "shared_corpus.json"


@dataclass(frozen=True, slots=True)
class Reference:
    file: str
    #: ISO 639-1 code of what is said; None when nothing is (or only keywords are)
    language: str | None
    #: what the pipeline should emit: the commands, wake words left out
    text: str
    #: everything said, wake words included: what the bare engine should hear
    spoken_text: str
    #: keywords in the order spoken
    wake_words: tuple[str, ...] = ()
    score_wer: bool = True
    note: str = ""
    format: str = "wav"


@dataclass(frozen=True, slots=True)
class ReferenceSet:
    source: Path
    #: every keyword Porcupine listens for during the evaluation
    keywords: tuple[str, ...]
    files: tuple[Reference, ...]


def _reference_from_entry(entry: Mapping[str, Any]) -> Reference:
    text = str(entry.get("text") or "")
    if "utterances" in entry:  # generated fixtures' manifest
        wake_words = tuple(u["wake_word"] for u in entry["utterances"] if u.get("wake_word"))
    else:
        wake_words = tuple(entry.get("wake_words") or ())
    return Reference(
        file=str(entry["file"]),
        language=entry.get("language") or None,
        text=text,
        spoken_text=str(entry.get("spoken_text") or text),
        wake_words=wake_words,
        score_wer=bool(entry.get("score_wer", True)),
        note=str(entry.get("note") or entry.get("description") or ""),
        format=str(entry.get("format") or "wav"),
    )


def load_references(path: Path) -> ReferenceSet:
    """A project reference file or a generated fixtures manifest; raises ConfigError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), "", f"cannot read references: {exc}") from None
    entries = data.get("files") if "files" in data else data.get("fixtures")
    if not isinstance(entries, list):
        raise ConfigError(str(path), "", "expected a 'files' or 'fixtures' list")
    try:
        files = tuple(_reference_from_entry(entry) for entry in entries)
    except (KeyError, TypeError) as exc:
        raise ConfigError(str(path), "files", f"malformed entry: {exc!r}") from None
    spoken = {word for ref in files for word in ref.wake_words}
    keywords = tuple(data.get("keywords") or data.get("wake_words") or sorted(spoken))
    missing = spoken - set(keywords)
    if missing:
        raise ConfigError(str(path), "keywords", f"spoken but not listened for: {sorted(missing)}")
    return ReferenceSet(source=path, keywords=keywords, files=files)


def references_for(folder: Path, references: Path | None = None) -> ReferenceSet:
    """``references`` if given, else the folder's ``manifest.json``, else the corpus file."""
    if references is not None:
        return load_references(references)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        return load_references(manifest)
    if folder.resolve() == DEFAULT_CORPUS.resolve() and DEFAULT_REFERENCES.is_file():
        return load_references(DEFAULT_REFERENCES)
    raise ConfigError(
        str(folder), "", "no manifest.json here: name a reference file with --references"
    )
