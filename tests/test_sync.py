"""The worker against the REDCap simulator over HTTP: matching, writing, ordering, failures."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bridge.config import RedcapTarget
from bridge.sim import Fault, RedcapSimulator, SimProject, make_metadata
from tests.conftest import (
    PARTICIPANT,
    Bridge,
    classic_project,
    project_config,
    twilio_params,
)
from tests.faults import Redirector, TlsFront

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
OTHER = "+12025550143"


def imports(sim: RedcapSimulator) -> int:
    return sum(1 for call in sim.calls if call.content == "record" and call.action == "import")


@pytest.mark.parametrize("stored", [
    "(555) 867-5309", "555-867-5309", "555.867.5309", "5558675309", "+15558675309",
    "1-555-867-5309", "(555) 867-5309 x12", "15558675309",
])
def test_stop_reaches_a_record_in_every_phone_format(sim: RedcapSimulator, make_bridge:
                                                      Callable[..., Bridge], stored: str) -> None:
    project = classic_project({"1": stored, "2": "(202) 555-0143"})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge.drain()
    assert STAMP.match(project.value("1", "sms_opt_out"))
    assert project.value("1", "sms_opted_out___1") == "1"
    assert project.value("2", "sms_opt_out") == ""
    assert bridge.job_statuses() == ["applied"]


def test_international_number_stored_with_plus(sim: RedcapSimulator,
                                               make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"7": "+44 20 7946 0958"})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP", "+442079460958")
    bridge.drain()
    assert project.value("7", "sms_opt_out") != ""


def test_every_matching_record_is_updated(sim: RedcapSimulator,
                                          make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": "555-867-5309", "2": "+15558675309", "3": "(202) 555-0143"})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge.drain()
    assert project.value("1", "sms_opt_out") == project.value("2", "sms_opt_out") != ""
    assert project.value("3", "sms_opt_out") == ""
    job = bridge.store.read().execute("SELECT records FROM jobs").fetchone()
    assert job["records"] == '["1", "2"]'


def test_the_time_written_is_the_receipt_time_in_the_project_zone(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project),
                                         timezone="Asia/Tokyo")])
    bridge.text("STOP")
    received = bridge.store.read().execute("SELECT received_at FROM messages").fetchone()[0]
    bridge.drain()
    expected = datetime.fromisoformat(received).astimezone(ZoneInfo("Asia/Tokyo"))
    assert project.value("1", "sms_opt_out") == expected.strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(("validation", "pattern"), [
    ("datetime_ymd", r"^\d{4}-\d\d-\d\d \d\d:\d\d$"),
    ("datetime_mdy", r"^\d{4}-\d\d-\d\d \d\d:\d\d$"),
    ("datetime_seconds_dmy", r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"),
    ("", r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"),
])
def test_stamp_format_follows_the_field_validation(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge], validation: str,
        pattern: str) -> None:
    project = SimProject(title="t", metadata=make_metadata("record_id", [
        ("mobile", "contact", "text", ""), ("opted", "contact", "text", validation)]))
    project.add_record("1", {"mobile": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project), opt_out_field="opted",
                                         opt_out_checkbox=None)])
    bridge.text("STOP")
    bridge.drain()
    assert re.match(pattern, project.value("1", "opted"))


def test_no_match_writes_nothing_and_creates_no_record(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": "(202) 555-0143"})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge.drain()
    assert bridge.job_statuses() == ["unmatched"]
    assert project.record_ids() == ["1"]
    assert imports(sim) == 0


def test_start_clears_the_field_and_the_checkbox_only(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project()
    project.add_record("1", {"mobile": PARTICIPANT, "sms_opt_out": "2026-01-02 03:04:05",
                             "sms_opted_out___1": "1", "email": "p@example.org"})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("START")
    bridge.drain()
    assert project.value("1", "sms_opt_out") == ""
    assert project.value("1", "sms_opted_out___1") == "0"
    assert project.value("1", "email") == "p@example.org"
    assert project.value("1", "mobile") == PARTICIPANT


def test_repeated_stop_keeps_the_first_opt_out_time(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project()
    project.add_record("1", {"mobile": PARTICIPANT, "sms_opt_out": "2026-01-02 03:04:05",
                             "sms_opted_out___1": "1"})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge.drain()
    assert project.value("1", "sms_opt_out") == "2026-01-02 03:04:05"
    assert imports(sim) == 0
    assert bridge.job_statuses() == ["applied"]


def test_stop_start_stop_applied_one_at_a_time(sim: RedcapSimulator,
                                               make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    for body, opted_out in (("STOP", True), ("START", False), ("STOP", True)):
        bridge.text(body)
        bridge.drain()
        assert (project.value("1", "sms_opt_out") != "") is opted_out
    assert bridge.job_statuses() == ["applied"] * 3


def test_stop_then_start_in_one_batch_writes_only_start(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project()
    project.add_record("1", {"mobile": PARTICIPANT, "sms_opt_out": "2026-01-02 03:04:05",
                             "sms_opted_out___1": "1"})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge.text("START")
    bridge.drain()
    assert bridge.job_statuses() == ["superseded", "applied"]
    assert project.value("1", "sms_opt_out") == ""
    assert imports(sim) == 1


def test_an_older_event_is_never_applied_over_a_newer_one(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge.text("START")
    conn = bridge.store.read()
    # The older STOP is delayed (as after a retry) while the newer START is applied.
    conn.execute("UPDATE jobs SET next_attempt_at=9e12 WHERE action='stop'")
    bridge.drain()
    conn.execute("UPDATE jobs SET next_attempt_at=0 WHERE action='stop'")
    bridge.drain()
    assert bridge.job_statuses() == ["superseded", "applied"]
    assert project.value("1", "sms_opt_out") == ""


def test_duplicate_delivery_is_applied_once(sim: RedcapSimulator,
                                            make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    params = twilio_params("STOP")
    for _ in range(10):
        assert bridge.post(params).status_code == 200
    bridge.drain()
    assert project.imports_per_record["1"] == 1


def test_redcap_down_then_back(sim: RedcapSimulator,
                               make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    sim.inject(Fault.status(503), times=2)
    sim.inject(Fault.reset(), times=1)
    sim.inject(Fault.status(500), times=1)
    sim.inject(Fault.status(429), times=1)
    bridge.drain()
    assert bridge.job_statuses() == ["applied"]
    assert project.value("1", "sms_opt_out") != ""
    attempts = bridge.store.read().execute("SELECT attempts FROM jobs").fetchone()[0]
    assert attempts == 6


def test_timeout_is_retried(sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))],
                         request_timeout_seconds=0.3)
    bridge.text("STOP")
    sim.inject(Fault.slow(1.0), times=1)
    bridge.drain()
    assert bridge.job_statuses() == ["applied"]


def test_transient_failure_backs_off(sim: RedcapSimulator,
                                     make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))],
                         retry_base_seconds=60.0, retry_max_seconds=600.0)
    bridge.text("STOP")
    sim.inject(Fault.status(503), times=1)
    bridge.worker.tick()
    row = bridge.store.read().execute("SELECT status, next_attempt_at, last_error FROM jobs"
                                      ).fetchone()
    assert row["status"] == "pending"
    assert "503" in row["last_error"]
    assert 29 <= row["next_attempt_at"] - time.time() <= 61


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else(
        status: int, sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    """A 307/308 would resend the token to the redirect's target, a 301/302 lose the import."""
    project = classic_project({"1": PARTICIPANT})
    token = sim.add_project(project)
    redirector = Redirector(status, sim.api_url + "?session=secret")
    try:
        bridge = make_bridge([project_config(sim, token,
                                             redcap=RedcapTarget(redirector.url, token))])
        bridge.text("STOP")
        bridge.worker.tick()
    finally:
        redirector.close()
    row = bridge.store.read().execute("SELECT status, last_error FROM jobs").fetchone()
    assert row["status"] == "pending"  # retried later: maintenance redirects end
    assert f"REDCap HTTP {status}: redirected to {sim.api_url}, not followed" in \
        row["last_error"]
    assert "secret" not in row["last_error"]
    assert redirector.requests == 1  # one request, one budget token
    assert sim.calls == []


