"""History, status, retry and consent lookup: the queries and the commands an operator runs."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge import history
from bridge.sim import RedcapSimulator, SimProject, make_metadata
from bridge.store import Store
from tests.conftest import (
    AUTH_TOKEN,
    PARTICIPANT,
    Bridge,
    classic_project,
    make_config,
    project_config,
)
from tests.opsutil import bridge_yaml, project_entry, run_cli
from tests.process import ROOT

OTHER = "+12025550143"
STRANGER = "+13125550199"


@dataclass
class Traffic:
    bridge: Bridge
    project: SimProject
    config: Path


@pytest.fixture
def traffic(tmp_path: Path, sim: RedcapSimulator,
            make_bridge: Callable[..., Bridge]) -> Traffic:
    """Four events: an applied STOP, a HELP, an unmatched START and a STOP that failed
    because the token lost its import right."""
    project = classic_project({"1": "555-867-5309", "2": "(202) 555-0143"})
    token = sim.add_project(project)
    bridge = make_bridge([project_config(sim, token)])
    bridge.text("STOP")
    bridge.text("HELP", OTHER)
    bridge.text("START", STRANGER)
    bridge.drain()
    project.can_import = False
    bridge.text("STOP", OTHER)
    bridge.drain()
    assert bridge.job_statuses() == ["applied", "help", "unmatched", "failed"]
    return Traffic(bridge, project, bridge_yaml(tmp_path, [project_entry(sim, token)]))


def events_cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> str:
    assert run_cli(["events", "--config", str(config), *args]) == 0
    return capsys.readouterr().out


# -- events ------------------------------------------------------------------------------------

def test_events_table_masks_numbers_and_shows_outcomes(traffic: Traffic,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = events_cli(capsys, traffic.config)
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["ID", "TIME", "(UTC)", "PROJECT", "PHONE"]
    assert len(lines) == 5
    assert "+1555***5309" in out and PARTICIPANT not in out
    assert "applied" in lines[1] and " 1 " in lines[1]  # record 1
    assert "failed" in lines[4] and "Import/Update privileges" in lines[4]


def test_events_show_phone(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    assert PARTICIPANT in events_cli(capsys, traffic.config, "--show-phone")


def test_events_csv(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(csv.DictReader(io.StringIO(events_cli(capsys, traffic.config, "--format",
                                                      "csv"))))
    assert [row["outcome"] for row in rows] == ["applied", "help", "unmatched", "failed"]
    assert [row["event"] for row in rows] == ["stop", "help", "start", "stop"]
    assert rows[0]["records"] == "1" and rows[0]["phone"] == "+1555***5309"
    assert rows[0]["attempts"] == "1" and rows[0]["last_error"] == ""
    assert rows[3]["records"] == "" and "Import/Update" in rows[3]["last_error"]
    assert all(row["message_sid"].startswith("SM") for row in rows)


def test_events_json_with_filters(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    def ids(*args: str) -> list[int]:
        return [event["id"] for event in json.loads(
            events_cli(capsys, traffic.config, "--format", "json", *args))]

    every = ids()
    assert len(every) == 4
    assert ids("--project", "heart-study") == every
    assert ids("--status", "failed") == [every[3]]
    # any way of writing the number finds it
    assert ids("--phone", "(202) 555-0143") == [every[1], every[3]]
    assert ids("--phone", "+1 202 555 0143") == [every[1], every[3]]
    assert ids("--since", "2000-01-01") == every
    assert ids("--since", "2999-01-01T00:00:00+02:00") == []
    assert ids("--limit", "2") == every[2:]


def test_events_stream_in_batches_oldest_first(traffic: Traffic) -> None:
    store = traffic.bridge.store
    every = history.list_events(store)
    assert [event.id for event in every] == sorted(event.id for event in every)
    assert list(history.iter_events(store, batch=1)) == every
    newest = history.EventFilter(limit=3)
    assert list(history.iter_events(store, newest, batch=2)) == every[1:]


def test_events_json_is_what_json_dumps_writes(traffic: Traffic,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Streamed a piece at a time, the JSON is still byte for byte the whole list's."""
    every = history.list_events(traffic.bridge.store)
    for show in (False, True):
        expected = json.dumps([event.as_dict(show) for event in every], indent=2) + "\n"
        assert "".join(history.events_json(every, show)) == expected
    assert events_cli(capsys, traffic.config, "--format", "json") == expected.replace(
        PARTICIPANT, "+1555***5309").replace(OTHER, "+1202***0143").replace(
        STRANGER, "+1312***0199")
    assert "".join(history.events_json([])) == json.dumps([], indent=2) + "\n"


