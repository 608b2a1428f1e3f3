from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rtap_trio.errors import ConfigError
from rtap_trio.settings import load_settings

from .forkserver import rtap_command

REPO = Path(__file__).resolve().parents[1]


def write(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    write(
        tmp_path,
        "default",
        "audio:\n  frame_ms: 20\nstt:\n  whispercpp:\n    model_name: base\n    n_threads: 2\n",
    )
    return tmp_path


def test_repo_profiles_load_and_differ() -> None:
    default = load_settings("default", environ={})
    pc2 = load_settings("pc2", environ={})
    main_pc = load_settings("main_pc", environ={})
    assert default.audio.sample_rate == 16000
    assert default.audio.frame_ms == 20
    assert default.audio.ring_buffer_size_ms == 4000
    assert default.output.zmq_pub_port_events == 6552
    assert default.output.zmq_pub_port_transcripts == 6553
    assert default.output.websocket_port == 5802
    assert default.http.port == 8080
    assert default.output.bind_address == "127.0.0.1"
    assert default.stt.engine == "whispercpp"
    assert default.stt.whispercpp.model_name == "base"
    assert pc2.stt.whispercpp.model_name == "tiny.en" and pc2.stt.whispercpp.device == "cpu"
    assert main_pc.stt.whispercpp.device == "cuda"
    # pc2 overrides only stt: everything else is inherited
    assert pc2.vad == default.vad and pc2.output == default.output
    assert pc2.environment == "pc2"


def test_deep_merge_keeps_sibling_keys(profiles: Path) -> None:
    write(profiles, "child", "extends: default\nstt:\n  whispercpp:\n    n_threads: 4\n")
    settings = load_settings("child", directory=profiles, environ={})
    assert settings.stt.whispercpp.n_threads == 4
    assert settings.stt.whispercpp.model_name == "base"  # sibling from the parent survives


def test_grandparent_chain(profiles: Path) -> None:
    write(
        profiles, "mid", "extends: default\nstt:\n  whispercpp:\n    n_threads: 3\n  language: de\n"
    )
    write(profiles, "leaf", "extends: mid\nstt:\n  whispercpp:\n    n_threads: 5\n")
    settings = load_settings("leaf", directory=profiles, environ={})
    assert (settings.stt.whispercpp.n_threads, settings.stt.language) == (5, "de")


def test_substitution_with_default_and_type(profiles: Path) -> None:
    write(
        profiles,
        "sub",
        "extends: default\nhttp:\n  port: ${METRICS_PORT:9100}\n"
        "stt:\n  whispercpp:\n    model_name: ${MODEL}\n  language: 'x-${LANG_SUFFIX:en}'\n",
    )
    settings = load_settings("sub", directory=profiles, environ={"MODEL": "tiny.en"})
    assert settings.http.port == 9100
    assert settings.stt.whispercpp.model_name == "tiny.en"
    assert settings.stt.language == "x-en"
    settings = load_settings("sub", directory=profiles, environ={"MODEL": "m", "METRICS_PORT": "1"})
    assert settings.http.port == 1


def test_substitution_without_default_fails(profiles: Path) -> None:
    write(
        profiles,
        "sub",
        "extends: default\nstt:\n  whispercpp:\n    model_name: ${NOT_SET_ANYWHERE}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_settings("sub", directory=profiles, environ={})
    assert "stt.whispercpp.model_name" in str(info.value)
    assert "NOT_SET_ANYWHERE" in str(info.value)
    assert "sub.yaml" in str(info.value)


def test_environment_overrides(profiles: Path) -> None:
    env = {
        "RTAP_STT__WHISPERCPP__N_THREADS": "6",
        "RTAP_WAKEWORD__KEYWORDS": "[jarvis, alexa]",
        "RTAP_LOG_LEVEL": "debug",
        "AUDIO_DEVICE": "7",
        "RTAP_AUDIO_MOCK": "true",
    }
    settings = load_settings(directory=profiles, environ=env)
    assert settings.stt.whispercpp.n_threads == 6
    assert settings.wakeword.keywords == ["jarvis", "alexa"]
    assert settings.telemetry.log_level == "DEBUG"
    assert settings.audio.device == 7
    assert settings.audio.mock and settings.audio.effective_source == "demo"


def test_environment_selects_profile(profiles: Path) -> None:
    write(profiles, "other", "extends: default\nstt:\n  whispercpp:\n    n_threads: 8\n")
    settings = load_settings(directory=profiles, environ={"RTAP_ENVIRONMENT": "other"})
    assert settings.stt.whispercpp.n_threads == 8


def test_overrides_win_over_environment(profiles: Path) -> None:
    settings = load_settings(
        directory=profiles,
        environ={"RTAP_STT__WHISPERCPP__N_THREADS": "6"},
        overrides={"stt.whispercpp.n_threads": 3},
    )
    assert settings.stt.whispercpp.n_threads == 3


def test_old_flat_stt_names_still_load_with_one_warning(profiles: Path) -> None:
    # Before issue 17 whisper.cpp's keys sat in stt itself: a user's profile
    # written then keeps working, and the pool's keys beside them are untouched.
    write(
        profiles,
        "old",
        "extends: default\nstt:\n  model_name: tiny.en\n  n_threads: 4\n  budget_ms: 900\n",
    )
    settings = load_settings("old", directory=profiles, environ={})
    assert settings.stt.whispercpp.model_name == "tiny.en"
    assert settings.stt.whispercpp.n_threads == 4
    assert settings.stt.budget_ms == 900
    (warning,) = settings.deprecations
    assert "stt.model_name, stt.n_threads" in warning and "stt.whispercpp.n_threads" in warning
    assert "\n" not in warning.strip()


def test_old_flat_stt_names_keep_their_place_among_the_sources(profiles: Path) -> None:
    # An old name is renamed where it is read, so the usual order holds: the
    # environment over the profiles, the command line over both.
    write(profiles, "old", "extends: default\nstt:\n  n_threads: 4\n")
    settings = load_settings(
        "old",
        directory=profiles,
        environ={"RTAP_STT__WHISPERCPP__N_THREADS": "6"},
        overrides={"stt.model_path": "/models/ggml-mine.bin"},
    )
    warnings = settings.deprecations
    assert settings.stt.whispercpp.n_threads == 6
    assert settings.stt.whispercpp.model_path == Path("/models/ggml-mine.bin")
    assert settings.stt.whispercpp.model_name == "base"  # from the parent's section
    assert [w.split(":")[0] for w in warnings] == [str(profiles / "old.yaml"), "command line"]
    settings = load_settings(directory=profiles, environ={"RTAP_STT__N_THREADS": "7"})
    assert settings.stt.whispercpp.n_threads == 7


def test_a_bad_value_under_an_old_name_names_its_file(profiles: Path) -> None:
    write(profiles, "old", "extends: default\nstt:\n  n_threads: 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings("old", directory=profiles, environ={})
    assert str(profiles / "old.yaml") in str(info.value)
    assert info.value.key_path == "stt.whispercpp.n_threads"


def test_old_telemetry_names_of_the_http_port_still_load_with_one_warning(
    profiles: Path,
) -> None:
    # Before issue 17 the HTTP port's keys sat in telemetry (OpenAI under
    # telemetry.port): profiles and variables written then keep working.
    write(
        profiles,
        "old",
        "extends: default\ntelemetry:\n  port: 9100\n  max_connections: 64\n  log_level: DEBUG\n",
    )
    settings = load_settings(
        "old", directory=profiles, environ={"RTAP_TELEMETRY__BIND_ADDRESS": "::1"}
    )
    assert (settings.http.port, settings.http.max_connections) == (9100, 64)
    assert settings.http.bind_address == "::1"
    assert settings.telemetry.log_level == "DEBUG"  # still telemetry's
    profile, variable = settings.deprecations
    assert "telemetry.port, telemetry.max_connections" in profile
    assert "(now http.port, http.max_connections)" in profile
    assert variable.startswith("environment variable RTAP_TELEMETRY__BIND_ADDRESS:")
    assert "\n" not in profile + variable
    settings = load_settings(directory=profiles, environ={}, overrides={"telemetry.enabled": False})
    assert not settings.http.enabled
    assert settings.deprecations[0].startswith("command line: deprecated setting names")


def test_shipped_profiles_use_no_old_names() -> None:
    for profile in ("default", "pc2", "main_pc"):
        assert load_settings(profile, environ={}).deprecations == ()


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (
            "stt:\n  whispercpp:\n    n_threads: 0\n",
            "stt.whispercpp.n_threads",
            "greater than or equal to 1",
        ),
        ("stt:\n  bogus: 1\n", "stt.bogus", "unknown key"),
        ("nonsense_section:\n  a: 1\n", "nonsense_section", "unknown key"),
        ("audio:\n  frame_ms: 25\n", "audio.frame_ms", "10, 20 or 30"),
        ("audio:\n  sample_rate: 44100\n", "audio.sample_rate", "16000"),
        ("audio:\n  source: speaker\n", "audio.source", "mic"),
        ("output:\n  websocket_port: 70000\n", "output.websocket_port", "65535"),
        ("wakeword:\n  keywords: [a, b]\n  sensitivities: [0.5]\n", "wakeword", "1 sensitivities"),
        ("wakeword:\n  sensitivities: [1.5]\n", "wakeword.sensitivities", "outside 0..1"),
        ("stt:\n  whispercpp:\n    device: tpu\n", "stt.whispercpp.device", "cpu"),
        ("stt:\n  engine: vosk\n", "stt.engine", "whispercpp"),
    ],
)
def test_invalid_values_name_file_key_and_reason(
    profiles: Path, text: str, key: str, reason: str
) -> None:
    write(profiles, "bad", "extends: default\n" + text)
    with pytest.raises(ConfigError) as info:
        load_settings("bad", directory=profiles, environ={})
    message = str(info.value)
    assert str(profiles / "bad.yaml") in message
    assert info.value.key_path == key
    assert reason in message


def test_invalid_environment_value_names_the_variable(profiles: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(directory=profiles, environ={"RTAP_VAD__AGGRESSIVENESS": "9"})
    assert "RTAP_VAD__AGGRESSIVENESS" in str(info.value)
    assert info.value.key_path == "vad.aggressiveness"


def test_bad_yaml_missing_profile_and_loop(profiles: Path) -> None:
    write(profiles, "broken", "stt: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings("broken", directory=profiles, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings("absent", directory=profiles, environ={})
    write(profiles, "a", "extends: b\n")
    write(profiles, "b", "extends: a\n")
    with pytest.raises(ConfigError, match="loops"):
        load_settings("a", directory=profiles, environ={})
    write(profiles, "listy", "- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings("listy", directory=profiles, environ={})


#: What the profile says, not what the test run's environment adds (conftest.py
#: sets whisper.cpp's threads for the child services).
_PROFILE_ONLY = {k: v for k, v in os.environ.items() if not k.startswith("RTAP_")}


def test_cli_reports_one_line_and_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"extends: {REPO / 'settings' / 'default.yaml'}\nstt:\n  whispercpp:\n    n_threads: -1\n"
    )
    result = subprocess.run(
        [*rtap_command(), "config", "--profile", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=_PROFILE_ONLY,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(bad) in lines[0] and "stt.whispercpp.n_threads" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_loads_an_old_profile_with_a_one_line_warning(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(f"extends: {REPO / 'settings' / 'default.yaml'}\nstt:\n  n_threads: 3\n")
    result = subprocess.run(
        [*rtap_command(), "config", "--profile", str(old), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=_PROFILE_ONLY,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "deprecated" in lines[0], result.stderr
    assert "stt.n_threads" in lines[0] and "stt.whispercpp.n_threads" in lines[0]
    assert '"n_threads": 3' in result.stdout


def test_cli_config_prints_merged_settings() -> None:
    result = subprocess.run(
        [*rtap_command(), "config", "--profile", "pc2", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert '"model_name": "tiny.en"' in result.stdout
    assert '"zmq_pub_port_events": 6552' in result.stdout
