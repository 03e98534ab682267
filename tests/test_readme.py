"""The README's commands, config snippets and troubleshooting quotes, checked against the code.

Every command in a fenced ``sh``/``bash``/``console`` block is classified below: run here
(host paths mapped into a temporary folder, port 8080 mapped to a live bridge), run by
``.ci/run``, exercised by another test, pending a feature on another branch, or not exercisable
on this machine, with the reason. A command in none of these lists fails the test, and so does
a list entry the README no longer contains: the lists cannot drift from the README.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from bridge.cli import build_parser
from bridge.config import load_config
from bridge.inbound import sign
from bridge.sim import RedcapSimulator, SimProject, make_metadata
from tests.conftest import (
    AUTH_TOKEN,
    PARTICIPANT,
    Bridge,
    classic_project,
    project_config,
    twilio_params,
)
from tests.process import ROOT, free_port

MakeBridge = Callable[..., Bridge]
README = ROOT / "README.md"
SHELL_LANGUAGES = {"sh", "bash", "console", "shell"}
SECTIONS = ["What it does and why", "Quick start", "Set up for real", "Deploy", "Operate"]
FIRST_COMMAND = "pip install -r requirements.txt"

# Run by .ci/run on a fresh checkout (asserted in test_ci_runs_install_and_tests).
RUN_BY_CI = {FIRST_COMMAND, "pytest"}

# Commands of features being built on other branches. They are not run here; the integrator
# moves each one to RUN_HERE (or another list) once its branch is merged.
PENDING: dict[str, str] = {}
PENDING_SUBCOMMANDS: set[str] = set()

# Commands this machine cannot run, by prefix, with the reason.
NOT_EXERCISED = {
    "sudo ": "changes the host as root (system user, /opt, /etc, systemd); the unit file is"
             " checked by tests/test_deploy.py",
    "docker ": "no Docker engine on the test machine; the Dockerfile is checked by"
               " tests/test_deploy.py",
    "journalctl ": "needs systemd running as PID 1",
    "BRIDGE_": "the long versions of fault tests that pytest runs at a bounded size",
    "twilio ": "needs the Twilio CLI and a Twilio account; the /twilio/events sink is tested"
               " with signed deliveries in tests/test_event_streams.py",
    "python -m bridge backfill ": "reads a real Twilio account's message log;"
                                  " tests/test_backfill.py runs it against Twilio's API faked"
                                  " at the HTTP layer",
}

# Run by this test, in this order, against the README's own minimal config.
SERVE = "python -m bridge serve --config /etc/redcap-sms-bridge/config.yaml"
RUN_HERE = [
    "python -m bridge demo",
    "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
    SERVE,
    "curl -fsS http://127.0.0.1:8080/healthz",
    "curl -fsS http://127.0.0.1:8080/readyz",
    'sqlite3 /var/lib/redcap-sms-bridge/bridge.db ".backup /var/backups/redcap-sms-bridge.db"',
    "python -m bridge check --config /etc/redcap-sms-bridge/config.yaml",
    "python -m bridge status --config /etc/redcap-sms-bridge/config.yaml",
    "python -m bridge events --config /etc/redcap-sms-bridge/config.yaml",
    "python -m bridge retry --config /etc/redcap-sms-bridge/config.yaml",
    "curl -fsS http://127.0.0.1:8080/metrics",
]


@dataclass(frozen=True)
class Block:
    language: str
    text: str


def blocks() -> list[Block]:
    found = re.findall(r"^```(\S*)\n(.*?)^```$", README.read_text(), re.M | re.S)
    return [Block(language, text) for language, text in found]


def commands() -> list[str]:
    """Shell commands in README order; ``\\`` continuations joined, comments dropped."""
    result = []
    for block in blocks():
        if block.language not in SHELL_LANGUAGES:
            continue
        text = re.sub(r"\\\n\s*", " ", block.text)
        for line in text.splitlines():
            line = line.strip()
            if block.language == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if line and not line.startswith("#"):
                result.append(line)
    return result


def not_exercised_reason(command: str) -> str | None:
    return next((why for prefix, why in NOT_EXERCISED.items() if command.startswith(prefix)),
                None)


def test_sections_are_in_order() -> None:
    headings = re.findall(r"^## (.+)$", README.read_text(), re.M)
    assert [h for h in headings if h in SECTIONS] == SECTIONS


def test_every_command_is_classified() -> None:
    found = commands()
    assert found[0] == FIRST_COMMAND
    quick_start = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^```sh\n(.*?)^```$", quick_start, re.M | re.S) == [
        "pip install -r requirements.txt\npython -m bridge demo\n", "pytest\n"]
    unclassified = [c for c in found if c not in RUN_BY_CI and c not in PENDING
                    and c not in RUN_HERE and not not_exercised_reason(c)]
    assert unclassified == []
    # No stale entries: whatever the lists name is in the README.
    for listed in [*RUN_BY_CI, *PENDING, *RUN_HERE]:
        assert listed in found, listed
    for prefix in NOT_EXERCISED:
        assert any(c.startswith(prefix) for c in found), prefix
    # docker build in particular is marked as not exercised in the README itself.
    assert re.search(r"Not exercised by the tests \(the test machine has no\s+Docker engine\)",
                     README.read_text())


def test_pending_commands_are_not_yet_on_this_branch() -> None:
    """When one of these exists, it must be run here: move it out of PENDING."""
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert PENDING_SUBCOMMANDS.isdisjoint(subcommands)
    mentioned = set(re.findall(r"python -m bridge (?:--\S+ )*([a-z]+)", README.read_text()))
    assert mentioned <= subcommands | PENDING_SUBCOMMANDS, mentioned - subcommands


def test_every_test_the_guarantees_name_exists() -> None:
    guarantees = README.read_text().split("## Guarantees", 1)[1]
    named = re.findall(r"`(tests/test_\w+\.py)(?:::(\w+))?", guarantees)
    assert len(named) >= 10
    for path, test in named:
        source = (ROOT / path).read_text()
        assert not test or f"def {test}(" in source, f"{path}::{test}"


def test_ci_runs_install_and_tests() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert FIRST_COMMAND in ci and "pytest" in ci
    assert ci.index(FIRST_COMMAND) < ci.index("pytest")


# -- running the commands ---------------------------------------------------------------------


@dataclass
class Host:
    """A stand-in for the server of the README: its paths live under ``root``."""

    root: Path
    port: int
    env: dict[str, str]

    def command(self, command: str) -> str:
        for path in ("/etc/redcap-sms-bridge", "/var/lib/redcap-sms-bridge", "/var/backups"):
            command = command.replace(path, str(self.root) + path)
        return command.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["bash", "-c", self.command(command)], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result


def readme_config() -> dict:
    return yaml.safe_load(next(b.text for b in blocks() if b.language == "yaml"))


@pytest.fixture
def host(tmp_path: Path, sim: RedcapSimulator) -> Iterator[tuple[Host, SimProject]]:
    """The README's minimal config, installed as the README says, against the simulator."""
    project = classic_project({"1": "617-555-0199", "2": "+16175550199"})
    token = sim.add_project(project)
    document = readme_config()
    # The only changes: a free port instead of 8080, and the simulator instead of REDCap.
    document["server"]["port"] = free_port()
    document["projects"][0]["redcap"]["url"] = sim.api_url
    root = tmp_path / "host"
    config = root / "etc/redcap-sms-bridge/config.yaml"
    config.parent.mkdir(parents=True)
    (root / "var/backups").mkdir(parents=True)
    document["storage"]["path"] = str(root) + document["storage"]["path"]
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    env = {**os.environ, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN_SLEEP": token,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("BRIDGE_CONFIG", None)
    yield Host(root, document["server"]["port"], env), project


def test_readme_commands_run_as_written(host: tuple[Host, SimProject]) -> None:
    machine, project = host
    assert "Every step behaved as expected." in machine.run(RUN_HERE[0]).stdout
    assert re.fullmatch(r"[\w-]{43}\n", machine.run(RUN_HERE[1]).stdout)

    log = machine.root / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(["bash", "-c", "exec " + machine.command(SERVE)], cwd=ROOT,
                                 env=machine.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_until_healthy(machine, serve, log)
            assert machine.run(RUN_HERE[3]).stdout == "ok\n"
            assert machine.run(RUN_HERE[4]).stdout == "ready\n"
            _stop_lands(machine, project, readme_config())
            machine.run(RUN_HERE[5])
            assert "✗" not in machine.run(RUN_HERE[6]).stdout
            assert "sleep-study" in machine.run(RUN_HERE[7]).stdout
            assert "applied" in machine.run(RUN_HERE[8]).stdout
            assert "no failed jobs" in machine.run(RUN_HERE[9]).stdout
            assert "bridge_webhooks_total" in machine.run(RUN_HERE[10]).stdout
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(30) == 0
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
    backup = sqlite3.connect(machine.root / "var/backups/redcap-sms-bridge.db")
    try:
        assert backup.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert backup.execute("SELECT COUNT(*) FROM jobs WHERE status='applied'").fetchone() == (1,)
    finally:
        backup.close()


def _wait_until_healthy(machine: Host, serve: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(400):
        assert serve.poll() is None, log.read_text()
        try:
            if requests.get(f"http://127.0.0.1:{machine.port}/healthz", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError(log.read_text())


def _stop_lands(machine: Host, project: SimProject, document: dict) -> None:
    """A STOP signed for the README's public_url reaches both records of the README's config."""
    public = document["server"]["public_url"] + "/twilio/sms"
    params = twilio_params("STOP", "+16175550199", to=document["projects"][0]["twilio"][
        "numbers"][0].replace(" ", ""), account=document["twilio"]["accounts"][0]["account_sid"],
        service=None)
    response = requests.post(f"http://127.0.0.1:{machine.port}/twilio/sms", data=params,
                             headers={"X-Twilio-Signature": sign(public, params, AUTH_TOKEN)},
                             timeout=10)
    assert response.status_code == 200, response.text
    for _ in range(400):
        if project.value("1", "sms_opt_out") and project.value("2", "sms_opt_out"):
            break
        time.sleep(0.05)
    assert project.value("1", "sms_opted_out___1") == project.value("2", "sms_opted_out___1") \
        == "1"


def test_yaml_snippets_are_valid_configuration(tmp_path: Path) -> None:
    """The minimal config loads as written; the other snippets load merged into it."""
    snippets = [yaml.safe_load(b.text) for b in blocks() if b.language == "yaml"]
    assert len(snippets) >= 2
    environ = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN_SLEEP": "A" * 32}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(snippets[0]))
    base = load_config(path, environ=environ)
    assert base.server.public_url == "https://bridge.example.edu"
    assert base.projects[0].numbers == ("+16175550123",)
    for snippet in snippets[1:]:
        document = readme_config()
        for extra in snippet["projects"]:
            target = next(p for p in document["projects"] if p["name"] == extra["name"])
            target.update(extra)
        path.write_text(yaml.safe_dump(document))
        load_config(path, environ=environ)


def test_proxy_snippets_pass_the_request_uri_unchanged() -> None:
    """Signatures need the path and query Twilio used: no URI part on proxy_pass."""
    by_language = {b.language: b.text for b in blocks()}
    assert re.findall(r"proxy_pass (\S+);", by_language["nginx"]) == [
        "http://127.0.0.1:8080", "http://127.0.0.1:8080"]
    assert "reverse_proxy 127.0.0.1:8080" in by_language["caddy"]
    assert "@bridge path /twilio/* /healthz" in by_language["caddy"]


# -- the troubleshooting table quotes what the bridge really says -------------------------------


def troubleshooting() -> str:
    return README.read_text().split("### Troubleshooting", 1)[1]


def quoted(text: str) -> None:
    assert f"`{text}`" in troubleshooting(), text


def test_signature_mismatch_behind_a_proxy(make_bridge: MakeBridge, sim: RedcapSimulator,
                                           caplog: pytest.LogCaptureFixture) -> None:
    bridge = make_bridge([project_config(sim, sim.add_project(classic_project()))])
    params = twilio_params("STOP")
    # Signed for the URL the bridge itself saw, not the public one Twilio used.
    response = bridge.post(params, url="http://127.0.0.1:8080/twilio/sms")
    assert response.status_code == 403
    quoted("403 X-Twilio-Signature does not match")
    assert any("403 X-Twilio-Signature does not match" in r.getMessage() for r in caplog.records)

    unknown = "AC" + "9" * 32
    response = bridge.post(twilio_params("STOP", account=unknown))
    assert response.status_code == 403
    quoted("403 no auth token is configured for AccountSid AC…")
    assert any(f"403 no auth token is configured for AccountSid {unknown}" in r.getMessage()
               for r in caplog.records)
    # Anything else in the field is not repeated into the log.
    response = bridge.post(twilio_params("STOP", account="AC\nforged log line"))
    assert response.status_code == 403
    assert not any("forged" in r.getMessage() for r in caplog.records)


def failed_error(bridge: Bridge) -> str:
    bridge.text("STOP")
    bridge.drain()
    row = bridge.store.read().execute("SELECT status, last_error FROM jobs").fetchone()
    assert row["status"] == "failed"
    return row["last_error"]


def test_token_without_rights(make_bridge: MakeBridge, sim: RedcapSimulator) -> None:
    project = classic_project({"1": PARTICIPANT})
    project.can_import = False
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    quoted("You do not have API Import/Update privileges")
    assert "You do not have API Import/Update privileges" in failed_error(bridge)


def test_date_only_opt_out_field(make_bridge: MakeBridge, sim: RedcapSimulator) -> None:
    project = SimProject(title="Dates", metadata=make_metadata("record_id", [
        ("mobile", "contact", "text", ""),
        ("sms_opt_out", "contact", "text", "date_ymd"),
        ("sms_opted_out", "contact", "checkbox", "", "1, Opted out"),
    ]))
    project.add_record("1", {"mobile": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    quoted("a date-only field cannot hold the time")
    assert "a date-only field cannot hold the time" in failed_error(bridge)


def test_redcap_ip_ban(make_bridge: MakeBridge, caplog: pytest.LogCaptureFixture) -> None:
    with RedcapSimulator(rate_limit_per_minute=2) as sim:
        bridge = make_bridge([project_config(sim, sim.add_project(
            classic_project({"1": PARTICIPANT})))])
        bridge.text("STOP")
        with caplog.at_level(logging.WARNING, logger="bridge.sync"):
            bridge.worker.tick()
        assert sim.banned
    assert bridge.job_statuses() == ["pending"]  # waits; nothing is lost
    quoted("REDCap unavailable")
    quoted("has been banned due to suspected abuse")
    assert any("REDCap unavailable" in r.getMessage()
               and "has been banned due to suspected abuse" in r.getMessage()
               for r in caplog.records)
