"""Shared fixtures: a REDCap simulator over real HTTP, configs, and an in-process bridge.

Twilio requests are signed with twilio's own ``RequestValidator``, exactly as Twilio signs.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from hypothesis import settings
from werkzeug.test import TestResponse

from bridge.config import (
    Config,
    ProjectConfig,
    RedcapTarget,
    ServerConfig,
    StorageConfig,
    SyncConfig,
    TwilioAccount,
)
from bridge.inbound import sign
from bridge.intake import Intake
from bridge.sim import RedcapSimulator, SimProject, make_metadata
from bridge.store import Store
from bridge.sync import Worker
from bridge.web import create_app
from tests import process
from tests.log_hygiene import SECRETS, leaks

# Machines here are shared and noisy: speed is measured in bench/, never asserted in tests,
# so hypothesis' per-example deadline (a timing assertion) is off.
settings.register_profile("bridge", deadline=None)
settings.load_profile("bridge")

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
SUBACCOUNT_SID = "AC" + "2" * 32
SUBACCOUNT_TOKEN = "fedcba9876543210fedcba9876543210"
SERVICE_SID = "MG" + "3" * 32
BRIDGE_NUMBER = "+18057166646"
PUBLIC_URL = "https://bridge.example.edu"
WEBHOOK_URL = PUBLIC_URL + "/twilio/sms"
PARTICIPANT = "+15558675309"
SECRETS.update({AUTH_TOKEN, SUBACCOUNT_TOKEN})


def standard_metadata() -> list[dict]:
    return make_metadata("record_id", [
        ("mobile", "contact", "text", ""),
        ("sms_opt_out", "contact", "text", "datetime_seconds_ymd"),
        ("sms_opted_out", "contact", "checkbox", "", "1, Opted out"),
        ("email", "contact", "text", "email"),
    ])


def classic_project(records: dict[str, str] | None = None) -> SimProject:
    """A classic project; ``records`` maps record ID -> phone value as stored."""
    project = SimProject(title="Heart study", metadata=standard_metadata())
    for record, phone in (records or {}).items():
        project.add_record(record, {"mobile": phone})
    return project


def twilio_params(body: str, sender: str = PARTICIPANT, *, to: str = BRIDGE_NUMBER,
                  sid: str | None = None, account: str = ACCOUNT_SID,
                  service: str | None = SERVICE_SID, opt_out_type: str | None = None,
                  ) -> dict[str, str]:
    """The form Twilio posts for an inbound SMS."""
    message_sid = sid or "SM" + uuid.uuid4().hex
    params = {
        "ToCountry": "US", "ToState": "CA", "SmsMessageSid": message_sid, "NumMedia": "0",
        "ToCity": "", "FromZip": "", "SmsSid": message_sid, "FromState": "", "SmsStatus":
        "received", "FromCity": "", "Body": body, "FromCountry": "US", "To": to,
        "ToZip": "", "NumSegments": "1", "MessageSid": message_sid, "AccountSid": account,
        "From": sender, "ApiVersion": "2010-04-01",
    }
    if service:
        params["MessagingServiceSid"] = service
    if opt_out_type:
        params["OptOutType"] = opt_out_type
    return params


def project_config(sim: RedcapSimulator, token: str, **overrides: object) -> ProjectConfig:
    values: dict = {
        "name": "heart-study", "source": Path("test.yaml"),
        "redcap": RedcapTarget(sim.api_url, token), "phone_field": "mobile",
        "opt_out_field": "sms_opt_out", "opt_out_checkbox": "sms_opted_out",
        "numbers": (BRIDGE_NUMBER,), "messaging_service_sids": (SERVICE_SID,),
        "timezone": "America/New_York", "default_region": "US",
    }
    values.update(overrides)
    return ProjectConfig(**values)


def make_config(tmp_path: Path, projects: list[ProjectConfig], **sync: object) -> Config:
    settings = {"retry_base_seconds": 0.0, "retry_max_seconds": 0.0, "poll_seconds": 0.2,
                "request_timeout_seconds": 5.0}
    settings.update(sync)
    return Config(
        path=tmp_path / "bridge.yaml",
        storage=StorageConfig(path=tmp_path / "bridge.db"),
        twilio_accounts=(TwilioAccount(ACCOUNT_SID, AUTH_TOKEN),
                         TwilioAccount(SUBACCOUNT_SID, SUBACCOUNT_TOKEN)),
        projects=tuple(projects),
        server=ServerConfig(public_url=PUBLIC_URL),
        sync=SyncConfig(**settings),
    )


class Bridge:
    """The bridge in-process: the real app, store and worker, driven step by step."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store(config.storage.path)
        self.intake = Intake(config, self.store)
        self.worker = Worker(config, self.store)
        self.app = create_app(config, self.store, self.intake)
        self.client: FlaskClient = self.app.test_client()

    def post(self, params: dict[str, str], *, token: str = AUTH_TOKEN,
             url: str = WEBHOOK_URL, signature: str | None = None) -> TestResponse:
        headers = {"X-Twilio-Signature": signature if signature is not None
                   else sign(url, params, token)}
        return self.client.post("/twilio/sms", data=params, headers=headers,
                                base_url=PUBLIC_URL)

    def text(self, body: str, sender: str = PARTICIPANT, **kwargs: object) -> TestResponse:
        response = self.post(twilio_params(body, sender, **kwargs))  # type: ignore[arg-type]
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    def drain(self) -> None:
        self.worker.drain()

    def restart(self) -> Bridge:
        """A new process on the same store (after a crash, nothing in memory survives)."""
        self.store.close()
        fresh = Bridge(self.config)
        fresh.store.recover_in_flight()
        return fresh

    def job_statuses(self) -> list[str]:
        rows = self.store.read().execute("SELECT status FROM jobs ORDER BY id").fetchall()
        return [row["status"] for row in rows]