def test_an_untrusted_certificate_is_retried_with_the_fix_in_the_error(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge],
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = classic_project({"1": PARTICIPANT})
    token = sim.add_project(project)
    front = TlsFront(sim.api_url)
    try:
        bridge = make_bridge([project_config(sim, token, redcap=RedcapTarget(front.url, token))])
        bridge.text("STOP")
        bridge.worker.tick()
        row = bridge.store.read().execute("SELECT status, last_error FROM jobs").fetchone()
        assert row["status"] == "pending"
        assert "TLS certificate is not trusted here" in row["last_error"]
        assert "REQUESTS_CA_BUNDLE" in row["last_error"]
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(TlsFront.CERT))  # the operator's fix
        bridge.drain()
    finally:
        front.close()
    assert bridge.job_statuses() == ["applied"]
    assert project.value("1", "sms_opted_out___1") == "1"


def test_bad_token_fails_permanently_with_redcaps_message(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    sim.add_project(classic_project({"1": PARTICIPANT}))
    bridge = make_bridge([project_config(sim, "0" * 32)])
    bridge.text("STOP")
    bridge.drain()
    row = bridge.store.read().execute("SELECT status, last_error FROM jobs").fetchone()
    assert row["status"] == "failed"
    assert "You do not have permissions to use the API" in row["last_error"]


def test_unknown_opt_out_field_fails_with_a_clear_message(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    token = sim.add_project(classic_project({"1": PARTICIPANT}))
    bridge = make_bridge([project_config(sim, token, opt_out_field="no_such_field")])
    bridge.text("STOP")
    bridge.drain()
    row = bridge.store.read().execute("SELECT status, last_error FROM jobs").fetchone()
    assert row["status"] == "failed"
    assert "no_such_field" in row["last_error"]


def test_date_only_field_is_refused(sim: RedcapSimulator,
                                    make_bridge: Callable[..., Bridge]) -> None:
    project = SimProject(title="t", metadata=make_metadata("record_id", [
        ("mobile", "contact", "text", ""), ("opted", "contact", "text", "date_ymd")]))
    project.add_record("1", {"mobile": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project), opt_out_field="opted",
                                         opt_out_checkbox=None)])
    bridge.text("STOP")
    bridge.drain()
    row = bridge.store.read().execute("SELECT status, last_error FROM jobs").fetchone()
    assert row["status"] == "failed"
    assert "date-only" in row["last_error"]
    assert project.value("1", "opted") == ""


