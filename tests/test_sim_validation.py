"""The simulator's value rules and project model, without HTTP.

The bridge's timestamps and the phone numbers it reads back pass through these rules, so
the cases below are the ones REDCap is known to treat specially.
"""

from __future__ import annotations

import pytest

from bridge.sim import SimProject, make_metadata
from bridge.sim.schema import Column, Field, Schema, checkbox_column, parse_choice_codes
from bridge.sim.validation import BAD_DATETIME, InvalidValue, clean_value


def text_column(validation: str) -> Column:
    return Column("f", "form", Field("f", "form", "text", validation, ()))


@pytest.mark.parametrize(
    ("validation", "value", "stored"),
    [
        ("datetime_seconds_ymd", "2025-01-02 03:04:05", "2025-01-02 03:04:05"),
        ("datetime_seconds_mdy", "2025-01-02T03:04:05", "2025-01-02 03:04:05"),
        ("datetime_seconds_dmy", "2025-1-2 3:04:05", "2025-01-02 03:04:05"),
        ("datetime_ymd", "2025-01-02 23:59", "2025-01-02 23:59"),
        ("datetime_dmy", "2024-02-29T00:00", "2024-02-29 00:00"),
        ("date_ymd", "2025-1-2", "2025-01-02"),
        ("phone", "(201) 555-0123", "(201) 555-0123"),
        ("phone", "201 555 0123", "(201) 555-0123"),
        ("phone", "201.555.0123", "(201) 555-0123"),
        ("phone", "201-555-0123", "201-555-0123"),
        ("phone", "201555-0123 x7", "201555-0123 x7"),
        ("phone", "2015550123#7", "(201) 555-0123#7"),
        ("integer", "-12", "-12"),
        ("number", "1.5", "1.5"),
        ("email", "a@example.org", "a@example.org"),
        ("", "anything at all", "anything at all"),
        ("unknown_validation", "kept", "kept"),
    ],
)
def test_accepted_values(validation: str, value: str, stored: str) -> None:
    assert clean_value(text_column(validation), value) == stored


@pytest.mark.parametrize(
    ("validation", "value"),
    [
        ("datetime_seconds_ymd", "2025-01-02 03:04"),
        ("datetime_seconds_ymd", "2025-01-02 24:00:00"),
        ("datetime_seconds_ymd", "2025-01-02 03:60:00"),
        ("datetime_seconds_ymd", "2025-13-02 03:04:05"),
        ("datetime_seconds_ymd", "2025-01-02 03:04:05.123"),
        ("datetime_seconds_ymd", "01/02/2025 03:04:05"),
        ("datetime_ymd", "2025-01-02"),
        ("datetime_ymd", "2023-02-29 00:00"),
    ],
)
def test_refused_datetimes(validation: str, value: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        clean_value(text_column(validation), value)
    assert refused.value.message == BAD_DATETIME


@pytest.mark.parametrize(
    ("validation", "value"),
    [
        ("phone", "+12015550123"),
        ("phone", "12015550123"),
        ("phone", "1-201-555-0123"),
        ("phone", "(111) 555-0123"),  # area codes start 2-9
        ("phone", "201-155-0123"),  # so do exchanges
        ("phone", "555-0123"),
        ("date_ymd", "2025-02-30"),
        ("integer", "1.5"),
        ("number", "one"),
        ("email", "not an address"),
    ],
)
def test_refused_values(validation: str, value: str) -> None:
    with pytest.raises(InvalidValue):
        clean_value(text_column(validation), value)


def test_choice_status_and_checkbox_columns() -> None:
    schema = Schema(
        make_metadata(
            "id",
            [
                ("colour", "f", "radio", "", "1, Red | b, Blue"),
                ("agree", "f", "yesno", ""),
                ("boxes", "f", "checkbox", "", "1, One | -2, Minus two"),
            ],
        )
    )
    assert clean_value(schema.columns["colour"], "b") == "b"
    assert clean_value(schema.columns["agree"], "0") == "0"
    assert clean_value(schema.columns["f_complete"], "2") == "2"
    assert clean_value(schema.columns["boxes___1"], "1") == "1"
    assert clean_value(schema.columns["boxes___1"], "0") == ""  # unticked is stored as absent
    for column, value in [("colour", "3"), ("agree", "yes"), ("f_complete", "3")]:
        with pytest.raises(InvalidValue, match="not a valid category"):
            clean_value(schema.columns[column], value)
    assert list(schema.columns) == [
        "id",
        "colour",
        "agree",
        "boxes___1",
        "boxes____2",
        "f_complete",
    ]


def test_choice_parsing() -> None:
    assert parse_choice_codes("1, Opted out | 2, Other, with comma") == ("1", "2")
    assert checkbox_column("boxes", "A.b") == "boxes___a_b"


def test_make_metadata_guards_against_mistakes() -> None:
    with pytest.raises(ValueError, match="record ID"):
        make_metadata("record_id", [("record_id", "f", "text", "")])
    with pytest.raises(ValueError, match="unique"):
        make_metadata("record_id", [("a", "f", "text", ""), ("a", "f", "text", "")])


def test_project_design_is_checked() -> None:
    metadata = make_metadata("record_id", [("a", "f", "text", "")])
    with pytest.raises(ValueError, match="forms"):
        SimProject("x", metadata, repeating_forms=["nope"])
    with pytest.raises(ValueError, match="events"):
        SimProject("x", metadata, repeating_events=["nope_arm_1"])
    with pytest.raises(ValueError, match="events"):
        SimProject(
            "x",
            metadata,
            events=[{"event_name": "E", "arm_num": 1, "unique_event_name": "e_arm_1"}],
            form_event_mapping=[{"arm_num": 1, "unique_event_name": "other_arm_1", "form": "f"}],
        )


def test_set_up_helpers_fail_loudly_on_typos() -> None:
    project = SimProject("x", make_metadata("record_id", [("a", "f", "text", "")]))
    with pytest.raises(KeyError):
        project.add_record("1", {"b": "1"})
    project.add_record("1", {"a": "v"})
    assert project.value("1", "a") == "v"
    assert project.value("1", "record_id") == "1"
    with pytest.raises(KeyError):
        project.value("2", "a")
    with pytest.raises(KeyError):
        project.value("1", "b")
    with pytest.raises(KeyError):
        project.add_record("1", {"a": "v"}, event="enrollment_arm_1")


def test_record_ids_in_redcap_order() -> None:
    project = SimProject("x", make_metadata("record_id", [("a", "f", "text", "")]))
    for record_id in ["10", "b", "2", "a", "1"]:
        project.add_record(record_id, {})
    assert project.record_ids() == ["1", "2", "10", "a", "b"]
