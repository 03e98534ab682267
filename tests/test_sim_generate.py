"""The example-project generator and ``python -m bridge.sim``.

The demo and the benchmark rely on the generated numbers being valid (so the bridge's
normaliser accepts them), written in mixed formats, and partly shared between records.
"""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import phonenumbers
import pytest
import requests

from bridge.sim.generate import PHONE_FORMATS, generate_project
from bridge.sim.model import ExportQuery

REPO = Path(__file__).resolve().parent.parent


def as_e164(mobile: str) -> str:
    digits = re.sub(r"\D", "", mobile)
    return "+1" + digits[-10:]


def format_of(mobile: str) -> str:
    """Which of PHONE_FORMATS wrote ``mobile``."""
    digits = as_e164(mobile)[2:]
    written = {
        template.format(area=digits[:3], line=digits[6:]): template for template in PHONE_FORMATS
    }
    return written[mobile]


def test_generated_numbers_are_valid_shared_and_mixed() -> None:
    project, numbers = generate_project(records=1000, shared_fraction=0.05, seed=7)
    assert project.record_ids() == [str(n) for n in range(1, 1001)]
    assert len(numbers) == len(set(numbers)) == 952
    for number in numbers:
        parsed = phonenumbers.parse(number)
        assert phonenumbers.is_valid_number(parsed), number
        assert phonenumbers.region_code_for_number(parsed) == "US"
        assert number[5:9] == "5550"  # fictional 555-01xx lines while they suffice
    mobiles = [project.value(record_id, "mobile") for record_id in project.record_ids()]
    owners = Counter(as_e164(mobile) for mobile in mobiles)
    assert set(owners) == set(numbers)
    assert Counter(owners.values()) == {1: 952 - 48, 2: 48}
    assert set(map(format_of, mobiles)) == set(PHONE_FORMATS)


def test_generated_project_design() -> None:
    project, _ = generate_project(records=10, shared_fraction=0.0, seed=1)
    fields = {row["field_name"]: row for row in project.metadata()}
    assert list(fields) == ["record_id", "mobile", "sms_opt_out", "sms_opted_out"]
    assert fields["mobile"]["text_validation_type_or_show_slider_number"] == ""
    assert fields["sms_opt_out"]["text_validation_type_or_show_slider_number"] == (
        "datetime_seconds_ymd"
    )
    assert fields["sms_opted_out"]["select_choices_or_calculations"] == "1, Opted out"
    assert {row["form_name"] for row in fields.values()} == {"contact"}
    assert not project.longitudinal


def test_longitudinal_project() -> None:
    project, numbers = generate_project(
        records=200, shared_fraction=0.05, seed=3, longitudinal=True
    )
    assert [event["unique_event_name"] for event in project.events()] == [
        "enrollment_arm_1",
        "followup_arm_1",
    ]
    assert {(m["unique_event_name"], m["form"]) for m in project.form_event_mapping()} == {
        ("enrollment_arm_1", "contact"),
        ("followup_arm_1", "visit"),
    }
    rows, records = project.export_records(
        ExportQuery(fields=["record_id", "mobile", "visit_date"])
    )
    assert records == 200
    followups = [row for row in rows if row["redcap_event_name"] == "followup_arm_1"]
    assert 50 < len(followups) < 150
    assert all(row["mobile"] == "" and row["visit_date"] for row in followups)
    assert len(numbers) == 200 - 10


def test_same_seed_same_project() -> None:
    first, first_numbers = generate_project(records=50, shared_fraction=0.1, seed=5)
    second, second_numbers = generate_project(records=50, shared_fraction=0.1, seed=5)
    _, other_numbers = generate_project(records=50, shared_fraction=0.1, seed=6)
    assert first_numbers == second_numbers != other_numbers
    mobiles = [first.value(r, "mobile") for r in first.record_ids()]
    assert mobiles == [second.value(r, "mobile") for r in second.record_ids()]


def test_beyond_the_555_01xx_lines_numbers_stay_valid() -> None:
    _, numbers = generate_project(records=40_000, shared_fraction=0.0, seed=2)
    assert len(set(numbers)) == 40_000
    assert any(number[5:9] != "5550" for number in numbers)
    for number in numbers[::400]:
        assert phonenumbers.is_valid_number(phonenumbers.parse(number)), number



def test_records_can_look_old_so_incremental_exports_see_only_later_changes() -> None:
    project, _ = generate_project(records=20, seed=3, modified=datetime(2020, 1, 1))
    project.add_record("5", {"mobile": "202-555-0100"})  # changed now
    rows, records = project.export_records(
        ExportQuery(fields=["record_id"], modified_from=datetime(2024, 1, 1)))
    assert rows == [{"record_id": "5"}]
    assert records == 1

@pytest.mark.parametrize(("records", "fraction"), [(-1, 0.1), (10, 1.5), (10, -0.1)])
def test_bad_arguments(records: int, fraction: float) -> None:
    with pytest.raises(ValueError):
        generate_project(records=records, shared_fraction=fraction, seed=1)


def test_command_line_serves_until_sigterm() -> None:
    command = [sys.executable, "-m", "bridge.sim", "--records", "30", "--longitudinal"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            # The three start-up lines are flushed together.
            ready, _, _ = select.select([process.stdout], [], [], 10)
            assert ready, "no start-up output"
            lines = [process.stdout.readline() for _ in range(3)]
            url = lines[0].split()[-1]
            token = lines[1].split()[-1]
            assert url.startswith("http://127.0.0.1:") and url.endswith("/api/")
            response = requests.post(
                url,
                data={"token": token, "content": "record", "format": "json", "fields": "record_id"},
                timeout=10,
            )
            assert {row["record_id"] for row in response.json()} == {str(n) for n in range(1, 31)}
            assert response.json()[0]["redcap_event_name"] == "enrollment_arm_1"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()