def test_pending_jobs_survive_a_restart(sim: RedcapSimulator,
                                        make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge = bridge.restart()
    bridge.drain()
    assert project.value("1", "sms_opt_out") != ""


def test_job_in_flight_at_a_crash_is_not_written_twice(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge.drain()
    # As if the process died after REDCap answered the import but before the commit.
    bridge.store.read().execute("UPDATE jobs SET status='running'")
    bridge = bridge.restart()
    bridge.drain()
    assert bridge.job_statuses() == ["applied"]
    assert project.imports_per_record["1"] == 1


def test_record_deleted_after_indexing_is_not_recreated(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT, "2": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("START")
    bridge.drain()  # builds the index
    project.delete_record("2")
    bridge.text("STOP")
    bridge.drain()
    assert project.record_ids() == ["1"]
    assert project.value("1", "sms_opt_out") != ""


def test_record_added_after_indexing_is_found_by_a_refresh_on_miss(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": "(202) 555-0143"})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    bridge.text("STOP", "+12025550143")
    bridge.drain()
    project.add_record("2", {"mobile": "555-867-5309"})
    bridge.text("STOP")
    bridge.drain()
    assert project.value("2", "sms_opt_out") != ""
    exports = [c for c in sim.calls if c.content == "record" and c.action == "export"]
    # full index + read-back, then one incremental refresh for the miss + read-back
    assert len(exports) == 4
