"""Whisper's byte-level BPE vocabulary: reading it, and the ggml token table."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Sequence
from pathlib import Path

from rtap_trio.errors import ModelError

EOT_TOKEN = "<|endoftext|>"
GGML_TEXT_TOKENS = 50_257

VocabularySource = Path | str | Sequence[str]


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte -> printable-unicode map used by byte-level BPE."""
    # Printable Latin-1 bytes stand for themselves; the rest are shifted to 256+.
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return {char: b for b, char in mapping.items()}


def load_tokens(vocabulary: VocabularySource) -> list[str]:
    """Byte-level BPE tokens in id order, from a path or an in-memory list."""
    if isinstance(vocabulary, Sequence) and not isinstance(vocabulary, str):
        return list(vocabulary)
    path = Path(vocabulary)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read Whisper vocabulary {path}: {exc}") from exc
    if path.suffix == ".json" or text.lstrip().startswith("{"):
        return _tokens_from_tokenizer_json(text, path)
    # One token per line. split("\n"), not splitlines(): a token may be empty
    # (multilingual id 50256), and splitlines() would also split on U+0085.
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return tokens


def _tokens_from_tokenizer_json(text: str, path: Path) -> list[str]:
    try:
        vocab = json.loads(text)["model"]["vocab"]
        by_id = {int(i): str(tok) for tok, i in vocab.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: not a Hugging Face BPE tokenizer.json ({exc})") from exc
    missing = [i for i in range(len(by_id)) if i not in by_id]
    if missing:
        raise ModelError(f"{path}: token ids are not contiguous (first gap at {missing[0]})")
    return [by_id[i] for i in range(len(by_id))]


def encode_vocabulary(tokens: Sequence[str], source: str) -> bytes:
    """The ggml token table: the first 50,257 byte-level BPE tokens, as raw bytes.

    That count is what the official ggml files carry (openai's GPT-2 style
    vocab.json: 256 bytes + 50,000 merges + one more), i.e. <|endoftext|> for
    the English-only models and the unused id 50256 for the multilingual ones.
    whisper.cpp synthesises the remaining special tokens from n_vocab. Writing
    another count would load as well but miss the official file size.
    """
    if len(tokens) < GGML_TEXT_TOKENS:
        raise ModelError(
            f"{source}: vocabulary has {len(tokens)} tokens, expected at least {GGML_TEXT_TOKENS}"
        )
    eot = tokens.index(EOT_TOKEN) if EOT_TOKEN in tokens else -1
    if eot not in (GGML_TEXT_TOKENS - 1, GGML_TEXT_TOKENS):
        raise ModelError(f"{source}: {EOT_TOKEN} is not where a Whisper vocabulary has it")
    decoder = _byte_decoder()
    out = io.BytesIO()
    out.write(struct.pack("<i", GGML_TEXT_TOKENS))
    for token_id, token in enumerate(tokens[:GGML_TEXT_TOKENS]):
        try:
            raw = bytes(decoder[char] for char in token)
        except KeyError:
            raise ModelError(
                f"{source}: token {token_id} {token!r} is not GPT-2 byte-level BPE"
            ) from None
        out.write(struct.pack("<i", len(raw)))
        out.write(raw)
    return out.getvalue()
