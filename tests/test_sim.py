"""The REDCap API simulator's API behaviour, exercised over real HTTP.

Every status code and message here is one the bridge's REDCap client will meet from real
REDCap (see /work/shared/reference/redcap-api.md), so they are pinned exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pytest
import requests

from bridge.sim import RedcapSimulator, SimProject, make_metadata
from bridge.sim.schema import METADATA_KEYS

JSON_TYPE = "application/json; charset=utf-8"
FIELDS = [
    ("mobile", "contact", "text", "phone"),
    ("cell_free", "contact", "text", ""),
    ("sms_opt_out", "contact", "text", "datetime_seconds_ymd"),
    ("opt_out_minute", "contact", "text", "datetime_ymd"),
    ("sms_opted_out", "contact", "checkbox", "", "1, Opted out | 2, Other"),
    ("visit_date", "visit", "text", "date_ymd"),
]
EVENTS = [
    {"event_name": "Enrollment", "arm_num": 1, "unique_event_name": "enrollment_arm_1"},
    {"event_name": "Follow-up", "arm_num": 1, "unique_event_name": "followup_arm_1"},
]
MAPPING = [
    {"arm_num": 1, "unique_event_name": "enrollment_arm_1", "form": "contact"},
    {"arm_num": 1, "unique_event_name": "followup_arm_1", "form": "visit"},
]
NOT_DESIGNATED = (
    "This field ('{field}') exists on an instrument that is not designated for the event "
    "named '{event}'. You are not allowed to import data for this field into this event."
)
BAD_DATETIME = (
    "Invalid date format. (NOTE: Dates must be imported here only in Y-M-D H:M[:S] format, "
    "regardless of the specific date format designated for this field.)"
)


class Api:
    """A thin REDCap client for one project: list values become ``name[i]`` parameters."""

    def __init__(self, simulator: RedcapSimulator, project: SimProject) -> None:
        self.project = project
        self.token = simulator.add_project(project)
        self.url = simulator.api_url
        self.session = requests.Session()

    def post(self, **params: Any) -> requests.Response:
        data: dict[str, str] = {"token": self.token, "format": "json"}
        for name, value in params.items():
            if isinstance(value, list):
                data.update({f"{name}[{i}]": item for i, item in enumerate(value)})
            else:
                data[name] = value
        return self.session.post(self.url, data=data, timeout=10)

    def export(self, **params: Any) -> list[dict[str, str]]:
        response = self.post(content="record", **params)
        assert response.status_code == 200, response.text
        rows: list[dict[str, str]] = response.json()
        return rows

    def import_rows(self, rows: Sequence[dict[str, Any]], **params: Any) -> requests.Response:
        return self.post(content="record", action="import", data=json.dumps(rows), **params)


def error_of(response: requests.Response, status: int) -> str:
    """The message of an error answer, after checking REDCap's error shape."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == JSON_TYPE
    message: str = response.json()["error"]
    return message


@pytest.fixture(scope="module")
def simulator() -> Iterator[RedcapSimulator]:
    with RedcapSimulator(rate_limit_per_minute=None) as simulator:
        yield simulator


@pytest.fixture
def classic(simulator: RedcapSimulator) -> Api:
    project = SimProject(title="Heart study", metadata=make_metadata("record_id", FIELDS))
    project.add_record("1", {"mobile": "(555) 867-5309", "sms_opted_out___2": "1"})
    project.add_record("10", {"cell_free": "+1 555 867 5309"})
    project.add_record("2", {"cell_free": "x"})
    return Api(simulator, project)


@pytest.fixture
def longitudinal(simulator: RedcapSimulator) -> Api:
    project = SimProject(
        title="Cohort",
        metadata=make_metadata("record_id", FIELDS),
        events=EVENTS,
        form_event_mapping=MAPPING,
    )
    project.add_record("1", {"mobile": "(555) 867-5309"})
    project.add_record("1", {"visit_date": "2024-02-03"}, event="followup_arm_1")
    return Api(simulator, project)


@pytest.fixture
def repeating(simulator: RedcapSimulator) -> Api:
    project = SimProject(
        title="Visits", metadata=make_metadata("record_id", FIELDS), repeating_forms=["visit"]
    )
    project.add_record("1", {"mobile": "(555) 867-5309"})
    project.add_record("1", {"visit_date": "2024-01-01"}, repeat_instrument="visit", instance=1)
    project.add_record("1", {"visit_date": "2024-02-01"}, repeat_instrument="visit", instance=2)
    return Api(simulator, project)


