"""The schema of the speech path: audio in, wake word, VAD, preprocessing, STT,
language, and what runs them (queues, sessions, the supervisor).

Half of the settings schema (the other half, what the service serves and how
it is watched, is ``serving.py``); split so that each stays readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from .section import Section

__all__ = [
    "AudioSettings",
    "LanguageSettings",
    "PipelineSettings",
    "PreprocessSettings",
    "RemoteSttSettings",
    "SessionsSettings",
    "SttSettings",
    "SupervisorSettings",
    "TurnSettings",
    "VadSettings",
    "WakewordSettings",
    "WhisperCppSettings",
]


class AudioSettings(Section):
    source: str = Field("mic", description="mic | demo | file:PATH | none")
    device: str | int | None = Field(None, description="input device name or index (mic)")
    mock: bool = Field(False, description="true plays the built-in demo instead of the mic")
    sample_rate: Literal[16000] = 16000
    frame_ms: Literal[10, 20, 30] = 20
    ring_buffer_size_ms: int = Field(4000, ge=500, le=60_000)
    capture_queue_frames: int = Field(100, ge=2, le=10_000)
    realtime: bool = Field(True, description="pace file/demo sources at real time")
    loop_demo: bool = Field(True, description="repeat the demo recording")
    loop_gap_ms: int = Field(3000, ge=0, le=60_000)
    # Unix time at which a paced file or demo source is at its first sample, as
    # if it had been live since: two services given the same start_at hear the
    # same speech at the same moment (a failover drill), and one started later
    # joins where a live source would be. None: play from the start, now.
    start_at: float | None = Field(None, ge=0)

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value in ("mic", "demo", "none") or (value.startswith("file:") and len(value) > 5):
            return value
        raise ValueError("must be 'mic', 'demo', 'file:PATH' or 'none'")

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * self.frame_ms // 1000

    @property
    def effective_source(self) -> str:
        return "demo" if self.mock else self.source


class WakewordSettings(Section):
    enabled: bool = True
    keywords: list[str] = Field(default_factory=lambda: ["computer"])
    keyword_paths: list[Path] = Field(default_factory=list)
    sensitivities: list[float] = Field(default_factory=list)
    listen_timeout_ms: int = Field(5000, ge=100, le=60_000)

    @field_validator("sensitivities")
    @classmethod
    def _in_unit_range(cls, values: list[float]) -> list[float]:
        for value in values:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"sensitivity {value} is outside 0..1")
        return values

    @model_validator(mode="after")
    def _one_sensitivity_each(self) -> WakewordSettings:
        if self.enabled and not (self.keywords or self.keyword_paths):
            raise ValueError("wake word is enabled but no keywords or keyword_paths are set")
        count = len(self.keywords) + len(self.keyword_paths)
        if self.sensitivities and len(self.sensitivities) != count:
            raise ValueError(f"{len(self.sensitivities)} sensitivities for {count} keywords")
        return self

    @property
    def keyword_sensitivities(self) -> list[float]:
        count = len(self.keywords) + len(self.keyword_paths)
        return list(self.sensitivities) or [0.5] * count


class VadSettings(Section):
    # webrtcvad (a GMM, microseconds per frame) or Silero VAD (a small network
    # on onnxruntime, ~0.09 ms per 20 ms frame, +50 MB of runtime); compared
    # at 20/10/0 dB SNR in docs/performance.md.
    engine: Literal["webrtc", "silero"] = "webrtc"
    aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad 0..3")
    silero_threshold: float = Field(
        0.5, ge=0.05, le=0.95, description="Silero speech probability that starts speech"
    )
    speech_start_frames: int = Field(3, ge=1, le=50)
    hangover_ms: int = Field(600, ge=60, le=5000)
    max_utterance_ms: int = Field(15_000, ge=500, le=30_000)
    min_utterance_ms: int = Field(200, ge=0, le=5000)
    pre_roll_ms: int = Field(300, ge=0, le=2000)
    # Early transcription: after this much silence the utterance so far is
    # transcribed speculatively; if the silence holds, that is the transcript.
    early_ms: int = Field(
        150, ge=0, le=5000, description="0 (or hangover_ms and above) disables it"
    )
    # Sentence-aware endpointing, on the early transcript: one that clearly
    # goes on ("and", "the", a comma) waits up to max_hangover_ms; one that ends
    # a sentence may end the utterance once the silence reaches min_hangover_ms.
    # That second half is off by default (min = hangover): Whisper ends a
    # clause with a full stop when it hears a pause, and on commands with
    # 0.35-0.55 s pauses inside them (the paused_sentences fixture) a
    # min_hangover_ms of 450 (RealtimeSTT's end-of-sentence pause) ended 1 or 2
    # of 5 at their pause on pc2 (how many depends on how soon the early
    # transcript is back), where the 600 ms hangover ends none.
    # Both bounds apply as far as they are on their side of hangover_ms.
    sentence_endpointing: bool = True
    min_hangover_ms: int = Field(600, ge=20, le=5000)
    max_hangover_ms: int = Field(1200, ge=60, le=10_000)


class TurnSettings(Section):
    """The end-of-turn detector: a model that hears whether the speaker is done
    (rtap_trio/turn). ``none`` leaves ending an utterance to the silence timer
    (``vad``), as before; ``smart_turn`` is pipecat's Smart Turn v3.2 on
    onnxruntime (about 50 ms of one core per call, at pauses only)."""

    engine: Literal["none", "smart_turn"] = Field("none", description="none | smart_turn")
    # The model's probability that the turn is over; above it, "complete".
    # Smart Turn's own cut-off is 0.5.
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    # How long a pause must be before the turn so far is judged (issue 18:
    # try 100-200 ms); judged at pauses only, never per frame. 100 rather
    # than 150: its answer (90-130 ms on pc2) is then back about when the
    # early transcription is due (vad.early_ms), and no more turns were cut in
    # six runs; at 50 one of the paused sentences was (docs/performance.md).
    pause_ms: int = Field(100, ge=20, le=5000)
    # Default: smart-turn-v3.2-cpu.onnx in the model cache ($RTAP_MODEL_CACHE),
    # put there by `python -m rtap_trio models fetch smart-turn` and checked
    # against its pinned sha256 at load. A path given here is loaded as it is.
    model_path: Path | None = None

    @field_validator("model_path", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value


class PreprocessSettings(Section):
    highpass_hz: float = Field(80.0, ge=0.0, le=1000.0, description="0 disables")
    normalize: bool = True
    target_peak_dbfs: float = Field(-3.0, ge=-40.0, le=0.0)
    max_gain_db: float = Field(30.0, ge=0.0, le=60.0)


class WhisperCppSettings(Section):
    """The whisper.cpp engine (``stt.engine: whispercpp``): which model, where, how."""

    model_name: str = "base"
    model_path: Path | None = None
    model_cache_dir: Path | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    # Weight type of the converted model. q8_0 (int8 blocks, as whisper.cpp's
    # quantize tool makes them) is 45 % smaller and faster on CPU; q5_0 is 63 %
    # smaller, slower on CPU and garbled a German command (docs/cuda.md); f32 is
    # not offered: whisper.cpp 1.8.5 aborts on f32 conv weights (GGML_ASSERT).
    compute_dtype: Literal["f16", "q8_0", "q5_0"] = "q8_0"
    n_threads: int = Field(2, ge=1, le=64)
    # whisper.cpp encodes a 30 s window (1500 frames of 20 ms) whatever the
    # utterance length; encoding only the utterance is the largest CPU saving,
    # but a window close to the speech makes Whisper repeat itself or loop
    # (seen with +100 frames on 2-3 s commands), hence a floor: 768 kept the
    # words of tiny.en on every fixture, while base flipped a Spanish command
    # at any window under 30 s, so "auto" is pc2's choice, not the default
    # (docs/cuda.md, "CPU speed").
    audio_ctx: Literal["auto"] | int = Field(
        0, description="0 (full 30 s window), auto (sized to the utterance), or frames"
    )
    audio_ctx_floor: int = Field(768, ge=1, le=1500)
    # With "auto", a final is decoded first in a window with this smaller floor,
    # once and at a tighter token cap, and again as above only if that decode
    # looped (filled the cap or repeats itself past stt.max_compression_ratio):
    # tiny.en at 512 frames took 29 % less CPU a final, the same words on the
    # fixtures, the corpus and 48 held-out commands but for punctuation and one
    # word in 340, and looped on 3 of 280 cuts of the fixtures (issue 18). 0: off.
    audio_ctx_first_floor: int = Field(0, ge=0, le=1500)
    audio_ctx_margin: int = Field(64, ge=0, le=1500)
    # Partial transcripts are guesses the next one replaces, so they get a
    # smaller window than finals, sized to the utterance above this floor,
    # whatever audio_ctx says. tiny.en, one thread, every 0.5 s of jfk.wav and
    # the English fixtures: 768 frames ~600 ms CPU a partial, 384 ~300 ms, 256
    # ~200 ms but looping on 2-4 s of speech ("computer computer computer..."),
    # which a token cap bounds and the stage trims; 384 looped no more than 768.
    partial_audio_ctx_floor: int = Field(384, ge=1, le=1500)
    # ... and an utterance's first partials (at most 1.6 s of audio: the
    # pre-roll and about a second of speech) this one: tiny.en on one thread
    # wrote words from 0.6 s of the fixtures' speech in 6 of 8 at 128 frames,
    # 1-3 of 8 at 192-384, at ~110 ms of CPU instead of ~290 (issue 18).
    first_partial_audio_ctx_floor: int = Field(128, ge=1, le=1500)
    # Partials are decoded on this many threads (finals on n_threads): on two
    # cores shared with finals and other sessions, ggml's second thread spins
    # while it waits for a core, and a partial counted 330-450 ms of CPU (up to
    # seconds) against ~290 ms on one thread (384 frames, tiny.en).
    partial_threads: int = Field(1, ge=1, le=64)
    flash_attn: bool = Field(True, description="whisper.cpp flash attention")
    # language auto: detect the language on the encoder pass that transcribes
    # (greedy, through libwhisper; see stt/whispercpp/direct.py) instead of
    # whisper_full's extra encoder pass. With audio_ctx auto too, one pass in
    # the smaller window: base took 960-981 ms a command against 2069-2128 in
    # the full window, the default profile's end of speech -> transcript p50
    # 2254 -> 1167 ms, but the eval sets' WER rose 2-3 points (docs/performance.md).
    # A decode that loops there, or a language detected with p < 0.5, is done
    # again in the full window; audio_ctx_first_floor is not used on this path.
    # CPU only: on a GPU whisper_full runs (docs/cuda.md, 2026-12-04).
    one_pass_language: bool = True

    @field_validator("audio_ctx")
    @classmethod
    def _ctx_in_range(cls, value: Literal["auto"] | int) -> Literal["auto"] | int:
        if value != "auto" and not 0 <= value <= 1500:
            raise ValueError("must be 'auto', 0 (full window) or 1..1500 encoder frames")
        return value

    @field_validator("model_path", "model_cache_dir", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # "${RTAP_MODEL_CACHE:}" substitutes to "" when unset; that means "not set".
        return None if value == "" else value


class RemoteSttSettings(Section):
    """The remote engine (``stt.engine: remote``): an OpenAI-compatible
    ``POST {url}/audio/transcriptions`` on another machine (another RTAP, speaches,
    vLLM), one utterance per request (rtap_trio/stt/remote)."""

    # Base URLs with their API prefix, e.g. http://main-pc:8080/v1; several are
    # taken in turn (round robin), and the next one when one fails.
    urls: list[str] = Field(default_factory=list)
    # Sent as "Authorization: Bearer <token>" (the remote's security.token);
    # secret, as security.token is: `config` and logs print it as asterisks.
    token: SecretStr | None = None
    # The form's model field. RTAP accepts any name ("whisper-1" as OpenAI's
    # clients send); speaches and vLLM want the id their /v1/models lists.
    model: str = "whisper-1"
    # What the remote can transcribe: OpenAI's API does not say (/v1/models
    # lists ids only), so the settings do. More than one: it detects among them.
    languages: list[str] = Field(default_factory=lambda: ["en"])
    # One request's limit, within stt.budget_ms. main_pc's GPU answers a command
    # in ~23 ms plus the network (docs/cuda.md); a remote slower than this is
    # as good as gone, and the fallback should have the rest of the budget.
    timeout_ms: int = Field(2000, ge=50, le=300_000)
    # Kept out of the remote's share of the budget for the local fallback:
    # tiny.en on pc2's two cores takes ~0.6 s for a command (docs/scaling.md).
    fallback_reserve_ms: int = Field(2000, ge=0, le=300_000)
    # The circuit breaker: open after this many failed requests in a row (every
    # utterance then goes to the fallback at once), probe again after
    # retry_initial_ms, doubling up to retry_max_ms while probes fail.
    failures_to_open: int = Field(3, ge=1, le=1000)
    retry_initial_ms: int = Field(1000, ge=10, le=600_000)
    retry_max_ms: int = Field(30_000, ge=10, le=3_600_000)

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value.startswith(("http://", "https://")) or len(value.split("//", 1)[1]) < 1:
                raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return [value.rstrip("/") for value in values]

    @field_validator("token", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value


class SttSettings(Section):
    """Speech to text: the engine pool (scheduling, budgets, what is kept) and,
    in a section of its own, the engine ``engine`` names."""

    engine: Literal["whispercpp", "remote"] = Field("whispercpp", description="the STT engine")
    # A local engine that transcribes what the engine could not (a remote that
    # failed, timed out or whose circuit is open): loaded at start, with its
    # own section's settings (stt.whispercpp). "none": such utterances are lost.
    fallback: Literal["none", "whispercpp"] = Field("none", description="none | whispercpp")
    language: str = Field("auto", description="auto, or a language code such as en")
    workers: int = Field(1, ge=1, le=8, description="engines, each one utterance at a time")
    budget_ms: int = Field(15_000, ge=100, le=300_000)
    warmup: bool = True
    # Partial transcripts while a person speaks: the audio so far, every this
    # often, when an engine is free (they never delay a final), published as
    # transcript_partial events with a stable prefix (LocalAgreement-2). Worth
    # it where the model is fast: pc2's tiny.en, main_pc's GPU.
    partials: bool = False
    partial_interval_ms: int = Field(500, ge=100, le=10_000)
    # ... the first of an utterance this long after its first voiced frame
    # (the share never holds it back), and until one has words the next as
    # soon as the engine is free, within the share: Whisper writes nothing of
    # a command's first half second, and a partial asked then was wasted work
    # (issue 18: the first partial 1430 ms after speech start at 500 ms).
    first_partial_ms: int = Field(600, ge=100, le=10_000)
    # ... and no more often than keeps one session's partials within this
    # share of one core: a partial is asked for only while the CPU its engine
    # spent on the utterance's partials so far is under this share of the
    # speech heard. With tiny.en a partial costs ~300 ms of CPU, so at 0.3 one
    # comes about every second of speech (the first after the interval); a
    # partial every 500 ms took 101-116 % of a core (issue 18).
    partial_core_share: float = Field(0.3, gt=0.0, le=8.0)
    # Every session's vocabulary prompt unless it brings its own: names and
    # jargon Whisper should spell so (whisper.cpp's initial_prompt; at most 224
    # tokens). docs/performance.md: what it did for invented names.
    prompt: str = Field("", max_length=4000, description="default vocabulary prompt")
    # Word times on every final unless a session says otherwise: a second
    # whisper.cpp context (DTW alignment) and more time per final (docs/performance.md).
    words: bool = Field(False, description="word start/end times on finals")
    # Whisper's own probability that an utterance held no speech; over this the
    # transcript is discarded (an event, not a transcript). Whisper itself only
    # drops text when this is over 0.6 and its words are also unlikely. Measured
    # with base: 0.00-0.19 on every utterance of the fixtures and the shared
    # corpus, 0.34-0.59 on what it made of sox's white and brown noise ("1/2").
    no_speech_threshold: float = Field(0.25, ge=0.0, le=1.0, description="1 disables")
    # A transcript whose zlib compression ratio is over this repeats itself like
    # a looping decode (openai-whisper's 2.4): discarded as "repetition", and
    # the one-pass decoder stops there instead of decoding to its budget. What
    # base wrote for generated music were loops at 13.9-17.9 (decoded to the
    # budget), 3 of 7 under the no-speech threshold; speech of the fixtures and
    # the corpus was 0.50-1.36 (rtap_trio/stt/hallucination.py).
    max_compression_ratio: float = Field(2.4, ge=0.0, le=100.0, description="0 disables")
    whispercpp: WhisperCppSettings = WhisperCppSettings()
    remote: RemoteSttSettings = RemoteSttSettings()

    @field_validator("fallback", mode="before")
    @classmethod
    def _null_is_none(cls, value: object) -> object:
        return "none" if value is None else value

    @model_validator(mode="after")
    def _engine_settings(self) -> SttSettings:
        if self.engine == "remote" and not self.remote.urls:
            raise ValueError("stt.engine is remote but stt.remote.urls is empty")
        if self.fallback == self.engine:
            raise ValueError(f"stt.fallback {self.fallback} is stt.engine itself")
        return self


class LanguageSettings(Section):
    enabled: bool = True
    sentiment_enabled: bool = True
    lid_model_path: Path | None = None
    sentiment_model_path: Path | None = None
    budget_ms: int = Field(200, ge=1, le=10_000)
    # fastText's confidence in the language of a transcript; under this the
    # transcript is discarded (an event). Off by default: on one-word commands
    # it cannot tell speech from noise ("What?" 0.12, "Hmm." 0.18, the noise's
    # "1/2" 0.13), so the no-speech probability does that job.
    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="0 disables")


class PipelineSettings(Section):
    utterance_queue_size: int = Field(4, ge=1, le=100)
    output_queue_size: int = Field(256, ge=1, le=100_000)
    frontend_budget_ms: float = Field(10.0, gt=0, le=1000)
    emit_budget_ms: int = Field(500, ge=1, le=10_000)


class SessionsSettings(Section):
    max: int = Field(16, ge=1, le=1000, description="concurrent sessions, the local one included")
    idle_timeout_s: float = Field(30.0, gt=0, le=86_400, description="a silent client is closed")
    max_in_flight: int = Field(
        1, ge=1, le=16, description="utterances of one session in STT at once"
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="on SIGTERM, how long network sessions get to reach a pause (a stream) "
        "or their end (an upload) before the service stops them (0: at once)",
    )


class SupervisorSettings(Section):
    max_restarts: int = Field(5, ge=0, le=1000)
    window_s: float = Field(60.0, gt=0, le=86_400)
    backoff_initial_s: float = Field(0.1, ge=0, le=60)
    backoff_max_s: float = Field(5.0, ge=0, le=600)
    shutdown_grace_s: float = Field(2.0, gt=0, le=60)
    # A port still held at start (the previous process of a restart is still
    # closing): retried with backoff this long before the start fails (exit 5).
    bind_retry_s: float = Field(3.0, ge=0, le=300)
