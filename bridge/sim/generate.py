"""Example projects with realistic phone data, for the demo and benchmarks.

Study teams type phone numbers however they like, and the same number sits on several
records (siblings, re-enrolment). The generated project reproduces both, with numbers that
are valid US numbers for libphonenumber yet fictional: exchange 555, lines 0100–0199 while
they suffice, and the rest of exchange 555 beyond that.
"""

from __future__ import annotations

import functools
import random
from datetime import date, datetime, timedelta

import phonenumbers

from bridge.sim.model import SimProject, utc_now
from bridge.sim.schema import FieldSpec, make_metadata

# How the same number is written in free-text fields, as seen in real projects.
PHONE_FORMATS = (
    "({area}) 555-{line}",
    "{area}-555-{line}",
    "{area}.555.{line}",
    "{area}555{line}",
    "+1{area}555{line}",
    "1-{area}-555-{line}",
)
ENROLLMENT = "enrollment_arm_1"
FOLLOWUP = "followup_arm_1"


@functools.cache
def fictional_area_codes() -> tuple[str, ...]:
    """US area codes for which libphonenumber accepts ``+1 AAA 555 01NN`` as valid."""
    codes = []
    for area in range(201, 990):
        number = phonenumbers.parse(f"+1{area}5550100")
        if phonenumbers.is_valid_number(number) and (
            phonenumbers.region_code_for_number(number) == "US"
        ):
            codes.append(str(area))
    return tuple(codes)


def generate_project(
    records: int,
    shared_fraction: float = 0.05,
    seed: int = 1,
    longitudinal: bool = False,
    *,
    modified: datetime | None = None,
) -> tuple[SimProject, list[str]]:
    """A project of ``records`` records and the distinct E.164 numbers stored on them.

    ``shared_fraction`` of the distinct numbers sit on two records each (so 1000 records at
    0.05 hold 952 numbers, 48 of them twice); each occurrence is written in a randomly chosen
    format. Fields: ``record_id``, and on form ``contact`` ``mobile`` (free text, since a
    ``phone``-validated field would refuse ``+1…``), ``sms_opt_out`` (datetime_seconds_ymd)
    and ``sms_opted_out`` (checkbox ``1, Opted out``). ``longitudinal`` adds events
    ``enrollment_arm_1`` (form ``contact``) and ``followup_arm_1`` (a form ``visit`` with
    ``visit_date``, filled for about half of the records) so exports have several rows per
    record. The same ``seed`` gives the same project.

    ``modified`` (naive UTC, the simulator's clock) is the time every generated record was
    last changed; by default, now. A benchmark sets it in the past so that an incremental
    export (``dateRangeBegin``) returns only what changed since, as on a real project whose
    records were entered over months.
    """
    if records < 0 or not 0 <= shared_fraction <= 1:
        raise ValueError("records must be >= 0 and shared_fraction between 0 and 1")
    rng = random.Random(seed)
    shared = round(records * shared_fraction / (1 + shared_fraction))
    distinct = records - shared
    areas = fictional_area_codes()
    lines, first_line = (100, 100) if distinct <= len(areas) * 100 else (10_000, 0)
    if distinct > len(areas) * lines:
        raise ValueError(f"at most {len(areas) * lines} distinct numbers can be generated")
    picks = rng.sample(range(len(areas) * lines), distinct)
    numbers = [(areas[pick // lines], f"{first_line + pick % lines:04d}") for pick in picks]
    owners = numbers + numbers[:shared]
    rng.shuffle(owners)

    project = _empty_project(longitudinal)
    if modified is not None:
        project.clock = lambda: modified
    for index, (area, line) in enumerate(owners, start=1):
        mobile = rng.choice(PHONE_FORMATS).format(area=area, line=line)
        project.add_record(str(index), {"mobile": mobile})
        if longitudinal and rng.random() < 0.5:
            visit = date(2024, 1, 1) + timedelta(days=rng.randrange(365))
            project.add_record(str(index), {"visit_date": visit.isoformat()}, event=FOLLOWUP)
    project.clock = utc_now
    return project, [f"+1{area}555{line}" for area, line in numbers]


def _empty_project(longitudinal: bool) -> SimProject:
    fields: list[FieldSpec] = [
        ("mobile", "contact", "text", ""),
        ("sms_opt_out", "contact", "text", "datetime_seconds_ymd"),
        ("sms_opted_out", "contact", "checkbox", "", "1, Opted out"),
    ]
    if not longitudinal:
        return SimProject(
            title="Generated example study", metadata=make_metadata("record_id", fields)
        )
    fields.append(("visit_date", "visit", "text", "date_ymd"))
    return SimProject(
        title="Generated example study (longitudinal)",
        metadata=make_metadata("record_id", fields),
        events=[
            {"event_name": "Enrollment", "arm_num": 1, "unique_event_name": ENROLLMENT},
            {"event_name": "Follow-up", "arm_num": 1, "unique_event_name": FOLLOWUP},
        ],
        form_event_mapping=[
            {"arm_num": 1, "unique_event_name": ENROLLMENT, "form": "contact"},
            {"arm_num": 1, "unique_event_name": FOLLOWUP, "form": "visit"},
        ],
    )