# -- transport, tokens, rights ---------------------------------------------------------


def test_version_is_plain_text(classic: Api) -> None:
    response = classic.post(content="version")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "15.7.6"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_methods_other_than_post_get_501(classic: Api, method: str) -> None:
    response = classic.session.request(method, classic.url, timeout=10)
    assert response.status_code == 501


@pytest.mark.parametrize(
    "token",
    ["", "abc", "0123456789abcdef0123456789abcdef", "0123456789ABCDEF0123456789ABCDEF"],
)
def test_unknown_or_malformed_token_is_403(classic: Api, token: str) -> None:
    response = classic.session.post(
        classic.url, data={"token": token, "content": "record", "format": "json"}, timeout=10
    )
    assert error_of(response, 403) == "You do not have permissions to use the API"


def test_missing_rights_are_403(simulator: RedcapSimulator) -> None:
    metadata = make_metadata("record_id", FIELDS)
    export_only = Api(simulator, SimProject("A", metadata, can_import=False))
    import_only = Api(simulator, SimProject("B", metadata, can_export=False))
    assert error_of(export_only.import_rows([{"record_id": "1"}]), 403) == (
        "You do not have API Import/Update privileges"
    )
    assert export_only.export() == []
    assert error_of(import_only.post(content="record"), 403) == (
        "You do not have API Export privileges"
    )
    assert error_of(import_only.post(content="metadata"), 403) == (
        "You do not have API Export privileges"
    )
    assert import_only.import_rows([{"record_id": "1"}]).json() == {"count": 1}


def test_unknown_content_is_400(classic: Api) -> None:
    message = error_of(classic.post(content="recordz"), 400)
    assert message == 'The value of the parameter "content" is not valid'


def test_real_but_unsimulated_content_says_so(classic: Api) -> None:
    assert "not supported by the simulator" in error_of(classic.post(content="arm"), 400)


@pytest.mark.parametrize("params", [{"format": "csv"}, {"returnFormat": "xml"}])
def test_only_json_is_supported(classic: Api, params: dict[str, str]) -> None:
    assert "not supported by the simulator" in error_of(
        classic.post(content="record", **params), 400
    )


def test_missing_format_is_refused_not_answered_in_xml(classic: Api) -> None:
    response = classic.session.post(
        classic.url, data={"token": classic.token, "content": "record"}, timeout=10
    )
    assert "format=json" in error_of(response, 400)


@pytest.mark.parametrize("params", [{"filterLogic": "[mobile] = '1'"}, {"type": "eav"}])
def test_unsupported_export_options_are_refused(classic: Api, params: dict[str, str]) -> None:
    assert "not supported by the simulator" in error_of(
        classic.post(content="record", **params), 400
    )


# -- project, metadata, events ---------------------------------------------------------


def test_project_info(classic: Api, longitudinal: Api, repeating: Api) -> None:
    info = classic.post(content="project").json()
    assert info["project_title"] == "Heart study"
    assert info["is_longitudinal"] == 0
    assert info["has_repeating_instruments_or_events"] == 0
    assert longitudinal.post(content="project").json()["is_longitudinal"] == 1
    assert repeating.post(content="project").json()["has_repeating_instruments_or_events"] == 1


def test_metadata_rows_have_redcaps_keys_and_record_id_first(classic: Api) -> None:
    rows = classic.post(content="metadata").json()
    assert [row["field_name"] for row in rows] == ["record_id"] + [f[0] for f in FIELDS]
    assert all(tuple(row) == METADATA_KEYS for row in rows)
    assert rows[0]["form_name"] == "contact"
    checkbox = rows[5]
    assert checkbox["field_type"] == "checkbox"
    assert checkbox["select_choices_or_calculations"] == "1, Opted out | 2, Other"
    assert rows[3]["text_validation_type_or_show_slider_number"] == "datetime_seconds_ymd"


def test_metadata_filters_and_unknown_names(classic: Api) -> None:
    rows = classic.post(content="metadata", fields=["mobile"], forms=["visit"]).json()
    assert [row["field_name"] for row in rows] == ["mobile", "visit_date"]
    message = error_of(classic.post(content="metadata", fields=["mobile", "nope"]), 400)
    assert message == "The following values in the parameter \"fields\" are not valid: 'nope'"


