"""What the speech generator makes: the voices, the sentences, the fixtures, the demo.

The catalogue only says what is spoken, by which espeak-ng voice, with which
wake word and pauses, and under which file name; :mod:`.rendering` turns it into
audio and :mod:`.manifest` into files. Two findings shaped the voices (both
checked by :func:`.checks.check_demo` and :func:`.checks.check_fixtures`): of
the voices tried, the ``en-us+f2`` variant is by far the one Porcupine accepts
best ("computer", "jarvis", "porcupine"; the plain ``en-us`` voice is fine for
"bumblebee"), and Whisper transcribes it well. The demo is the exception: in
``en-us+f2`` its sentence came out wrong on both Whisper models, in a lower
plain ``en-us`` voice right on every profile, and Porcupine hears "computer" in
it as well (see :data:`DEMO_VOICE`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

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
    "NOISE_FILE",
    "NOISE_S",
    "PAUSED",
    "RAW_FILE",
    "STEREO_FILE",
    "WAKE_GAP_S",
    "WAKE_SENSITIVITY",
    "WAKE_WORDS",
    "Fixture",
    "Utterance",
    "Voice",
    "demo_path",
]


def demo_path() -> Path:
    """Where the package keeps the demo recording (in a checkout: the source tree's file)."""
    return Path(str(resources.files("rtap_trio.audio") / "data" / "demo.wav"))


#: Sensitivity every wake word is checked at (Porcupine's default).
WAKE_SENSITIVITY = 0.5
#: Pause between the wake word and the command, like a speaker's comma.
WAKE_GAP_S = 0.3


@dataclass(frozen=True)
class Voice:
    """espeak-ng settings: ``-v name -s speed -p pitch``."""

    name: str
    speed: int  # words per minute
    pitch: int  # 0-99

    def describe(self) -> str:
        return f"-v {self.name} -s {self.speed} -p {self.pitch}"


# Slower German and Spanish: at 150 wpm espeak-ng's accent costs Whisper words.
EN_F2 = Voice("en-us+f2", 150, 50)
EN_M = Voice("en-us", 150, 50)
DE = Voice("de", 130, 50)
ES = Voice("es", 130, 50)


@dataclass(frozen=True)
class Utterance:
    """One spoken turn: an optional wake word, a pause, then the command or sentence."""

    text: str
    voice: Voice
    wake_word: str | None = None
    #: Pause after the wake word. Porcupine fires some time after the word ends (about
    #: 0.1-0.16 s for en-us+f2, 0.23-0.31 s for en-us) and the pipeline's utterance
    #: starts no earlier than that, so the pause must outlast the delay or the
    #: command's first word is cut.
    wake_gap_s: float = WAKE_GAP_S
    #: Silence where the text has a "|": a pause inside the sentence, as people
    #: make them (the endpointer must not end the utterance there).
    pause_s: float = 0.0

    @property
    def words(self) -> str:
        """The text as said, without its pause marks."""
        return " ".join(part.strip() for part in self.text.split("|"))


@dataclass(frozen=True)
class Fixture:
    file: str
    language: str
    utterances: tuple[Utterance, ...]
    description: str


#: The demo's voice. en-us+f2 (the fixtures' voice) said "weather" so that
#: multilingual base heard "winner" and "today" so that tiny.en heard "okay".
#: The plain en-us voice a little lower (pitch 40) is heard right by base
#: (q8_0 and f16) and tiny.en with speed 140-160, pitch 30-50 and pauses of
#: 0.4-0.6 s alike; at pitch 60 base turns "weather" into "winner" again.
DEMO_VOICE = Voice("en-us", 150, 40)
#: The demo: wake word, then the command the README's walkthrough shows. With
#: this voice Porcupine fires 0.23-0.31 s after "computer" ends and the utterance
#: cannot start before that, so the pause is 0.5 s: after the fixtures' 0.3 s it
#: may fire once the command has begun (with 0.2 s a trial lost its first words).
DEMO = Utterance("What is the weather in Berlin today?", DEMO_VOICE, "computer", wake_gap_s=0.5)

#: Commands with a pause inside the sentence, 0.35-0.55 s (less than the 600 ms
#: hangover): each must come out as one utterance, early endpointing or not.
PAUSED = (
    Utterance("Remind me to buy milk | and eggs tomorrow.", EN_F2, pause_s=0.45),
    Utterance("Turn on the lights in the kitchen | and in the hallway.", EN_F2, pause_s=0.55),
    Utterance("Set a timer for | ten minutes.", EN_F2, pause_s=0.35),
    Utterance("What is the weather | in Paris?", EN_F2, pause_s=0.5),
    Utterance("Play the new album | by the Beatles.", EN_F2, pause_s=0.4),
)

#: Turn-taking (issue 18): short replies, which an end-of-turn policy must not
#: drop or wait long for, and thoughts broken off at a comma for longer than
#: the 600 ms hangover, which it must not cut. espeak-ng says "order," and
#: "sister," with a rising, unfinished tune (Smart Turn: 0.02-0.14 complete),
#: unlike PAUSED's fragments, which it ends on a final fall.
TURN_TAKING = (
    Utterance("Yes.", EN_F2),
    Utterance("I would like to order, | a large pizza with cheese.", EN_M, pause_s=0.8),
    Utterance("No.", EN_M),
    Utterance("Call my sister, | and tell her I am running late.", EN_F2, pause_s=0.7),
    Utterance("Stop.", EN_F2),
    Utterance("Okay, | thank you.", EN_M, pause_s=0.7),
)

FIXTURES: tuple[Fixture, ...] = (
    Fixture(
        "computer_garage.wav",
        "en",
        (Utterance("Open the garage door.", EN_F2, "computer"),),
        "wake word 'computer' and an English command",
    ),
    Fixture(
        "jarvis_lights.wav",
        "en",
        (Utterance("Turn on the kitchen lights.", EN_F2, "jarvis"),),
        "wake word 'jarvis' and an English command",
    ),
    Fixture(
        "porcupine_music.wav",
        "en",
        (Utterance("Play some relaxing music.", EN_F2, "porcupine"),),
        "wake word 'porcupine' and an English command",
    ),
    Fixture(
        "bumblebee_tokyo.wav",
        "en",
        (Utterance("What time is it in Tokyo?", EN_M, "bumblebee"),),
        "wake word 'bumblebee' and an English command, male voice",
    ),
    Fixture(
        "en_no_wake.wav",
        "en",
        (Utterance("Lock the front door and turn off the lights.", EN_F2),),
        "English command without a wake word",
    ),
    Fixture(
        "de_kino.wav",
        "de",
        (Utterance("Ich möchte heute Abend ins Kino gehen.", DE),),
        "German sentence without a wake word",
    ),
    Fixture(
        "es_restaurante.wav",
        "es",
        (Utterance("Vamos a comer en un restaurante italiano.", ES),),
        "Spanish sentence without a wake word",
    ),
    Fixture(
        "two_utterances.wav",
        "en",
        (
            Utterance("What is on my calendar tomorrow?", EN_F2, "computer"),
            Utterance("Remind me to call my mother.", EN_F2, "computer"),
        ),
        "two wake word + command turns, 1.5 s of silence between them",
    ),
    Fixture(
        "paused_sentences.wav",
        "en",
        PAUSED,
        "five commands, each with a 0.35-0.55 s pause inside it, 1.5 s between them",
    ),
)

#: Derived files: a 44.1 kHz stereo copy and a raw capture copy of this fixture.
DERIVED_FROM = "jarvis_lights.wav"
STEREO_FILE = "jarvis_lights_44k_stereo.wav"
RAW_FILE = "jarvis_lights_s16le_16k_mono.raw"
NOISE_FILE = "noise_only.wav"
NOISE_S = 5.0

#: espeak-ng and sox that made the shipped demo.wav (other versions may differ in bytes).
DEMO_TOOLS = {"espeak_ng": "eSpeak NG text-to-speech: 1.51", "sox": "v14.4.2"}

#: Every wake word used (the demo's is "computer"); the false-accept check
#: listens for all of them in every file.
WAKE_WORDS: tuple[str, ...] = tuple(
    sorted({u.wake_word for f in FIXTURES for u in f.utterances if u.wake_word} | {"computer"})
)
