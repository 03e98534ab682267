"""No secret and no full phone number in any log line, at any level.

Besides these two tests, ``tests/conftest.py`` checks every log record of the whole test run
at DEBUG (and every ``serve`` log file) with the same rules, and fails the test that produced
a leak. These two drive every path that logs, on purpose, with every secret configured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from bridge.config import AdminConfig, SmtpConfig
from bridge.inbound import sign
from bridge.sim import Fault, RedcapSimulator, SimProject, make_metadata
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BRIDGE_NUMBER,
    PARTICIPANT,
    SUBACCOUNT_TOKEN,
    Bridge,
    classic_project,
    project_config,
    twilio_params,
)
from tests.faults import wait_for
from tests.log_hygiene import leaks
from tests.process import BridgeProcess, free_port, write_config

ADMIN_TOKEN = "admin-token-7c1e0f4b9d2a"
SMTP_PASSWORD = "smtp-password-e83b5a"
# The participant's number as it may be written anywhere; none may appear in a log.
PARTICIPANT_FORMS = ("+15558675309", "15558675309", "5558675309", "555-867-5309",
                     "(555) 867-5309", "555.867.5309", "867-5309", "8675309")
OTHER = "+12025550143"
OTHER_FORMS = ("+12025550143", "2025550143", "202-555-0143", "555-0143", "5550143")


def assert_clean(text: str, secrets: list[str]) -> None:
    assert leaks(text, secrets) == []
    for secret in secrets:
        assert secret not in text
    for form in PARTICIPANT_FORMS + OTHER_FORMS:
        assert form not in text, form
    # The flows did log about these participants, masked:
    assert "+1555***5309" in text
    assert "+1202***0143" in text


def test_every_logging_path_in_process_at_debug(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    project = classic_project({"1": "555-867-5309", "2": "(555) 867-5309"})
    token = sim.add_project(project)
    date_only = SimProject(title="Dates", metadata=make_metadata("record_id", [
        ("mobile", "contact", "text", ""), ("sms_opt_out", "contact", "text", "date_ymd")]))
    date_only.add_record("1", {"mobile": PARTICIPANT})
    date_token = sim.add_project(date_only)
    wrong_token = "0" * 32
    bridge = make_bridge([
        project_config(sim, token),
        project_config(sim, wrong_token, name="revoked-token", messaging_service_sids=()),
        project_config(sim, date_token, name="date-only", opt_out_checkbox=None,
                       messaging_service_sids=()),
    ])
    bridge.config = bridge.config.__class__(**{
        **bridge.config.__dict__,
        "smtp": SmtpConfig(host="127.0.0.1", from_addr="bridge@example.edu",
                           username="bridge", password=SMTP_PASSWORD),
        "admin": AdminConfig(ADMIN_TOKEN)})

    bridge.text("STOP")
    bridge.text("please stop texting me")
    bridge.text("HELP")
    bridge.text("STOP", OTHER)  # no record has it: unmatched
    bridge.text("STOP", to="+12025550100", service=None)  # nobody's number: unrouted
    params = twilio_params("STOP")
    bridge.post(params)  # a duplicate
    assert bridge.post(twilio_params("STOP"), token="f" * 32).status_code == 403
    malformed = twilio_params("STOP")
    del malformed["MessageSid"], malformed["SmsSid"], malformed["SmsMessageSid"]
    assert bridge.post(malformed).status_code == 400
    assert bridge.post(twilio_params("x" * 70_000)).status_code == 413
    sim.inject(Fault.status(503))
    sim.inject(Fault.reset())
    bridge.drain()
    bridge.text("START")
    bridge.drain()
    statuses = bridge.job_statuses()
    assert "failed" in statuses and "applied" in statuses and "unmatched" in statuses
    conn = bridge.store.read()  # the store breaks: a logged traceback
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("DROP TABLE jobs")
    assert bridge.post(twilio_params("STOP")).status_code == 503

    text = caplog.text  # every record, formatted, with its traceback
    levels = {record.levelno for record in caplog.records}
    assert {logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR} <= levels
    assert_clean(text, [AUTH_TOKEN, SUBACCOUNT_TOKEN, token, date_token, wrong_token,
                        ADMIN_TOKEN, SMTP_PASSWORD])


def test_a_serve_process_log_at_debug_in_json(tmp_path: Path, sim: RedcapSimulator) -> None:
    project = classic_project({"1": "555-867-5309"})
    token = sim.add_project(project)
    wrong_token = "F" * 32
    port = free_port()
    config = write_config(
        tmp_path / "bridge.yaml", port=port,
        accounts=[{"account_sid": ACCOUNT_SID, "auth_token": "${TWILIO_AUTH_TOKEN}"}],
        projects=[{
            "name": name, "twilio": {"numbers": [BRIDGE_NUMBER]},
            "redcap": {"url": sim.api_url, "token": secret},
            "phone_field": "mobile", "opt_out_field": "sms_opt_out",
            "notify": {"emails": ["team@example.edu"]},
        } for name, secret in (("heart-study", "${REDCAP_TOKEN}"),
                               ("revoked-token", "${WRONG_TOKEN}"))],
        extra={"sync": {"poll_seconds": 0.1, "retry_base_seconds": 0.1,
                        "retry_max_seconds": 0.2},
               "smtp": {"host": "127.0.0.1", "port": free_port(), "starttls": False,
                        "username": "bridge", "password": "${SMTP_PASSWORD}",
                        "from": "bridge@example.edu", "timeout_seconds": 1},
               "admin": {"token": "${ADMIN_TOKEN}"}},
    )
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token, "WRONG_TOKEN": wrong_token,
           "SMTP_PASSWORD": SMTP_PASSWORD, "ADMIN_TOKEN": ADMIN_TOKEN,
           "BRIDGE_LOG_LEVEL": "debug", "BRIDGE_LOG_FORMAT": "json"}
    sim.inject(Fault.status(500), times=2)
    with BridgeProcess(config, port, env=env) as bridge:
        url = bridge.url + "/twilio/sms"
        for params, token_used in ((twilio_params("STOP"), AUTH_TOKEN),
                                   (twilio_params("STOP", OTHER), AUTH_TOKEN),
                                   (twilio_params("STOP", to="+12025550100"), AUTH_TOKEN),
                                   (twilio_params("STOP"), "f" * 32)):
            requests.post(url, data=params, timeout=5,
                          headers={"X-Twilio-Signature": sign(url, params, token_used)})
        assert wait_for(lambda: project.value("1", "sms_opt_out") != "")
        assert wait_for(lambda: "You do not have permissions" in bridge.logs())
        assert bridge.stop() == 0
    lines = bridge.logs().splitlines()
    entries = [json.loads(line) for line in lines]
    assert {"info", "warning"} <= {entry["level"] for entry in entries}
    assert_clean(bridge.logs(), [AUTH_TOKEN, token, wrong_token, ADMIN_TOKEN, SMTP_PASSWORD])