def test_events_and_mapping_of_a_longitudinal_project(longitudinal: Api) -> None:
    events = longitudinal.post(content="event").json()
    assert [(e["unique_event_name"], e["arm_num"]) for e in events] == [
        ("enrollment_arm_1", 1),
        ("followup_arm_1", 1),
    ]
    assert set(events[0]) == {
        "event_name",
        "arm_num",
        "unique_event_name",
        "custom_event_label",
        "event_id",
    }
    assert longitudinal.post(content="formEventMapping").json() == MAPPING


@pytest.mark.parametrize("content", ["event", "formEventMapping"])
def test_classic_projects_have_no_events(classic: Api, content: str) -> None:
    message = error_of(classic.post(content=content), 400)
    assert message == "You cannot export events for classic projects"


# -- export ----------------------------------------------------------------------------


def test_export_all_columns_in_redcap_order(classic: Api) -> None:
    rows = classic.export()
    assert [row["record_id"] for row in rows] == ["1", "2", "10"]
    assert list(rows[0]) == [
        "record_id",
        "mobile",
        "cell_free",
        "sms_opt_out",
        "opt_out_minute",
        "sms_opted_out___1",
        "sms_opted_out___2",
        "contact_complete",
        "visit_date",
        "visit_complete",
    ]
    assert rows[0]["mobile"] == "(555) 867-5309"
    assert (rows[0]["sms_opted_out___1"], rows[0]["sms_opted_out___2"]) == ("0", "1")
    assert (rows[0]["contact_complete"], rows[0]["visit_complete"]) == ("0", "")
    assert all(isinstance(value, str) for row in rows for value in row.values())


def test_record_id_is_not_added_when_fields_are_given(classic: Api) -> None:
    assert classic.export(fields=["mobile"])[0] == {"mobile": "(555) 867-5309"}
    assert classic.export(fields=["mobile", "record_id"])[0] == {
        "record_id": "1",
        "mobile": "(555) 867-5309",
    }


def test_fields_as_a_comma_string(classic: Api) -> None:
    assert classic.export(fields="record_id, mobile") == classic.export(
        fields=["record_id", "mobile"]
    )


def test_checkbox_fields_are_asked_for_by_name_and_come_expanded(classic: Api) -> None:
    assert classic.export(fields=["sms_opted_out"], records=["1"]) == [
        {"sms_opted_out___1": "0", "sms_opted_out___2": "1"}
    ]


def test_forms_filter_includes_record_id_and_status(classic: Api) -> None:
    row = classic.export(forms=["visit"], records=["1"])[0]
    assert list(row) == ["visit_date", "visit_complete"]
    assert next(iter(classic.export(forms=["contact"])[0])) == "record_id"


def test_unknown_export_names_are_listed(classic: Api, longitudinal: Api) -> None:
    message = error_of(classic.post(content="record", fields=["nope", "redcap_event_name"]), 400)
    assert message == (
        "The following values in the parameter \"fields\" are not valid: 'nope', "
        "'redcap_event_name'"
    )
    message = error_of(classic.post(content="record", forms=["nope"]), 400)
    assert message == "The following values in the parameter \"forms\" are not valid: 'nope'"
    message = error_of(longitudinal.post(content="record", events=["nope_arm_1"]), 400)
    assert message == "The following values in the parameter \"events\" are not valid: 'nope_arm_1'"


def test_records_filter(classic: Api) -> None:
    rows = classic.export(records=["10", "1", "404"], fields=["record_id"])
    assert rows == [{"record_id": "1"}, {"record_id": "10"}]
    assert classic.export(records=["404"]) == []


def test_date_range_filters_on_modification_time(classic: Api) -> None:
    project = classic.project
    project.clock = lambda: datetime(2025, 3, 1, 12, 0, 0)
    classic.import_rows([{"record_id": "2", "cell_free": "changed"}])
    project.clock = lambda: datetime(2025, 3, 2, 12, 0, 0)
    classic.import_rows([{"record_id": "10", "cell_free": "changed"}])
    classic.import_rows([{"record_id": "2", "cell_free": "changed"}])  # no change: not modified

    # Record 1 was last modified when the fixture ran, at the real time (after 2025).
    def export_between(begin: str, end: str = "2025-12-31 23:59:59") -> list[dict[str, str]]:
        return classic.export(fields=["record_id"], dateRangeBegin=begin, dateRangeEnd=end)

    assert export_between("2025-03-01 12:00:00") == [{"record_id": "2"}, {"record_id": "10"}]
    assert export_between("2025-03-01 12:00:01") == [{"record_id": "10"}]
    assert export_between("2025-01-01 00:00:00", "2025-03-01 12:00:00") == [{"record_id": "2"}]
    assert classic.export(fields=["record_id"], dateRangeEnd="2025-03-01 12:00:00") == [
        {"record_id": "2"}
    ]
    assert "dateRangeBegin" in error_of(
        classic.post(content="record", dateRangeBegin="2025-03-01"), 400
    )


