"""The built-in demo, word for word: a newcomer's first run must not show a wrong word.

``python -m rtap_trio --source demo`` is what the README tells a newcomer to run
first, so its transcript is the project's first impression. A word error rate
bound would let "What is the winner in Berlin today?" through (the demo's old
voice gave exactly that on the default profile), hence the exact comparison.
The recording goes through ``replay`` in a child process: the real pipeline,
wake word, VAD and Whisper included, as a user would run it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rtap_trio.devtools import speechgen

from .forkserver import rtap_command

REPO = Path(__file__).resolve().parents[1]
#: What the demo says after "computer" (the README quotes it too).
DEMO_TEXT = "What is the weather in Berlin today?"


def words(text: str) -> list[str]:
    """Lower case, punctuation dropped; apostrophes kept, so "what's" is not "what is"."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def replay_demo(profile: str) -> list[dict[str, Any]]:
    replay = [*rtap_command(), "replay", str(speechgen.demo_path())]
    done = subprocess.run(
        [*replay, "--profile", profile],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_the_generator_makes_this_demo() -> None:
    # test_fixtures_speech checks that the shipped file is what the generator
    # makes; this ties the words expected below to the generator's DEMO.
    assert speechgen.DEMO.text == DEMO_TEXT
    assert speechgen.DEMO.wake_word == "computer"


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["default", "pc2"])
def test_demo_transcript_is_exact(profile: str) -> None:
    """default: multilingual base, q8_0, language auto (the newcomer's first run);
    pc2: tiny.en, f16, a window sized to the utterance. main_pc (base, f16, CUDA)
    cannot run here; base f16 on the CPU gave the same words when the demo was chosen."""
    lines = replay_demo(profile)
    assert len(lines) == 1, lines
    (transcript,) = lines
    assert words(transcript["text"]) == words(DEMO_TEXT), transcript["text"]
    assert transcript["wake_word"] == "computer"
    assert transcript["language"] == "en"
