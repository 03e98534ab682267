"""Longitudinal and repeating projects: the write lands in the configured events only."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridge.config import ProjectConfig
from bridge.sim import RedcapSimulator, SimProject, make_metadata
from tests.conftest import PARTICIPANT, Bridge, project_config

EVENTS = [
    {"event_name": "Enrollment", "arm_num": 1, "unique_event_name": "enrollment_arm_1"},
    {"event_name": "Follow-up", "arm_num": 1, "unique_event_name": "followup_arm_1"},
]


def longitudinal_project(repeating_forms: tuple[str, ...] = ()) -> SimProject:
    metadata = make_metadata("record_id", [
        ("mobile", "contact", "text", ""),
        ("sms_opt_out", "consent", "text", "datetime_ymd"),
        ("sms_opted_out", "consent", "checkbox", "", "1, Opted out | 2, Other"),
        ("visit_note", "visit", "text", ""),
    ])
    mapping = [
        {"arm_num": 1, "unique_event_name": "enrollment_arm_1", "form": "contact"},
        {"arm_num": 1, "unique_event_name": "followup_arm_1", "form": "consent"},
        {"arm_num": 1, "unique_event_name": "followup_arm_1", "form": "visit"},
    ]
    return SimProject(title="Longitudinal", metadata=metadata, events=EVENTS,
                      form_event_mapping=mapping, repeating_forms=repeating_forms)


def longitudinal_config(sim: RedcapSimulator, token: str, **overrides: object) -> ProjectConfig:
    values = {"phone_event": "enrollment_arm_1", "opt_out_event": "followup_arm_1",
              "opt_out_checkbox_event": "followup_arm_1"}
    values.update(overrides)
    return project_config(sim, token, **values)


def test_phone_in_one_event_opt_out_written_in_another(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = longitudinal_project()
    project.add_record("1", {"mobile": "555-867-5309"}, event="enrollment_arm_1")
    project.add_record("2", {"mobile": "(202) 555-0143"}, event="enrollment_arm_1")
    bridge = make_bridge([longitudinal_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge.drain()
    stamp = project.value("1", "sms_opt_out", event="followup_arm_1")
    assert len(stamp) == len("2026-01-01 00:00")
    assert project.value("1", "sms_opted_out___1", event="followup_arm_1") == "1"
    assert project.value("1", "sms_opted_out___2", event="followup_arm_1") == "0"
    assert project.value("2", "sms_opt_out", event="followup_arm_1") == ""
    bridge.text("START")
    bridge.drain()
    assert project.value("1", "sms_opt_out", event="followup_arm_1") == ""
    assert project.value("1", "sms_opted_out___1", event="followup_arm_1") == "0"
    assert bridge.job_statuses() == ["applied", "applied"]


def test_a_phone_in_another_event_is_not_matched(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = longitudinal_project()
    project.add_record("1", {"visit_note": PARTICIPANT}, event="followup_arm_1")
    bridge = make_bridge([longitudinal_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge.drain()
    assert bridge.job_statuses() == ["unmatched"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"opt_out_event": "enrollment_arm_1", "opt_out_checkbox_event": "enrollment_arm_1"},
     "not an event that form 'consent'"),
    ({"phone_event": None, "opt_out_event": None, "opt_out_checkbox_event": None},
     "longitudinal"),
])
def test_events_that_do_not_fit_the_project_fail_clearly(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge], overrides: dict,
        message: str) -> None:
    project = longitudinal_project()
    project.add_record("1", {"mobile": PARTICIPANT}, event="enrollment_arm_1")
    bridge = make_bridge([longitudinal_config(sim, sim.add_project(project), **overrides)])
    bridge.text("STOP")
    bridge.drain()
    row = bridge.store.read().execute("SELECT status, last_error FROM jobs").fetchone()
    assert row["status"] == "failed"
    assert message in row["last_error"]


def test_repeating_instrument_rows_do_not_confuse_the_read_back(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = longitudinal_project(repeating_forms=("visit",))
    project.add_record("1", {"mobile": PARTICIPANT}, event="enrollment_arm_1")
    project.add_record("1", {"visit_note": "first"}, event="followup_arm_1",
                       repeat_instrument="visit", instance=1)
    project.add_record("1", {"visit_note": "second"}, event="followup_arm_1",
                       repeat_instrument="visit", instance=2)
    bridge = make_bridge([longitudinal_config(sim, sim.add_project(project))])
    bridge.text("STOP")
    bridge.drain()
    assert project.value("1", "sms_opt_out", event="followup_arm_1") != ""
    assert project.value("1", "visit_note", event="followup_arm_1", repeat_instrument="visit",
                         instance=2) == "second"