# -- import ----------------------------------------------------------------------------


def test_import_returns_count_or_ids(classic: Api) -> None:
    rows = [{"record_id": "1", "cell_free": "a"}, {"record_id": "1", "visit_date": "2024-01-01"}]
    assert classic.import_rows(rows).json() == {"count": 1}
    rows.append({"record_id": "2", "cell_free": "b"})
    assert classic.import_rows(rows, returnContent="ids").json() == ["1", "2"]


def test_unknown_record_ids_are_created(classic: Api) -> None:
    assert classic.import_rows([{"record_id": "99", "cell_free": "new"}]).json() == {"count": 1}
    assert "99" in classic.project.record_ids()
    assert classic.project.value("99", "cell_free") == "new"


def test_normal_never_blanks_and_overwrite_touches_only_present_fields(classic: Api) -> None:
    project = classic.project
    project.add_record("5", {"cell_free": "keep", "visit_date": "2024-01-01"})
    classic.import_rows([{"record_id": "5", "cell_free": "", "visit_date": "2024-05-05"}])
    assert project.value("5", "cell_free") == "keep"
    assert project.value("5", "visit_date") == "2024-05-05"
    response = classic.import_rows(
        [{"record_id": "5", "cell_free": ""}], overwriteBehavior="overwrite"
    )
    assert response.status_code == 200
    assert project.value("5", "cell_free") == ""
    assert project.value("5", "visit_date") == "2024-05-05"


def test_bad_overwrite_behavior(classic: Api) -> None:
    response = classic.import_rows([{"record_id": "1"}], overwriteBehavior="replace")
    assert error_of(response, 400) == 'The value of the parameter "overwriteBehavior" is not valid'


def test_unknown_import_fields_are_listed_in_order(classic: Api) -> None:
    response = classic.import_rows(
        [{"record_id": "1", "foo": "1"}, {"record_id": "2", "bar": "", "foo": ""}]
    )
    assert error_of(response, 400) == (
        "The following fields were not found in the project as real data fields: foo, bar"
    )


@pytest.mark.parametrize("field", ["sms_opted_out", "redcap_event_name", "redcap_repeat_instance"])
def test_names_that_are_not_data_fields_here(classic: Api, field: str) -> None:
    response = classic.import_rows([{"record_id": "1", field: "1"}])
    assert error_of(response, 400).endswith(f"real data fields: {field}")


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("sms_opt_out", "2025-03-04 05:06:07", "2025-03-04 05:06:07"),
        ("sms_opt_out", "2025-03-04T05:06:07", "2025-03-04 05:06:07"),
        ("sms_opt_out", "2025-3-4 5:06:07", "2025-03-04 05:06:07"),
        ("opt_out_minute", "2025-03-04T05:06", "2025-03-04 05:06"),
        ("mobile", "(555) 867-5309", "(555) 867-5309"),
        ("mobile", "555.867.5309", "(555) 867-5309"),
        ("mobile", "5558675309", "(555) 867-5309"),
        ("mobile", "555-867-5309", "555-867-5309"),
        ("mobile", "555 867 5309 ext. 12", "(555) 867-5309ext12"),
        ("cell_free", "+1 555 867 5309", "+1 555 867 5309"),
    ],
)
def test_values_are_stored_as_redcap_stores_them(
    classic: Api, field: str, value: str, stored: str
) -> None:
    assert classic.import_rows([{"record_id": "1", field: value}]).status_code == 200
    assert classic.export(records=["1"], fields=[field]) == [{field: stored}]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sms_opt_out", "2025-03-04 05:06"),
        ("sms_opt_out", "2025-03-04 05:06:07Z"),
        ("sms_opt_out", "2025-03-04 05:06:07+00:00"),
        ("sms_opt_out", "03/04/2025 05:06:07"),
        ("sms_opt_out", "2025-02-30 05:06:07"),
        ("opt_out_minute", "2025-03-04 05:06:07"),
    ],
)
def test_bad_datetimes_are_refused(classic: Api, field: str, value: str) -> None:
    response = classic.import_rows([{"record_id": "1", field: value}])
    assert error_of(response, 400) == f'"1","{field}","{value}","{BAD_DATETIME}"'


