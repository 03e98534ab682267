"""``python -m bridge serve`` as a real process: a STOP over HTTP reaches REDCap; clean stop."""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from bridge.inbound import sign
from bridge.sim import RedcapSimulator
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BRIDGE_NUMBER,
    PARTICIPANT,
    classic_project,
    twilio_params,
)
from tests.process import BridgeProcess, free_port, heart_study_config


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def serve_config(tmp_path: Path, sim: RedcapSimulator, token: str, port: int) -> Path:
    return heart_study_config(tmp_path, sim.api_url, port, account_sid=ACCOUNT_SID,
                              number=BRIDGE_NUMBER,
                              sync={"poll_seconds": 0.2})


def test_serve_applies_a_stop_and_start_and_stops_cleanly(tmp_path: Path,
                                                          sim: RedcapSimulator) -> None:
    project = classic_project({"1": "555-867-5309", "2": "(555) 867-5309"})
    token = sim.add_project(project)
    port = free_port()
    config = serve_config(tmp_path, sim, token, port)
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
    with BridgeProcess(config, port, env=env) as bridge:
        url = bridge.url + "/twilio/sms"
        params = twilio_params("STOP")
        response = requests.post(url, data=params, timeout=5,
                                 headers={"X-Twilio-Signature": sign(url, params, AUTH_TOKEN)})
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/xml")
        assert wait_for(lambda: project.value("1", "sms_opt_out") != ""
                        and project.value("2", "sms_opt_out") != "")
        params = twilio_params("START")
        requests.post(url, data=params, timeout=5,
                      headers={"X-Twilio-Signature": sign(url, params, AUTH_TOKEN)})
        assert wait_for(lambda: project.value("1", "sms_opt_out") == "")
        assert requests.get(bridge.url + "/readyz", timeout=5).status_code == 200
        bridge.signal(signal.SIGTERM)
        assert bridge.wait() == 0
    logs = bridge.logs()
    assert f"listening on http://127.0.0.1:{port}" in logs
    assert "stopped" in logs
    assert PARTICIPANT not in logs and "8675309" not in logs
    assert token not in logs and AUTH_TOKEN not in logs


def test_a_second_process_on_the_same_store_refuses_to_start(tmp_path: Path,
                                                             sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    port = free_port()
    config = serve_config(tmp_path, sim, token, port)
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
    with BridgeProcess(config, port, env=env):
        second = BridgeProcess(config, free_port(), env=env,
                               log_path=tmp_path / "second.log")
        try:
            second.start(timeout=10)
        except RuntimeError as exc:
            assert "another bridge process" in str(exc)
        else:
            raise AssertionError("second process started")


def test_a_port_in_use_is_one_clear_line_not_a_traceback(tmp_path: Path,
                                                        sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = serve_config(tmp_path, sim, token, port)
        bridge = BridgeProcess(config, free_port(),  # polls elsewhere: the port is not its own
                               env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token})
        with pytest.raises(RuntimeError, match="bridge exited with 1"):
            bridge.start(timeout=20)
    logs = bridge.logs()
    assert f"error: {config}: cannot listen on 127.0.0.1:{port} (server.host, server.port):" \
        in logs
    assert "redcap-sms-bridge.socket" in logs and "Traceback" not in logs


def test_a_store_folder_that_cannot_be_made_is_one_clear_line(tmp_path: Path,
                                                              sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    port = free_port()
    config = serve_config(tmp_path, sim, token, port)
    (tmp_path / "afile").write_text("not a folder\n")
    config.write_text(config.read_text().replace(str(tmp_path / "bridge.db"),
                                                 str(tmp_path / "afile" / "bridge.db")))
    bridge = BridgeProcess(config, port,
                           env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token})
    with pytest.raises(RuntimeError, match="bridge exited with 1"):
        bridge.start(timeout=20)
    logs = bridge.logs()
    assert f"error: cannot open store {tmp_path / 'afile' / 'bridge.db'}:" in logs
    assert "(see storage.path)" in logs and "Traceback" not in logs


def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("storage: {path: x.db}\ntwilio: {accounts: []}\nprojects: []\n")
    bridge = BridgeProcess(config, free_port())
    try:
        bridge.start(timeout=10)
    except RuntimeError as exc:
        assert "exited with 2" in str(exc)
        assert "bad.yaml" in str(exc)
        assert "twilio.accounts" in str(exc)
    else:
        raise AssertionError("started with a bad config")


def test_a_skipped_tick_during_a_long_drain_is_not_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    import bridge.service  # noqa: F401 - installs the filter

    scheduler_log = logging.getLogger("apscheduler.scheduler")
    with caplog.at_level(logging.WARNING, logger="apscheduler"):
        scheduler_log.warning('Execution of job "%s" skipped: maximum number of running '
                              "instances reached (%d)", "Worker.tick", 1)
        scheduler_log.warning("Run time of job %s was missed by %s", "Worker.tick", "0:00:02")
    assert [record.getMessage() for record in caplog.records] == [
        "Run time of job Worker.tick was missed by 0:00:02"]