class LeakCatcher(logging.Handler):
    """Checks every log record of the test run for secrets and full phone numbers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    # Loggers of the servers the tests run as stand-ins (aiosmtpd logs every line of the
    # emails it receives, full numbers included when a test sets show_full_phone).
    NOT_THE_BRIDGE = ("mail.log",)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(self.NOT_THE_BRIDGE):
            return
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        except Exception as exc:  # never break the code that logged
            self.found.append(f"{record.name}: unformattable log record: {exc!r}")
            return
        problems = leaks(text)
        if problems:
            self.found.append(f"{record.name} {record.levelname}: {problems}: {text[:300]!r}")


@pytest.fixture(scope="session", autouse=True)
def leak_catcher() -> Iterator[LeakCatcher]:
    """Log at DEBUG for the whole run, every record going through the leak check."""
    root = logging.getLogger()
    catcher, level = LeakCatcher(), root.level
    root.addHandler(catcher)
    root.setLevel(logging.DEBUG)
    yield catcher
    root.removeHandler(catcher)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def no_secrets_or_phone_numbers_in_logs(leak_catcher: LeakCatcher) -> Iterator[None]:
    """Fails the test during which a log line (in-process, or a serve process's log file)
    held a token, a password or a full phone number."""
    leak_catcher.found.clear()
    first_file = len(process.LOG_FILES)
    yield
    problems = list(leak_catcher.found)
    for path in dict.fromkeys(process.LOG_FILES[first_file:]):
        if path.exists():
            problems += [f"{path.name}: {problem}"
                         for problem in leaks(path.read_text(errors="replace"))]
    if problems:
        pytest.fail("secrets or full phone numbers in the logs:\n" + "\n".join(problems[:20]),
                    pytrace=False)


@pytest.fixture
def sim() -> Iterator[RedcapSimulator]:
    with RedcapSimulator() as simulator:
        yield simulator


@pytest.fixture
def make_bridge(tmp_path: Path) -> Iterator[Callable[..., Bridge]]:
    made: list[Bridge] = []

    def factory(projects: list[ProjectConfig], **sync: object) -> Bridge:
        bridge = Bridge(make_config(tmp_path, projects, **sync))
        made.append(bridge)
        return bridge

    yield factory
    for bridge in made:
        bridge.store.close()


def replace(project: ProjectConfig, **changes: object) -> ProjectConfig:
    return dataclasses.replace(project, **changes)