@pytest.mark.parametrize("value", ["+15558675309", "1-555-867-5309", "15558675309", "867-5309"])
def test_phone_validation_refuses_country_codes_and_short_numbers(classic: Api, value: str) -> None:
    response = classic.import_rows([{"record_id": "1", "mobile": value}])
    assert error_of(response, 400).startswith(f'"1","mobile","{value}","The value you provided')


def test_checkbox_import(classic: Api) -> None:
    project = classic.project
    classic.import_rows([{"record_id": "1", "sms_opted_out___1": "1", "sms_opted_out___2": "0"}])
    assert project.value("1", "sms_opted_out___1") == "1"
    assert project.value("1", "sms_opted_out___2") == "0"
    response = classic.import_rows([{"record_id": "1", "sms_opted_out___1": "yes"}])
    assert error_of(response, 400) == (
        '"1","sms_opted_out___1","yes","The value is not a valid category for sms_opted_out"'
    )


def test_import_is_all_or_nothing_and_lists_every_error(classic: Api) -> None:
    project = classic.project
    response = classic.import_rows(
        [
            {"record_id": "1", "cell_free": "should not be stored"},
            {"record_id": "2", "sms_opt_out": "yesterday", "mobile": "12"},
            {"record_id": "77", "cell_free": "nor created"},
            {"record_id": "", "cell_free": "x"},
        ]
    )
    lines = error_of(response, 400).split("\n")
    assert [line.split(",")[:2] for line in lines] == [
        ['"2"', '"sms_opt_out"'],
        ['"2"', '"mobile"'],
        ['""', '"record_id"'],
    ]
    assert project.value("1", "cell_free") == ""
    assert "77" not in project.record_ids()
    assert project.imports_per_record == {}


@pytest.mark.parametrize(
    "data", ["", "not json", "{}", '{"record_id": "1"}', '[["1"]]', '[{"a": {}}]']
)
def test_malformed_data(classic: Api, data: str) -> None:
    response = classic.post(content="record", action="import", data=data)
    assert error_of(response, 400).startswith("The data being imported is not formatted correctly.")


def test_json_numbers_and_null_are_accepted(classic: Api) -> None:
    assert classic.import_rows([{"record_id": 3, "cell_free": None}]).json() == {"count": 1}
    assert "3" in classic.project.record_ids()


def test_imports_per_record_counts_calls(classic: Api) -> None:
    classic.import_rows([{"record_id": "1"}, {"record_id": "1", "cell_free": "a"}])
    classic.import_rows([{"record_id": "1"}, {"record_id": "2"}])
    assert classic.project.imports_per_record == {"1": 2, "2": 1}


# -- longitudinal projects -------------------------------------------------------------


def test_longitudinal_export_has_one_row_per_event(longitudinal: Api) -> None:
    rows = longitudinal.export(fields=["record_id", "mobile", "visit_date"])
    assert rows == [
        {
            "record_id": "1",
            "redcap_event_name": "enrollment_arm_1",
            "mobile": "(555) 867-5309",
            "visit_date": "",
        },
        {
            "record_id": "1",
            "redcap_event_name": "followup_arm_1",
            "mobile": "",
            "visit_date": "2024-02-03",
        },
    ]
    assert longitudinal.export(fields=["mobile"]) == [{"mobile": "(555) 867-5309"}, {"mobile": ""}]
    assert longitudinal.export(fields=["record_id"], events=["followup_arm_1"]) == [
        {"record_id": "1", "redcap_event_name": "followup_arm_1"}
    ]


def test_row_without_event_goes_to_the_first_event(longitudinal: Api) -> None:
    longitudinal.import_rows([{"record_id": "2", "cell_free": "x"}])
    assert longitudinal.project.value("2", "cell_free", event="enrollment_arm_1") == "x"


def test_empty_and_unknown_event_names(longitudinal: Api) -> None:
    response = longitudinal.import_rows([{"record_id": "1", "redcap_event_name": ""}])
    assert error_of(response, 400) == (
        '"1","redcap_event_name","","The record event name is missing."'
    )
    response = longitudinal.import_rows(
        [
            {"record_id": "1", "redcap_event_name": "baseline_arm_1"},
            {"record_id": "1", "redcap_event_name": "week_2_arm_1"},
        ]
    )
    assert error_of(response, 400) == (
        "The following values of redcap_event_name are invalid: baseline_arm_1, week_2_arm_1"
    )


