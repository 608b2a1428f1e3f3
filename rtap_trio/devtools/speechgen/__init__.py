"""Generated speech for the demo, the tests and the bench: espeak-ng voices, sox resampling.

No recording or download is needed, and the output is byte-for-byte
reproducible on a machine with the same espeak-ng and sox. One module per step:

* :mod:`.catalogue`: what is spoken: voices, sentences, wake words, fixtures, the demo.
* :mod:`.rendering`: turning it into 16 kHz PCM on a noise floor, and WAV files.
* :mod:`.manifest`: the demo and the fixture set on disk, with ``manifest.json``,
  written atomically under a lock and reused while up to date.
* :mod:`.checks`: Porcupine and webrtcvad hear in it what the manifest says.

``scripts/make_speech.py`` is the command line over this package (``just speech``).
The names below are the ones the tests, the bench and the script use.
"""

from __future__ import annotations

from .catalogue import (
    DE,
    DEMO,
    DEMO_TOOLS,
    DEMO_VOICE,
    DERIVED_FROM,
    EN_F2,
    EN_M,
    ES,
    FIXTURES,
    NOISE_FILE,
    PAUSED,
    RAW_FILE,
    STEREO_FILE,
    TURN_TAKING,
    WAKE_WORDS,
    Fixture,
    Utterance,
    Voice,
    demo_path,
)
from .checks import (
    VAD_MODES,
    check_audio,
    check_demo,
    check_fixtures,
    check_vad,
    check_wake_words,
    demo_entry,
    detect_wake_word,
    detect_wake_words,
    vad_flags,
)
from .manifest import (
    MANIFEST_NAME,
    generate_demo,
    generate_fixtures,
    generator_hash,
    load_manifest,
)
from .rendering import (
    SAMPLE_RATE,
    SpeechToolMissing,
    noise,
    read_pcm,
    render,
    render_noise,
    synthesize,
    tool_versions,
    write_wav,
)

__all__ = [
    "DE",
    "DEMO",
    "DEMO_TOOLS",
    "DEMO_VOICE",
    "DERIVED_FROM",
    "EN_F2",
    "EN_M",
    "ES",
    "FIXTURES",
    "MANIFEST_NAME",
    "NOISE_FILE",
    "PAUSED",
    "RAW_FILE",
    "SAMPLE_RATE",
    "STEREO_FILE",
    "TURN_TAKING",
    "VAD_MODES",
    "WAKE_WORDS",
    "Fixture",
    "SpeechToolMissing",
    "Utterance",
    "Voice",
    "check_audio",
    "check_demo",
    "check_fixtures",
    "check_vad",
    "check_wake_words",
    "demo_entry",
    "demo_path",
    "detect_wake_word",
    "detect_wake_words",
    "generate_demo",
    "generate_fixtures",
    "generator_hash",
    "load_manifest",
    "noise",
    "read_pcm",
    "render",
    "render_noise",
    "synthesize",
    "tool_versions",
    "vad_flags",
    "write_wav",
]
