"""Which transcripts are Whisper's inventions, not speech: the discard rules, in one place.

Whisper writes text for whatever it is given, and on sounds that are not speech
that text is made up. Two cheap signals catch what it makes up, each a number a
person can check against the transcript:

* its own no-speech probability (``stt.no_speech_threshold``): what it makes of
  noise. Measured with base: 0.00-0.19 on every utterance of the fixtures and
  the shared corpus, 0.34-0.59 on sox's white and brown noise ("1/2").
  tiny.en (pc2, through whisper_full; read as :func:`.whispercpp.direct.no_speech_after_sot`
  explains): 0.01-0.36 on the English fixtures and corpus, the highest on
  single keywords of porcupine_multiple_keywords.wav, 0.38-0.96 on generated
  music and noise, 0.64-0.77 where it wrote something ("the", ".", "(").
* how well the text compresses (``stt.max_compression_ratio``): a decoder that
  has fallen into a loop writes the same words again and again until its token
  budget runs out, and such a text compresses far better than speech does.
  openai-whisper takes a zlib ratio over 2.4 as a failed decode. Measured with
  base (issue 16) on 15 s utterances of generated music that webrtcvad calls
  voiced (tests/musicgen.py, 51 utterances): 7 transcripts, every one a loop to
  the token budget ("I'm a man, I'm a man, ...", "I'm not a fan of you, ...",
  "1/2 tbh dbh dbh ..."), ratio 13.9-17.9, no-speech 0.17-0.49, so 3 of them
  passed the first rule. Every utterance of the fixtures and the shared
  corpus (35) was 0.50-1.36 (short texts compress badly: zlib's own header
  and checksum are 8 bytes; the most repetitive was JFK's "what your country
  can do for you, ask what you can do for your country"). The one-pass
  decoder now stops a loop as soon as its text is over the limit (~32 tokens
  instead of 196; 15 s of chords-2 took 5 s instead of 46 s on two busy
  cores), so the ratio an event reports is just over it.

Whisper's log-probability cannot tell: the loops were confident (mean token
log-probability -0.16 to -0.20, speech -0.09 to -0.99), so whisper.cpp's
``logprob_thold`` (-1) passes them. Silero VAD could: its share of speech
frames was 0.00-0.16 on the music and 0.41-0.78 on the speech, where webrtcvad
(even at aggressiveness 3) called 87-100 % of the music voiced; it would also
spare the engine the transcription, but it is a second VAD on every utterance,
not a rule on the text.
"""

from __future__ import annotations

import zlib

from ..settings import SttSettings

__all__ = ["compression_ratio", "discard_reason"]


def compression_ratio(text: str) -> float:
    """Bytes of the text over bytes of it zlib-compressed, as openai-whisper computes it.

    High means repetitive (a looping decode); 0.0 for no text.
    """
    raw = text.encode()
    return round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0


def discard_reason(text: str, no_speech: float | None, settings: SttSettings) -> str | None:
    """Why a transcript must not be published (``utterance_discarded``'s reason), or None.

    ``no_text``: nothing was written; ``no_speech``: Whisper itself thinks
    nothing was said; ``repetition``: the text repeats itself like a loop.
    """
    if not text:
        return "no_text"
    if no_speech is not None and no_speech > settings.no_speech_threshold:
        return "no_speech"
    limit = settings.max_compression_ratio
    if limit and compression_ratio(text) > limit:
        return "repetition"
    return None