def test_field_on_a_form_not_designated_for_the_event(longitudinal: Api) -> None:
    response = longitudinal.import_rows(
        [
            {
                "record_id": "1",
                "redcap_event_name": "followup_arm_1",
                "sms_opt_out": "2025-01-01 00:00:00",
            }
        ]
    )
    message = NOT_DESIGNATED.format(field="sms_opt_out", event="Follow-up (Arm 1: Arm 1)")
    assert error_of(response, 400) == f'"1","sms_opt_out","2025-01-01 00:00:00","{message}"'
    # A blank value is no data, so an exported row can be imported back unchanged.
    response = longitudinal.import_rows(
        [{"record_id": "1", "redcap_event_name": "followup_arm_1", "sms_opt_out": ""}]
    )
    assert response.status_code == 200


# -- repeating instruments and events --------------------------------------------------


def test_repeating_export_has_repeat_keys_next_to_record_id(repeating: Api) -> None:
    rows = repeating.export(fields=["record_id", "mobile", "visit_date"])
    assert [
        (r["redcap_repeat_instrument"], r["redcap_repeat_instance"], r["visit_date"]) for r in rows
    ] == [("", "", ""), ("visit", "1", "2024-01-01"), ("visit", "2", "2024-02-01")]
    assert list(rows[0])[:3] == ["record_id", "redcap_repeat_instrument", "redcap_repeat_instance"]
    # Rows of a repeating form carry nothing asked for when none of its fields is.
    assert repeating.export(fields=["record_id", "mobile"]) == [
        {
            "record_id": "1",
            "redcap_repeat_instrument": "",
            "redcap_repeat_instance": "",
            "mobile": "(555) 867-5309",
        }
    ]
    assert repeating.export(fields=["mobile"]) == [{"mobile": "(555) 867-5309"}]


def test_repeating_instrument_import(repeating: Api) -> None:
    row = {"record_id": "1", "redcap_repeat_instrument": "visit", "redcap_repeat_instance": "3"}
    assert repeating.import_rows([{**row, "visit_date": "2024-03-01"}]).status_code == 200
    assert repeating.project.value("1", "visit_date", repeat_instrument="visit", instance=3) == (
        "2024-03-01"
    )


@pytest.mark.parametrize(
    ("row", "field", "message_start"),
    [
        (
            {"redcap_repeat_instrument": "contact", "redcap_repeat_instance": "1"},
            "redcap_repeat_instrument",
            "redcap_repeat_instrument must be the unique form name of a Repeating Instrument",
        ),
        (
            {"redcap_repeat_instrument": "visit", "redcap_repeat_instance": ""},
            "redcap_repeat_instance",
            "redcap_repeat_instance must be a whole number",
        ),
        (
            {"redcap_repeat_instance": "2", "cell_free": "x"},
            "redcap_repeat_instance",
            "redcap_repeat_instance cannot have a value",
        ),
        (
            {"visit_date": "2024-03-01"},
            "visit_date",
            "This field ('visit_date') exists on a repeating instrument",
        ),
        (
            {
                "redcap_repeat_instrument": "visit",
                "redcap_repeat_instance": "1",
                "cell_free": "x",
            },
            "cell_free",
            "This field ('cell_free') is not on the repeating instrument 'visit'",
        ),
    ],
)
def test_repeat_key_rules(
    repeating: Api, row: dict[str, str], field: str, message_start: str
) -> None:
    message = error_of(repeating.import_rows([{"record_id": "1", **row}]), 400)
    cells = message.split('","')
    assert cells[1] == field
    assert cells[3].startswith(message_start)


def test_repeating_event_needs_an_instance(simulator: RedcapSimulator) -> None:
    project = SimProject(
        title="Diary",
        metadata=make_metadata("record_id", FIELDS),
        events=EVENTS,
        form_event_mapping=MAPPING,
        repeating_events=["followup_arm_1"],
    )
    api = Api(simulator, project)
    row = {"record_id": "1", "redcap_event_name": "followup_arm_1", "visit_date": "2024-01-01"}
    message = error_of(api.import_rows([row]), 400)
    assert "redcap_repeat_instance must be a whole number" in message
    response = api.import_rows([{**row, "redcap_repeat_instance": "2"}])
    assert response.status_code == 200
    rows = api.export(fields=["record_id", "visit_date"])
    assert rows == [
        {
            "record_id": "1",
            "redcap_event_name": "followup_arm_1",
            "redcap_repeat_instrument": "",
            "redcap_repeat_instance": "2",
            "visit_date": "2024-01-01",
        }
    ]