def test_empty_history(tmp_path: Path, sim: RedcapSimulator,
                       capsys: pytest.CaptureFixture[str]) -> None:
    token = sim.add_project(classic_project())
    config = bridge_yaml(tmp_path, [project_entry(sim, token)])
    Store(tmp_path / "bridge.db").close()
    assert events_cli(capsys, config) == "no events\n"
    assert json.loads(events_cli(capsys, config, "--format", "json")) == []
    assert events_cli(capsys, config, "--format", "csv").startswith("id,time,project,phone,")
    assert len(events_cli(capsys, config, "--format", "csv").splitlines()) == 1
    assert run_cli(["status", "--config", str(config), "--format", "json"]) == 0
    status = json.loads(capsys.readouterr().out)["projects"]
    assert status == [{
        "project": "heart-study", "configured": True, "opted_out": 0, "jobs": {},
        "oldest_pending_at": None, "oldest_pending_age_seconds": None, "last_write_at": None,
        "last_error": None, "last_error_at": None, "last_error_job": None,
        "index_numbers": None, "index_refreshed_at": None, "pending": 0, "failed": 0,
    }]


@pytest.mark.parametrize(("args", "message"), [
    (["--project", "nope"], "unknown project 'nope'; configured: heart-study"),
    (["--since", "last tuesday"], "not a date: 'last tuesday'"),
    (["--phone", "call me"], "not a phone number: 'call me'"),
    (["--status", "done"], "unknown status 'done'"),
    (["--phone", "5558675309", "--region", "zz"], "unknown region 'ZZ'"),
])
def test_bad_filters_are_a_clear_error(traffic: Traffic, capsys: pytest.CaptureFixture[str],
                                       args: list[str], message: str) -> None:
    assert run_cli(["events", "--config", str(traffic.config), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and message in captured.err
    assert "Traceback" not in captured.err


def test_a_missing_store_is_an_error_not_an_empty_history(
        tmp_path: Path, sim: RedcapSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    config = bridge_yaml(tmp_path, [project_entry(sim, "A" * 32)])
    for command in (["events"], ["status"], ["retry"], ["consent", PARTICIPANT]):
        assert run_cli([*command, "--config", str(config)]) == 1
        assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "bridge.db").exists()


# -- status ------------------------------------------------------------------------------------

def test_status_numbers(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    traffic.bridge.text("STOP", STRANGER)  # waiting: not drained
    assert run_cli(["status", "--config", str(traffic.config), "--format", "json"]) == 0
    [status] = json.loads(capsys.readouterr().out)["projects"]
    assert status["opted_out"] == 1  # the applied STOP; the failed one is not in force
    assert status["jobs"] == {"applied": 1, "failed": 1, "help": 1, "pending": 1,
                              "unmatched": 1}
    assert status["pending"] == 1 and status["failed"] == 1
    assert 0 <= status["oldest_pending_age_seconds"] < 30
    assert status["last_write_at"] is not None
    assert "Import/Update privileges" in status["last_error"]
    assert status["last_error_job"] == 4
    # Two records, two numbers, read from REDCap when the worker first ran.
    assert status["index_numbers"] == 2 and status["index_refreshed_at"] is not None

    assert run_cli(["status", "--config", str(traffic.config)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["PROJECT", "OPTED", "OUT", "PENDING"]
    assert table[1].split()[:5] == ["heart-study", "1", "1", "1", "0"]
    assert f"2 ({status['index_refreshed_at'][:19].replace('T', ' ')})" in table[1]


def test_config_may_come_before_the_command_name(traffic: Traffic, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def opted_out(argv: list[str]) -> int:
        assert run_cli(argv) == 0
        return json.loads(capsys.readouterr().out)["projects"][0]["opted_out"]

    config = str(traffic.config)
    assert opted_out(["--config", config, "status", "--format", "json"]) == 1
    assert opted_out(["status", "--config", config, "--format", "json"]) == 1
    # Given on both sides, the one after the command name wins.
    assert opted_out(["--config", str(tmp_path / "elsewhere.yaml"), "status", "--config",
                      config, "--format", "json"]) == 1


def test_store_commands_run_without_the_secrets_and_the_others_do_not(
        traffic: Traffic, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = traffic.config
    text = config.read_text()
    config.write_text(text.replace(f"auth_token: {AUTH_TOKEN}",
                                   "auth_token: ${TWILIO_AUTH_TOKEN}"))
    assert "${TWILIO_AUTH_TOKEN}" in config.read_text()
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    assert run_cli(["status", "--config", str(config), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["projects"][0]["opted_out"] == 1
    assert "applied" in events_cli(capsys, config)
    assert run_cli(["retry", "--config", str(config)]) == 0
    assert "re-queued 1 failed job" in capsys.readouterr().out
    # Where the store is cannot be left to a placeholder.
    config.write_text(config.read_text().replace(str(traffic.bridge.config.storage.path),
                                                 "${BRIDGE_STORE}"))
    monkeypatch.delenv("BRIDGE_STORE", raising=False)
    assert run_cli(["status", "--config", str(config)]) == 2
    assert "environment variable BRIDGE_STORE is not set" in capsys.readouterr().err
    monkeypatch.setenv("BRIDGE_STORE", str(traffic.bridge.config.storage.path))
    # What talks to Twilio or REDCap still needs them, named.
    for argv in (["serve"], ["backfill", "--project", "heart-study", "--since", "2025-03-01"]):
        assert run_cli([*argv, "--config", str(config)]) == 2
        assert "environment variable TWILIO_AUTH_TOKEN is not set" in capsys.readouterr().err


def test_status_before_the_index_is_built(tmp_path: Path, sim: RedcapSimulator,
                                          make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge([project_config(sim, sim.add_project(classic_project()))])
    bridge.text("STOP")  # stored, but the worker has not run
    [status] = history.status_summary(bridge.config, bridge.store)
    assert status.index_numbers is None and status.index_refreshed_at is None
    assert "  -  " in history.status_table([status]).splitlines()[1]


def test_status_lists_a_retired_project_still_in_the_store(
        traffic: Traffic, tmp_path: Path, sim: RedcapSimulator,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = bridge_yaml(tmp_path, [project_entry(sim, "A" * 32, name="other-study")])
    assert run_cli(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "other-study" in out and "heart-study (not configured)" in out


# -- retry -------------------------------------------------------------------------------------

def test_retry_requeues_failed_jobs_only_and_they_then_apply(
        traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    traffic.project.can_import = True  # the operator restored the token's import right
    assert run_cli(["retry", "--config", str(traffic.config)]) == 0
    assert capsys.readouterr().out.startswith("re-queued 1 failed job: 4;")
    assert traffic.bridge.job_statuses() == ["applied", "help", "unmatched", "pending"]
    traffic.bridge.drain()
    assert traffic.bridge.job_statuses() == ["applied", "help", "unmatched", "applied"]
    assert traffic.project.value("2", "sms_opt_out") != ""
    [event] = history.list_events(traffic.bridge.store, history.EventFilter(status="applied",
                                                                             phone=OTHER))
    assert event.attempts == 2  # the failed try and the successful one
    assert run_cli(["retry", "--config", str(traffic.config)]) == 0
    assert capsys.readouterr().out == "no failed jobs\n"


def test_unmatched_opt_outs_reach_their_records_once_the_phone_field_is_fixed(
        tmp_path: Path, sim: RedcapSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    project = SimProject(title="Cohort", metadata=make_metadata("record_id", [
        ("home_phone", "contact", "text", ""), ("mobile", "contact", "text", ""),
        ("sms_opt_out", "contact", "text", "datetime_seconds_ymd"),
        ("sms_opted_out", "contact", "checkbox", "", "1, Opted out")]))
    project.add_record("1", {"mobile": "555-867-5309"})
    token = sim.add_project(project)
    wrong = Bridge(make_config(tmp_path, [project_config(sim, token, phone_field="home_phone")]))
    wrong.text("STOP")
    wrong.drain()
    assert wrong.job_statuses() == ["unmatched"]
    wrong.store.close()

    # The operator corrects phone_field and restarts; the old opt-out is still unmatched.
    fixed = Bridge(make_config(tmp_path, [project_config(sim, token)]))
    config = bridge_yaml(tmp_path, [project_entry(sim, token)])
    assert run_cli(["retry", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "no failed jobs\n"
    assert run_cli(["retry", "--config", str(config), "--job", "1"]) == 2
    assert "(with --unmatched, unmatched ones too)" in capsys.readouterr().err
    assert run_cli(["retry", "--config", str(config), "--unmatched"]) == 0
    assert capsys.readouterr().out.startswith("re-queued 1 failed or unmatched job: 1;")
    fixed.drain()
    assert fixed.job_statuses() == ["applied"]
    assert project.value("1", "sms_opt_out") != ""
    assert project.value("1", "sms_opted_out___1") == "1"
    fixed.store.close()


def test_retry_one_job(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(traffic.config)
    assert run_cli(["retry", "--config", config, "--job", "1"]) == 2
    assert "job 1 is applied, not failed" in capsys.readouterr().err
    assert run_cli(["retry", "--config", config, "--job", "99"]) == 2
    assert "no job 99" in capsys.readouterr().err
    assert run_cli(["retry", "--config", config, "--project", "nope"]) == 2
    assert "unknown project" in capsys.readouterr().err
    assert run_cli(["retry", "--config", config, "--project", "heart-study", "--job", "4"]) == 0
    assert traffic.bridge.job_statuses()[3] == "pending"


def test_a_requeued_stop_older_than_a_newer_start_is_superseded(
        traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    traffic.project.can_import = True
    traffic.bridge.text("START", OTHER)
    traffic.bridge.drain()
    assert run_cli(["retry", "--config", str(traffic.config)]) == 0
    traffic.bridge.drain()
    assert traffic.bridge.job_statuses()[3:] == ["superseded", "applied"]
    assert traffic.project.value("2", "sms_opt_out") == ""


# -- consent -----------------------------------------------------------------------------------

def test_consent_lookup(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["consent", "(555) 867-5309", "--config", str(traffic.config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("+1555***5309\n  heart-study: opted out since ")
    assert "(records: 1)" in out and PARTICIPANT not in out
    assert run_cli(["consent", OTHER, "--config", str(traffic.config), "--format", "json",
                    "--show-phone"]) == 0
    lookup = json.loads(capsys.readouterr().out)
    assert lookup["phone"] == OTHER
    assert lookup["states"] == []  # a HELP and a failed STOP change nothing
    assert [event["outcome"] for event in lookup["history"]] == ["help", "failed"]


def test_consent_of_an_unknown_number(traffic: Traffic,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["consent", "+16175550100", "--config", str(traffic.config)]) == 0
    out = capsys.readouterr().out
    assert "no opt-out or opt-in has been applied" in out and "no events" in out
    assert run_cli(["consent", "12", "--config", str(traffic.config)]) == 2
    assert "not a phone number: '12'" in capsys.readouterr().err


def test_region_reads_national_numbers(traffic: Traffic,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    traffic.bridge.text("STOP", "+442079460958")
    traffic.bridge.drain()
    assert run_cli(["consent", "020 7946 0958", "--region", "gb", "--show-phone",
                    "--config", str(traffic.config), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["history"][0]["phone"] == "+442079460958"


def test_events_as_a_real_process(traffic: Traffic) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "events", "--config", str(traffic.config),
         "--format", "csv", "--status", "applied"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["outcome"] for row in rows] == ["applied"]
    bad = subprocess.run(
        [sys.executable, "-m", "bridge", "events", "--config", str(traffic.config),
         "--since", "yesterday"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == "error: not a date: 'yesterday'; use YYYY-MM-DD or an ISO date" \
        " and time like 2026-03-01T14:30 (UTC unless an offset is given)"


def test_json_logs(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--log-format", "json", "--log-level", "debug", "retry", "--config",
                    str(traffic.config)]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("info", "bridge.history", "re-queued 1 failed jobs: 4")]
    assert set(entries[0]) == {"time", "level", "logger", "message"}
