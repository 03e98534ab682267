"""``python -m bridge check`` against the REDCap simulator, aiosmtpd and a fake Twilio API."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bridge.check import CheckResult, Report, Status, render_text, run_checks
from bridge.check.project import mask_raw, phone_stats, phone_summary
from bridge.check.twilio_setup import same_url
from bridge.config import ProjectConfig, RedcapTarget
from bridge.sim import RedcapSimulator, SimProject, make_metadata
from bridge.store import Store
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BRIDGE_NUMBER,
    PUBLIC_URL,
    SERVICE_SID,
    Bridge,
    classic_project,
    project_config,
    standard_metadata,
)
from tests.fake_twilio import (
    FakeAccount,
    FakeNumber,
    FakeService,
    FakeTwilio,
    LoopbackHttpClient,
    serve,
)
from tests.faults import Redirector, TlsFront
from tests.opsutil import bridge_yaml, project_entry, run_cli
from tests.process import ROOT, free_port

SMTP_USER = "bridge@example.edu"
SMTP_PASSWORD = "correct horse battery staple"
WEBHOOK = PUBLIC_URL + "/twilio/sms"


def statuses(report: Report) -> dict[str, list[Status]]:
    found: dict[str, list[Status]] = {}
    for result in report.results:
        found.setdefault(result.name, []).append(result.status)
    return found


def only(report: Report, name: str) -> CheckResult:
    [result] = [r for r in report.results if r.name == name]
    return result


def failures(report: Report) -> list[str]:
    return [r.name for r in report.results if r.status is Status.FAIL]


def check(tmp_path: Path, sim: RedcapSimulator, project: SimProject | None = None, *,
          token: str | None = None, extra: dict | None = None, **overrides: object) -> Report:
    token = token or sim.add_project(project or classic_project({"1": "555-867-5309"}))
    return run_checks(bridge_yaml(tmp_path, [project_entry(sim, token, **overrides)],
                                  extra=extra))


def longitudinal_project() -> SimProject:
    project = SimProject(
        title="Cohort",
        metadata=make_metadata("record_id", [
            ("mobile", "enrolment", "text", ""),
            ("sms_opt_out", "contact", "text", "datetime_ymd"),
            ("sms_opted_out", "contact", "checkbox", "", "1, Opted out"),
        ]),
        events=[{"event_name": "Baseline", "unique_event_name": "baseline_arm_1"},
                {"event_name": "Follow-up", "unique_event_name": "followup_arm_1"}],
        form_event_mapping=[
            {"unique_event_name": "baseline_arm_1", "form": "enrolment"},
            {"unique_event_name": "baseline_arm_1", "form": "contact"},
            {"unique_event_name": "followup_arm_1", "form": "contact"},
        ],
    )
    project.add_record("1", {"mobile": "555-867-5309"}, event="baseline_arm_1")
    return project


EVENTS = {"phone_event": "baseline_arm_1", "opt_out_event": "followup_arm_1",
          "opt_out_checkbox_event": "followup_arm_1"}


# -- a good configuration ----------------------------------------------------------------------

def test_good_config_passes_every_check(tmp_path: Path, sim: RedcapSimulator,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    project = classic_project({"1": "555-867-5309", "2": "(202) 555-0143"})
    token = sim.add_project(project)
    monkeypatch.setenv("REDCAP_TOKEN", token)
    config = bridge_yaml(tmp_path, [project_entry(sim, "${REDCAP_TOKEN}")])
    assert run_cli(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"bridge check: {config}"
    marks = [line.strip()[0] for line in lines if line.startswith("  ")]
    assert marks and set(marks) == {"✓"}, out
    assert len(marks) == 11
    assert "✓ config parses; every ${VAR} is set (1 project, 1 Twilio account)" in out
    assert "✓ REDCap 15.7.6 answers at" in out
    assert "✓ import right (an empty test import was accepted; nothing was written)" in out
    assert "phone values in 'mobile': 2 records; 2 with a number that parses" in out
    assert lines[-1] == "All checks passed."
    imports = [c for c in sim.calls if c.action == "import"]
    assert [(c.status, c.records) for c in imports] == [(200, 0)]
    assert project.record_ids() == ["1", "2"] and project.imports_per_record == {}


def test_good_longitudinal_config(tmp_path: Path, sim: RedcapSimulator) -> None:
    report = check(tmp_path, sim, longitudinal_project(), **EVENTS)
    assert report.ok and failures(report) == [] and Status.WARN not in {
        r.status for r in report.results}
    assert "longitudinal project; phone_event 'baseline_arm_1'" in only(
        report, "redcap.events").summary
    assert only(report, "redcap.phone_values").details["parsed"] == 1


def test_json_report(tmp_path: Path, sim: RedcapSimulator,
                     capsys: pytest.CaptureFixture[str]) -> None:
    token = sim.add_project(classic_project())
    config = bridge_yaml(tmp_path, [project_entry(sim, token, phone_field="mobil")])
    assert run_cli(["check", "--config", str(config), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["counts"]["fail"] == 1
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert failed[0]["name"] == "redcap.fields"
    assert failed[0]["section"] == f"project heart-study ({sim.api_url})"
    assert "did you mean 'mobile'?" in failed[0]["hint"]


# -- configuration -----------------------------------------------------------------------------

def test_every_missing_variable_is_listed(tmp_path: Path, sim: RedcapSimulator,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = bridge_yaml(tmp_path, [project_entry(sim, "${REDCAP_TOKEN_X}")],
                         extra={"admin": {"token": "${ADMIN_TOKEN_X}"}})
    report = run_checks(config, environ={})
    assert [(r.name, r.status, r.details.get("variable")) for r in report.results] == [
        ("config.environment", Status.FAIL, "ADMIN_TOKEN_X"),
        ("config.environment", Status.FAIL, "REDCAP_TOKEN_X"),
        ("config.rest", Status.SKIP, None),
    ]
    assert "(used at " in report.results[1].summary and "projects[0].redcap.token" in \
        report.results[1].summary
    assert "EnvironmentFile" in report.results[0].hint
    assert sim.calls == []
    assert run_cli(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "✗ environment variable REDCAP_TOKEN_X is not set" in out
    assert out.splitlines()[-1] == "2 of 2 checks failed (1 not run)."


def test_invalid_config(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("storage: {path: x.db}\nprojects: []\nsurprise: 1\n")
    report = run_checks(config)
    assert [r.status for r in report.results] == [Status.FAIL, Status.SKIP]
    assert "unknown key 'surprise'" in report.results[0].summary
    assert "config.example.yaml" in report.results[0].hint


# -- REDCap connection, token, rights ----------------------------------------------------------

def test_store_path_that_cannot_be_created_fails(tmp_path: Path, sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    (tmp_path / "afile").write_text("not a folder\n")
    store = tmp_path / "afile" / "bridge.db"
    report = run_checks(bridge_yaml(tmp_path, [project_entry(sim, token)],
                                    extra={"storage": {"path": str(store)}}))
    result = only(report, "storage.path")
    assert result.status is Status.FAIL and not report.ok
    assert result.summary == f"cannot create the folder for {store}: {tmp_path / 'afile'} is a file"
    assert "fix storage.path in" in result.hint
    assert not store.parent.is_dir()  # nothing created


def test_store_path_that_is_a_folder_fails(tmp_path: Path, sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    report = run_checks(bridge_yaml(tmp_path, [project_entry(sim, token)],
                                    extra={"storage": {"path": str(tmp_path)}}))
    assert only(report, "storage.path").summary == \
        f"storage.path {tmp_path} is a folder; it must name the store's file"


def test_store_path_new_or_existing_passes_and_nothing_is_created(
        tmp_path: Path, sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    store = tmp_path / "state" / "deeper" / "bridge.db"
    config = bridge_yaml(tmp_path, [project_entry(sim, token)],
                         extra={"storage": {"path": str(store)}})
    result = only(run_checks(config), "storage.path")
    assert result.status is Status.OK and "creates it at its first start" in result.summary
    assert not (tmp_path / "state").exists()
    Store(store).close()
    result = only(run_checks(config), "storage.path")
    assert result.status is Status.OK and result.summary == f"store {store} can be read and written"


def test_unreachable_url(tmp_path: Path, sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    url = f"http://127.0.0.1:{free_port()}/api/"
    report = run_checks(bridge_yaml(tmp_path, [{**project_entry(sim, token),
                                                "redcap": {"url": url, "token": token}}]))
    result = only(report, "redcap.reachable")
    assert result.status is Status.FAIL
    assert result.summary.count("cannot reach REDCap") == 1 and url in result.hint
    assert "banned" not in result.hint  # no answer came, so no ban to speak of
    assert {r.status for r in report.results[3:]} == {Status.SKIP}
    assert len(report.results) == 12  # config, storage, reachable, and nine not run


def test_a_redirecting_url_is_explained_and_not_followed(tmp_path: Path,
                                                         sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    redirector = Redirector(301, sim.api_url.replace("http://", "https://"))
    try:
        report = run_checks(bridge_yaml(tmp_path, [{
            **project_entry(sim, token), "redcap": {"url": redirector.url, "token": token}}]))
    finally:
        redirector.close()
    result = only(report, "redcap.reachable")
    assert result.status is Status.FAIL
    assert "redirects elsewhere: REDCap HTTP 301: redirected to https://" in result.summary
    assert "set redcap.url" in result.hint
    assert {r.status for r in report.results[3:]} == {Status.SKIP}
    assert sim.calls == []


def test_redcap_with_an_institutional_certificate(tmp_path: Path, sim: RedcapSimulator,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    token = sim.add_project(classic_project({"1": "555-867-5309"}))
    front = TlsFront(sim.api_url)
    try:
        config = bridge_yaml(tmp_path, [{**project_entry(sim, token),
                                         "redcap": {"url": front.url, "token": token}}])
        untrusted = run_checks(config)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(TlsFront.CERT))  # the institution's CA
        trusted = run_checks(config)
    finally:
        front.close()
    result = only(untrusted, "redcap.reachable")
    assert result.status is Status.FAIL
    assert "its TLS certificate is not trusted here (self-signed certificate" in result.summary
    assert "set REQUESTS_CA_BUNDLE" in result.summary and "Environment=" in result.hint
    assert {r.status for r in untrusted.results[3:]} == {Status.SKIP}
    assert only(trusted, "redcap.reachable").status is Status.OK
    assert failures(trusted) == []


def test_banned_ip_is_explained(tmp_path: Path, sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    sim.rate_limit_per_minute = 0
    report = check(tmp_path, sim, token=token)
    result = only(report, "redcap.reachable")
    assert result.status is Status.FAIL and "429" in result.summary
    assert "banned" in result.hint and "DNS" not in result.hint
    sim.unban()


def test_bad_token(tmp_path: Path, sim: RedcapSimulator) -> None:
    sim.add_project(classic_project())
    report = check(tmp_path, sim, token="A" * 32)
    assert only(report, "redcap.reachable").status is Status.OK
    token = only(report, "redcap.token")
    assert token.status is Status.FAIL
    assert "You do not have permissions to use the API" in token.summary
    assert "API page" in token.hint
    assert failures(report) == ["redcap.token"]
    assert statuses(report)["redcap.import"] == [Status.SKIP]


def test_no_export_right(tmp_path: Path, sim: RedcapSimulator) -> None:
    project = classic_project()
    project.can_export = False
    report = check(tmp_path, sim, project)
    assert only(report, "redcap.token").status is Status.OK
    export = only(report, "redcap.export")
    assert export.status is Status.FAIL and "API Export" in export.hint
    assert only(report, "redcap.import").status is Status.OK
    assert statuses(report)["redcap.fields"] == [Status.SKIP]
    assert failures(report) == ["redcap.export"]


def test_no_import_right(tmp_path: Path, sim: RedcapSimulator) -> None:
    project = classic_project({"1": "555-867-5309"})
    project.can_import = False
    report = check(tmp_path, sim, project)
    result = only(report, "redcap.import")
    assert result.status is Status.FAIL
    assert "You do not have API Import/Update privileges" in result.summary
    assert "API Import/Update" in result.hint
    assert failures(report) == ["redcap.import"]
    assert project.record_ids() == ["1"]


def test_import_check_never_writes(tmp_path: Path, sim: RedcapSimulator) -> None:
    project = classic_project({"1": "555-867-5309"})
    check(tmp_path, sim, project)
    assert project.record_ids() == ["1"]
    assert project.imports_per_record == {}


def test_not_a_redcap_api(tmp_path: Path, sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    url = sim.base_url + "/redcap/api/"  # the simulator answers only /api/
    report = run_checks(bridge_yaml(tmp_path, [{**project_entry(sim, token),
                                                "redcap": {"url": url, "token": token}}]))
    result = only(report, "redcap.reachable")
    assert result.status is Status.FAIL
    assert "does not answer like REDCap's API" in result.summary
    assert "/api/" in result.hint


# -- fields and events -------------------------------------------------------------------------

def test_unknown_field(tmp_path: Path, sim: RedcapSimulator) -> None:
    report = check(tmp_path, sim, phone_field="mobil", opt_out_checkbox="sms_opted_ou")
    fields = [r for r in report.results if r.name == "redcap.fields"]
    assert [r.status for r in fields] == [Status.FAIL, Status.FAIL]
    assert "phone_field 'mobil' is not a field in REDCap" in fields[0].summary
    assert fields[0].hint.startswith("did you mean 'mobile'? fix phone_field in")
    assert "did you mean 'sms_opted_out'?" in fields[1].hint
    assert statuses(report)["redcap.checkbox"] == [Status.SKIP]
    assert statuses(report)["redcap.phone_values"] == [Status.SKIP]
    assert statuses(report)["redcap.opt_out_field"] == [Status.OK]


def test_date_only_opt_out_field(tmp_path: Path, sim: RedcapSimulator) -> None:
    project = SimProject(title="t", metadata=make_metadata("record_id", [
        ("mobile", "contact", "text", ""), ("opted", "contact", "text", "date_ymd")]))
    report = check(tmp_path, sim, project, opt_out_field="opted", opt_out_checkbox=None)
    result = only(report, "redcap.opt_out_field")
    assert result.status is Status.FAIL
    assert "date-only field cannot hold the time" in result.summary
    assert "Datetime" in result.hint
    assert failures(report) == ["redcap.opt_out_field"]
    assert "redcap.checkbox" not in statuses(report)


@pytest.mark.parametrize("validation", ["", "datetime_dmy", "datetime_seconds_mdy"])
def test_text_and_datetime_opt_out_fields_pass(tmp_path: Path, sim: RedcapSimulator,
                                               validation: str) -> None:
    project = SimProject(title="t", metadata=make_metadata("record_id", [
        ("mobile", "contact", "text", ""), ("opted", "contact", "text", validation)]))
    report = check(tmp_path, sim, project, opt_out_field="opted", opt_out_checkbox=None)
    assert report.ok


def test_checkbox_without_option_1(tmp_path: Path, sim: RedcapSimulator) -> None:
    metadata = [row if row["field_name"] != "sms_opted_out" else
                {**row, "select_choices_or_calculations": "2, Opted out"}
                for row in standard_metadata()]
    report = check(tmp_path, sim, SimProject(title="t", metadata=metadata))
    result = only(report, "redcap.checkbox")
    assert result.status is Status.FAIL and "option coded 1" in result.summary
    assert "choice coded 1" in result.hint


def test_longitudinal_without_events(tmp_path: Path, sim: RedcapSimulator) -> None:
    report = check(tmp_path, sim, longitudinal_project())
    events = [r for r in report.results if r.name == "redcap.events"]
    assert [r.details["key"] for r in events] == ["phone_event", "opt_out_event",
                                                  "opt_out_checkbox_event"]
    assert all(r.status is Status.FAIL and "longitudinal; set" in r.summary for r in events)
    assert "Define My Events" in events[0].hint
    assert statuses(report)["redcap.phone_values"] == [Status.SKIP]


def test_event_the_form_is_not_designated_for(tmp_path: Path, sim: RedcapSimulator) -> None:
    report = check(tmp_path, sim, longitudinal_project(),
                   **{**EVENTS, "phone_event": "followup_arm_1"})
    result = only(report, "redcap.events")
    assert result.status is Status.FAIL
    assert "phone_event 'followup_arm_1' is not an event that form 'enrolment'" in \
        result.summary
    assert "(the project's events" not in result.summary
    assert "Designate Instruments" in result.hint


def test_unknown_event(tmp_path: Path, sim: RedcapSimulator) -> None:
    report = check(tmp_path, sim, longitudinal_project(),
                   **{**EVENTS, "opt_out_event": "week_2_arm_1"})
    result = only(report, "redcap.events")
    assert result.status is Status.FAIL
    assert "(the project's events: baseline_arm_1, followup_arm_1)" in result.summary


def test_classic_project_with_event_keys(tmp_path: Path, sim: RedcapSimulator) -> None:
    report = check(tmp_path, sim, **EVENTS)
    events = [r for r in report.results if r.name == "redcap.events"]
    assert len(events) == 3 and all(r.status is Status.FAIL for r in events)
    assert "REDCap project is classic" in events[0].summary
    assert "remove phone_event" in events[0].hint
    assert only(report, "redcap.phone_values").status is Status.OK


def test_worker_writes_around_event_keys_on_a_classic_project(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    """check fails the set-up, but the worker need not hold opt-outs back over it."""
    project = classic_project({"1": "555-867-5309"})
    bridge = make_bridge([project_config(sim, sim.add_project(project), **EVENTS)])
    bridge.text("STOP")
    bridge.drain()
    assert bridge.job_statuses() == ["applied"]
    assert project.value("1", "sms_opt_out") != ""


# -- phone values ------------------------------------------------------------------------------

def test_phone_value_statistics(tmp_path: Path, sim: RedcapSimulator) -> None:
    project = classic_project({
        "1": "555-867-5309", "2": "(555) 867-5309", "3": "+1 555 867 5309",  # one number
        "4": "(202) 555-0143", "5": "202.555.0143",  # another, twice
        "6": "+44 20 7946 0958", "7": "", "8": "n/a", "9": "555-86753", "10": "call mum",
    })
    report = check(tmp_path, sim, project)
    result = only(report, "redcap.phone_values")
    assert result.status is Status.WARN
    assert report.ok  # data quality warns, it does not fail the run
    details = result.details
    assert details["field_exported"] is True
    assert {key: details[key] for key in ("records", "with_value", "parsed", "unparseable",
                                          "numbers", "shared_numbers", "records_sharing")} == {
        "records": 10, "with_value": 9, "parsed": 6, "unparseable": 3, "numbers": 3,
        "shared_numbers": 2, "records_sharing": 5}
    assert details["examples"] == [{"record": "8", "value": "n/a"},
                                   {"record": "9", "value": "***-***53"},
                                   {"record": "10", "value": "call mum"}]
    assert "1 empty" in result.summary
    assert "2 numbers shared by several records (5 records" in result.summary
    assert "5309" not in result.summary and "8675" not in result.summary
    assert "default_region" in result.hint


def test_phone_field_with_no_values(tmp_path: Path, sim: RedcapSimulator) -> None:
    report = check(tmp_path, sim, classic_project({"1": "", "2": ""}))
    result = only(report, "redcap.phone_values")
    assert result.status is Status.WARN and "is phone_field the field" in result.hint


def test_no_records_yet(tmp_path: Path, sim: RedcapSimulator) -> None:
    report = check(tmp_path, sim, classic_project())
    assert only(report, "redcap.phone_values").summary == \
        "phone values: no records yet in 'mobile'"


def test_phone_field_missing_from_the_export_fails() -> None:
    """A user with de-identified export rights gets records without identifier fields; the
    simulator does not model export rights per instrument, so this is checked on the rows."""
    project = ProjectConfig(name="p", source=Path("p.yaml"),
                            redcap=RedcapTarget("https://redcap.example.edu/api/", "A" * 32),
                            phone_field="mobile", opt_out_field="sms_opt_out")
    stats = phone_stats([{"record_id": "1"}, {"record_id": "2"}], "record_id", "mobile", "US")
    summary, status, hint = phone_summary(project, stats)
    assert status is Status.FAIL
    assert summary == "phone values: REDCap exported 2 records without the field 'mobile'"
    assert "de-identified" in hint


def test_mask_raw() -> None:
    assert mask_raw("555-8675") == "***-**75"
    assert mask_raw("n/a") == "n/a"
    assert mask_raw("1" * 40) == "*" * 22 + "11…"


# -- SMTP --------------------------------------------------------------------------------------

class _Sink:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


def _authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                   auth_data: object) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode() and \
        auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[int]:
    port = free_port()
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port,
                            authenticator=_authenticator, auth_require_tls=False)
    controller.start()
    yield port
    controller.stop()


def smtp_section(port: int, password: str = SMTP_PASSWORD, **overrides: object) -> dict:
    return {"smtp": {"host": "127.0.0.1", "port": port, "starttls": False, "from":
                     "bridge@example.edu", "username": SMTP_USER, "password": password,
                     "timeout_seconds": 5, **overrides}}


def test_smtp_reachable_and_login_accepted(tmp_path: Path, sim: RedcapSimulator,
                                           smtp_server: int) -> None:
    report = check(tmp_path, sim, extra=smtp_section(smtp_server))
    assert report.ok
    assert only(report, "smtp.reachable").summary == "the mail server answers (no TLS)"
    assert only(report, "smtp.login").summary == f"login accepted for {SMTP_USER!r}"
    assert only(report, "smtp.login").section == f"smtp 127.0.0.1:{smtp_server}"


def test_smtp_login_refused(tmp_path: Path, sim: RedcapSimulator, smtp_server: int) -> None:
    report = check(tmp_path, sim, extra=smtp_section(smtp_server, password="wrong"))
    result = only(report, "smtp.login")
    assert result.status is Status.FAIL and "535" in result.summary
    assert "app password" in result.hint
    assert "wrong" not in render_text(report)


def test_smtp_down(tmp_path: Path, sim: RedcapSimulator) -> None:
    report = check(tmp_path, sim, extra=smtp_section(free_port()))
    assert only(report, "smtp.reachable").status is Status.FAIL
    assert "ConnectionRefusedError" in only(report, "smtp.reachable").summary
    assert only(report, "smtp.login").status is Status.SKIP


def test_smtp_without_starttls_when_required(tmp_path: Path, sim: RedcapSimulator,
                                             smtp_server: int) -> None:
    report = check(tmp_path, sim, extra=smtp_section(smtp_server, starttls=True))
    result = only(report, "smtp.reachable")
    assert result.status is Status.FAIL and "does not offer STARTTLS" in result.summary


# -- Twilio ------------------------------------------------------------------------------------

@pytest.fixture
def twilio() -> FakeTwilio:
    fake = FakeTwilio()
    fake.add_account(FakeAccount(
        ACCOUNT_SID, AUTH_TOKEN,
        numbers=[FakeNumber(BRIDGE_NUMBER, sms_url=WEBHOOK + "#rc=3&rp=all")],
        services=[FakeService(SERVICE_SID, inbound_request_url=WEBHOOK,
                              numbers=[BRIDGE_NUMBER])]))
    return fake


def twilio_check(tmp_path: Path, sim: RedcapSimulator, fake: FakeTwilio,
                 **overrides: object) -> Report:
    token = sim.add_project(classic_project({"1": "555-867-5309"}))
    config = bridge_yaml(tmp_path, [project_entry(sim, token, **overrides)])
    with serve(fake) as http:
        return run_checks(config, twilio=True, twilio_http_client=http)


def test_twilio_good(tmp_path: Path, sim: RedcapSimulator, twilio: FakeTwilio) -> None:
    report = twilio_check(tmp_path, sim, twilio)
    assert report.ok
    twilio_results = [r for r in report.results if r.section == "twilio"]
    assert [(r.name, r.status) for r in twilio_results] == [
        ("twilio.account", Status.OK), ("twilio.service", Status.OK),
        ("twilio.number", Status.OK)]
    assert f"Messaging Service {SERVICE_SID} (Study texts) posts incoming messages to this" \
        f" bridge ({WEBHOOK})" == twilio_results[1].summary
    assert twilio_results[2].summary.startswith(f"{BRIDGE_NUMBER} (in Messaging Service")


def test_twilio_number_posting_to_redcap_warns(tmp_path: Path, sim: RedcapSimulator,
                                               twilio: FakeTwilio) -> None:
    twilio.accounts[ACCOUNT_SID].services[0].use_inbound_webhook_on_number = True
    twilio.accounts[ACCOUNT_SID].numbers[0].sms_url = "https://redcap.example.edu/surveys/"
    report = twilio_check(tmp_path, sim, twilio)
    assert report.ok
    assert "uses each number's own webhook" in only(report, "twilio.service").summary
    number = only(report, "twilio.number")
    assert number.status is Status.WARN
    assert number.summary == (f"{BRIDGE_NUMBER} posts incoming messages to"
                              " https://redcap.example.edu/surveys/, not this bridge")
    assert WEBHOOK in number.hint and "forward.url" in number.hint


def test_twilio_number_handled_by_a_twiml_app(tmp_path: Path, sim: RedcapSimulator,
                                              twilio: FakeTwilio) -> None:
    account = twilio.accounts[ACCOUNT_SID]
    account.services.clear()
    account.applications["AP" + "5" * 32] = WEBHOOK
    account.numbers[0] = FakeNumber(BRIDGE_NUMBER, sms_url="https://ignored.example.org/",
                                    sms_application_sid="AP" + "5" * 32)
    report = twilio_check(tmp_path, sim, twilio, twilio={"numbers": [BRIDGE_NUMBER]})
    number = only(report, "twilio.number")
    assert number.status is Status.OK and "(TwiML app AP" in number.summary


def test_twilio_bad_credentials(tmp_path: Path, sim: RedcapSimulator,
                                twilio: FakeTwilio) -> None:
    twilio.accounts[ACCOUNT_SID].token = "f" * 32
    report = twilio_check(tmp_path, sim, twilio)
    result = only(report, "twilio.account")
    assert result.status is Status.FAIL
    assert "HTTP 401: " in result.summary and "Authenticate (error 20003)" in result.summary
    assert "auth token" in result.hint
    assert [r.name for r in report.results if r.section == "twilio"] == ["twilio.account"]


def test_twilio_out_of_reach_is_not_called_a_credentials_problem(
        tmp_path: Path, sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project({"1": "555-867-5309"}))
    config = bridge_yaml(tmp_path, [project_entry(sim, token)])
    nowhere = LoopbackHttpClient(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    result = only(run_checks(config, twilio=True, twilio_http_client=nowhere), "twilio.account")
    assert result.status is Status.FAIL
    assert result.summary == f"account {ACCOUNT_SID}: not checked: cannot reach Twilio's API:" \
        " ConnectionError"
    assert "reach api.twilio.com" in result.hint


def test_twilio_number_and_service_not_in_the_account(tmp_path: Path, sim: RedcapSimulator,
                                                      twilio: FakeTwilio) -> None:
    twilio.accounts[ACCOUNT_SID].numbers.clear()
    twilio.accounts[ACCOUNT_SID].services.clear()
    report = twilio_check(tmp_path, sim, twilio)
    assert failures(report) == ["twilio.service", "twilio.number"]
    assert "not found in any configured account" in only(report, "twilio.service").summary
    assert "not a phone number of any configured account" in only(
        report, "twilio.number").summary


def test_twilio_service_with_no_webhook(tmp_path: Path, sim: RedcapSimulator,
                                        twilio: FakeTwilio) -> None:
    twilio.accounts[ACCOUNT_SID].services[0].inbound_request_url = None
    report = twilio_check(tmp_path, sim, twilio)
    service = only(report, "twilio.service")
    assert service.status is Status.WARN and "go to no webhook" in service.summary


def test_same_url() -> None:
    assert same_url("https://Bridge.example.edu:443/twilio/sms#rc=3", WEBHOOK)
    assert not same_url("http://bridge.example.edu/twilio/sms", WEBHOOK)
    assert not same_url(WEBHOOK + "?x=1", WEBHOOK)


# -- secrets and the process -------------------------------------------------------------------

def test_no_secret_or_number_reaches_the_logs(tmp_path: Path, sim: RedcapSimulator,
                                              twilio: FakeTwilio, smtp_server: int,
                                              caplog: pytest.LogCaptureFixture) -> None:
    project = classic_project({"1": "555-867-5309", "2": "n/a 5551234567x"})
    token = sim.add_project(project)
    config = bridge_yaml(tmp_path, [project_entry(sim, token)],
                         extra=smtp_section(smtp_server))
    caplog.set_level(logging.DEBUG)
    with serve(twilio) as http:
        report = run_checks(config, twilio=True, twilio_http_client=http)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    logged += render_text(report)
    for secret in (token, AUTH_TOKEN, SMTP_PASSWORD, "8675309", "5551234567"):
        assert secret not in logged


def test_check_as_a_real_process(tmp_path: Path, sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project({"1": "555-867-5309"}))
    config = bridge_yaml(tmp_path, [project_entry(sim, "${REDCAP_TOKEN}")])
    env = {"PATH": "/usr/bin:/bin", "REDCAP_TOKEN": token}
    good = subprocess.run([sys.executable, "-m", "bridge", "check", "--config", str(config)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.splitlines()[-1] == "All checks passed."
    bad = subprocess.run([sys.executable, "-m", "bridge", "check", "--json"], cwd=ROOT,
                         env={**env, "BRIDGE_CONFIG": str(config), "REDCAP_TOKEN": "B" * 32},
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert [c["name"] for c in report["checks"] if c["status"] == "fail"] == ["redcap.token"]
    assert "B" * 32 not in bad.stdout + bad.stderr
