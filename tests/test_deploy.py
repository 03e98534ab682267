"""The shipped deployment files: the systemd unit and the Dockerfile.

Neither can run here (no systemd as PID 1, no Docker engine), so what can be checked is:
the unit parses cleanly with ``systemd-analyze verify`` and starts the documented command; the
Dockerfile's instructions are the intended ones, the files it copies exist, and its health
check and command (``serve`` with ``BRIDGE_CONFIG``, no ``--config``) work against a real
bridge. ``docker build`` itself is not exercised.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import requests

from bridge.sim import RedcapSimulator
from tests.conftest import AUTH_TOKEN, classic_project
from tests.process import ROOT, free_port
from tests.test_serve import serve_config, wait_for

UNIT = ROOT / "config" / "bridge.service"
DOCKERFILE = ROOT / "Dockerfile"
EXEC_START = ("/opt/redcap-sms-bridge/.venv/bin/python -m bridge serve"
              " --config /etc/redcap-sms-bridge/config.yaml")


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_runs_serve_as_a_dedicated_user_with_hardening() -> None:
    settings = unit_settings()
    assert settings["ExecStart"] == [EXEC_START]
    assert settings["User"] == ["redcap-sms-bridge"]
    assert settings["EnvironmentFile"] == ["/etc/redcap-sms-bridge/bridge.env"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["RestartPreventExitStatus"] == ["2"]  # a config error: fix, not restart
    for key, value in {"NoNewPrivileges": "true", "ProtectSystem": "strict",
                       "PrivateTmp": "true", "ProtectHome": "true",
                       "ReadWritePaths": "/var/lib/redcap-sms-bridge",
                       "StateDirectory": "redcap-sms-bridge", "CapabilityBoundingSet": ""}.items():
        assert settings[key] == [value], key


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Every directive is known and every value parses; the venv path is swapped for ours."""
    verify = shutil.which("systemd-analyze")
    assert verify, "systemd-analyze is part of this machine's image; the check depends on it"
    unit = tmp_path / "redcap-sms-bridge.service"
    unit.write_text(UNIT.read_text().replace("/opt/redcap-sms-bridge/.venv/bin/python",
                                             sys.executable))
    result = subprocess.run([verify, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert result.stdout + result.stderr == ""

    # The check does catch mistakes (it only warns, so the output is what counts).
    unit.write_text(unit.read_text().replace("NoNewPrivileges=true", "NoNewPrivileges=maybe"))
    result = subprocess.run([verify, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert "Failed to parse boolean value" in result.stdout + result.stderr


SOCKET_UNIT = ROOT / "config" / "bridge.socket"


def test_socket_unit_passes_verify_with_the_service_and_listens_where_the_proxy_expects(
        tmp_path: Path) -> None:
    """The optional socket unit, installed under the service's name, parses with it; it
    listens on the documented loopback port, as one socket for one process."""
    settings: dict[str, list[str]] = {}
    for line in SOCKET_UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["ListenStream"] == ["127.0.0.1:8080"]
    assert settings["Accept"] == ["no"]
    verify = shutil.which("systemd-analyze")
    assert verify
    (tmp_path / "redcap-sms-bridge.service").write_text(UNIT.read_text().replace(
        "/opt/redcap-sms-bridge/.venv/bin/python", sys.executable))
    socket_unit = tmp_path / "redcap-sms-bridge.socket"
    socket_unit.write_text(SOCKET_UNIT.read_text())
    result = subprocess.run([verify, "verify", str(socket_unit)], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout + result.stderr == ""
    socket_unit.write_text(SOCKET_UNIT.read_text().replace("Accept=no", "Accept=perhaps"))
    result = subprocess.run([verify, "verify", str(socket_unit)], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert "Failed to parse boolean value, ignoring: perhaps" in result.stdout + result.stderr
    # The pairing is by name: without the service beside it the socket has nothing to start.
    (tmp_path / "redcap-sms-bridge.service").unlink()
    socket_unit.write_text(SOCKET_UNIT.read_text())
    result = subprocess.run([verify, "verify", str(socket_unit)], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert "socket cannot be started" in result.stdout + result.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0], line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_dockerfile_is_the_intended_image() -> None:
    steps = dockerfile_instructions()
    first = {}
    for instruction, argument in steps:
        first.setdefault(instruction, argument)
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert first["EXPOSE"] == "8080"
    assert json.loads(first["VOLUME"]) == ["/var/lib/redcap-sms-bridge"]
    assert "BRIDGE_CONFIG=/etc/redcap-sms-bridge/config.yaml" in first["ENV"]
    assert json.loads(first["CMD"]) == ["python", "-m", "bridge", "serve"]
    assert "pip install -r requirements.txt" in [a for i, a in steps if i == "RUN"]
    user = first["USER"]
    assert user not in ("root", "0") and f"useradd --system --gid {user}" in first["RUN"]
    # USER comes after every RUN, so nothing at run time has root rights.
    positions = [i for i, (instruction, _) in enumerate(steps) if instruction in ("RUN", "USER")]
    assert steps[positions[-1]][0] == "USER"
    for instruction, argument in steps:
        if instruction == "COPY":
            *sources, _target = argument.split()
            for source in sources:
                assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_dockerfile_command_and_healthcheck_work(tmp_path: Path, sim: RedcapSimulator) -> None:
    """The container runs ``serve`` with BRIDGE_CONFIG only; its health check must pass."""
    token = sim.add_project(classic_project())
    port = free_port()
    config = serve_config(tmp_path, sim, token, port)
    healthcheck = next(a for i, a in dockerfile_instructions() if i == "HEALTHCHECK")
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert probe[0] == "python" and "http://127.0.0.1:8080/healthz" in probe[2]
    probe = [sys.executable, probe[1], probe[2].replace(":8080/", f":{port}/")]
    command = json.loads(next(a for i, a in dockerfile_instructions() if i == "CMD"))
    assert command[0] == "python"

    env = {**os.environ, "BRIDGE_CONFIG": str(config), "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "REDCAP_TOKEN": token}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, *command[1:]], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            assert wait_for(lambda: subprocess.run(probe, capture_output=True,
                                                   timeout=30).returncode == 0), log.read_text()
            assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode != 0  # stopped
    assert f"listening on http://127.0.0.1:{port}" in log.read_text()
