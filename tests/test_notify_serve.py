"""``python -m bridge serve`` with an smtp section: a STOP over HTTP becomes an email."""

from __future__ import annotations

from pathlib import Path

import requests

from bridge.inbound import sign
from bridge.sim import RedcapSimulator
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, BRIDGE_NUMBER, classic_project, twilio_params
from tests.process import BridgeProcess, free_port, write_config
from tests.smtp_server import smtp_server
from tests.test_serve import wait_for


def test_serve_emails_the_study_team(tmp_path: Path, sim: RedcapSimulator) -> None:
    project = classic_project({"1042": "555-867-5309"})
    token = sim.add_project(project)
    port = free_port()
    with smtp_server(users={"bridge": "pw"}, auth_over_plain=True) as (inbox, smtp_port):
        config = write_config(
            tmp_path / "bridge.yaml", port=port,
            accounts=[{"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}],
            projects=[{
                "name": "heart-study", "twilio": {"numbers": [BRIDGE_NUMBER]},
                "redcap": {"url": sim.api_url, "token": token},
                "phone_field": "mobile", "opt_out_field": "sms_opt_out",
                "timezone": "America/New_York",
                "notify": {"emails": ["team@example.edu"]},
            }],
            extra={"sync": {"poll_seconds": 0.2},
                   "smtp": {"host": "127.0.0.1", "port": smtp_port, "starttls": False,
                            "username": "bridge", "password": "${SMTP_PASSWORD}",
                            "from": "REDCap SMS bridge <redcap-sms@example.edu>"}},
        )
        with BridgeProcess(config, port, env={"SMTP_PASSWORD": "pw"}) as bridge:
            url = bridge.url + "/twilio/sms"
            params = twilio_params("STOP")
            response = requests.post(url, data=params, timeout=5,
                                     headers={"X-Twilio-Signature": sign(url, params,
                                                                         AUTH_TOKEN)})
            assert response.status_code == 200
            assert wait_for(lambda: len(inbox.messages) == 1, timeout=15), bridge.logs()
            assert bridge.stop() == 0
    [received] = inbox.messages
    assert received.message["Subject"] == "[heart-study] Opt-out: record 1042"
    assert received.login == "bridge"
    assert project.value("1042", "sms_opt_out")
