"""A simulated REDCap project: its design, its data, and REDCap's import/export rules.

Nothing here knows about HTTP. Rows are kept per record in dicts keyed by
(event, repeat instrument, instance) so that exporting a few fields of 100,000 records is a
single pass, and every public method holds the project's lock because the server is threaded.

Times are naive UTC datetimes: REDCap uses the server's local time, and the simulator's server
runs on UTC.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from threading import RLock
from typing import Any

from bridge.sim.schema import Column, Schema, complete_column
from bridge.sim.validation import InvalidValue, clean_value

EVENT_KEY = "redcap_event_name"
INSTRUMENT_KEY = "redcap_repeat_instrument"
INSTANCE_KEY = "redcap_repeat_instance"

NOT_REPEATING_INSTRUMENT = (
    "redcap_repeat_instrument must be the unique form name of a Repeating Instrument. It "
    "currently does not match the unique form name of any Repeating Instruments. Please fix "
    "this in the data import file and try again."
)
INSTANCE_NOT_ALLOWED = (
    "redcap_repeat_instance cannot have a value since this instrument or event is not a "
    "repeating instrument or repeating event, respectively. The redcap_repeat_instance field "
    "must be left blank for this row of data."
)
INSTANCE_REQUIRED = (
    "redcap_repeat_instance must be a whole number of 1 or more for a repeating instrument or "
    "repeating event."
)
BLANK_RECORD_ID = "The record ID cannot be blank."

# (unique event name or "", repeat instrument or "", instance or 0)
RowKey = tuple[str, str, int]
Clock = Callable[[], datetime]

_project_ids = itertools.count(1)


class ApiError(Exception):
    """A request REDCap answers with an error status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def utc_now() -> datetime:
    """The simulated server clock: UTC, whole seconds (REDCap logs to the second)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def invalid_values(parameter: str, values: Iterable[str]) -> ApiError:
    """REDCap's error for unknown names in an export filter such as ``fields``."""
    listed = ", ".join(f"'{value}'" for value in values)
    return ApiError(
        400, f'The following values in the parameter "{parameter}" are not valid: {listed}'
    )


@dataclass
class _Record:
    modified: datetime
    rows: dict[RowKey, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportQuery:
    """The filters of an export request; empty sequences mean "no filter".

    Checkbox fields are named as fields (``sms_opted_out``), not by their ``___code``
    columns, and ``<form>_complete`` may be named too.
    """

    records: Sequence[str] = ()
    fields: Sequence[str] = ()
    forms: Sequence[str] = ()
    events: Sequence[str] = ()
    modified_from: datetime | None = None
    modified_until: datetime | None = None


@dataclass(frozen=True)
class _PreparedRow:
    record_id: str
    key: RowKey
    # column -> value to store; None deletes the stored value.
    values: tuple[tuple[str, str | None], ...]


class SimProject:
    """One REDCap project as the API sees it.

    ``events`` makes the project longitudinal. Without ``form_event_mapping`` every form is
    designated for every event. ``repeating_forms`` repeat in every event they are designated
    for, except in events listed in ``repeating_events`` (there the whole event repeats, as
    REDCap allows no repeating instrument inside a repeating event).
    """

    def __init__(
        self,
        title: str,
        metadata: Sequence[dict[str, str]],
        events: Sequence[Mapping[str, Any]] | None = None,
        form_event_mapping: Sequence[Mapping[str, Any]] | None = None,
        repeating_forms: Iterable[str] = (),
        repeating_events: Iterable[str] = (),
        can_export: bool = True,
        can_import: bool = True,
        clock: Clock = utc_now,
    ) -> None:
        self.title = title
        self.schema = Schema(metadata)
        self.can_export = can_export
        self.can_import = can_import
        # Replaceable so tests can pin modification times for dateRangeBegin/End.
        self.clock = clock
        self.project_id = next(_project_ids)
        self._imports_per_record: Counter[str] = Counter()
        self._lock = RLock()
        self._records: dict[str, _Record] = {}
        self._sorted_ids: list[str] | None = None
        self._creation_time = clock()
        self._events = [_event_row(event, index) for index, event in enumerate(events or ())]
        self._event_names = [event["unique_event_name"] for event in self._events]
        arms = {event["unique_event_name"]: event["arm_num"] for event in self._events}
        if form_event_mapping is None:
            mapping = [(name, form) for name in self._event_names for form in self.schema.forms]
        else:
            mapping = [(str(m["unique_event_name"]), str(m["form"])) for m in form_event_mapping]
        self._mapping = [
            {"arm_num": arms.get(name, 1), "unique_event_name": name, "form": form}
            for name, form in mapping
        ]
        self._designated = {(name, form) for name, form in mapping}
        self.repeating_forms = frozenset(repeating_forms)
        self.repeating_events = frozenset(repeating_events)
        self._check_design()

    def _check_design(self) -> None:
        """Catch a mistyped event or form in a test's project set-up at once."""
        named_events = {name for name, _ in self._designated} | self.repeating_events
        unknown_events = named_events - set(self._event_names)
        named_forms = {form for _, form in self._designated} | self.repeating_forms
        unknown_forms = named_forms - set(self.schema.forms)
        if unknown_events:
            raise ValueError(f"unknown events in the project design: {sorted(unknown_events)}")
        if unknown_forms:
            raise ValueError(f"unknown forms in the project design: {sorted(unknown_forms)}")

    # -- design -------------------------------------------------------------------------

    @property
    def longitudinal(self) -> bool:
        return bool(self._events)

    @property
    def has_repeating(self) -> bool:
        return bool(self.repeating_forms or self.repeating_events)

    @property
    def record_id_field(self) -> str:
        return self.schema.record_id

    def project_info(self) -> dict[str, object]:
        """The ``content=project`` object (the keys a client is likely to read)."""
        return {
            "project_id": self.project_id,
            "project_title": self.title,
            "creation_time": self._creation_time.strftime("%Y-%m-%d %H:%M:%S"),
            "production_time": "",
            "in_production": 0,
            "project_language": "English",
            "purpose": 0,
            "purpose_other": "",
            "project_notes": "",
            "custom_record_label": "",
            "secondary_unique_field": "",
            "is_longitudinal": int(self.longitudinal),
            "has_repeating_instruments_or_events": int(self.has_repeating),
            "surveys_enabled": 0,
            "scheduling_enabled": 0,
            "record_autonumbering_enabled": 0,
            "randomization_enabled": 0,
            "ddp_enabled": 0,
            "project_irb_number": "",
            "project_grant_number": "",
            "project_pi_firstname": "",
            "project_pi_lastname": "",
            "display_today_now_button": 1,
            "missing_data_codes": "",
        }

    def metadata(
        self, fields: Sequence[str] = (), forms: Sequence[str] = ()
    ) -> list[dict[str, str]]:
        """The ``content=metadata`` rows, optionally only the given fields and forms."""
        unknown_fields = [name for name in fields if name not in self.schema.fields]
        if unknown_fields:
            raise invalid_values("fields", unknown_fields)
        unknown_forms = [form for form in forms if form not in self.schema.forms]
        if unknown_forms:
            raise invalid_values("forms", unknown_forms)
        rows = self.schema.metadata
        if fields or forms:
            rows = [r for r in rows if r["field_name"] in fields or r["form_name"] in forms]
        return [dict(row) for row in rows]

    def events(self) -> list[dict[str, Any]]:
        """The ``content=event`` rows."""
        return [dict(event) for event in self._events]

    def form_event_mapping(self) -> list[dict[str, Any]]:
        """The ``content=formEventMapping`` rows."""
        return [dict(row) for row in self._mapping]

    # -- data: test set-up and inspection -----------------------------------------------

    def add_record(
        self,
        record_id: str,
        values: Mapping[str, str],
        event: str | None = None,
        repeat_instrument: str | None = None,
        instance: int | None = None,
    ) -> None:
        """Store values as they are, for test set-up: no validation, no call logged.

        Checkbox choices are given as ``field___code``: "1". Calling it again merges into the
        same row. Unknown columns raise ``KeyError`` so a typo in a test fails loudly.
        """
        unknown = [name for name in values if name not in self.schema.columns]
        if unknown:
            raise KeyError(f"not columns of this project: {unknown}")
        key = self._row_key(event, repeat_instrument, instance)
        now = self.clock()
        with self._lock:
            record = self._record(record_id, now)
            row = record.rows.setdefault(key, {})
            for name, value in values.items():
                stored = "" if self.schema.columns[name].is_checkbox and value == "0" else value
                if stored:
                    row[name] = str(stored)
                else:
                    row.pop(name, None)
            record.modified = now

    def value(
        self,
        record_id: str,
        column: str,
        event: str | None = None,
        repeat_instrument: str | None = None,
        instance: int | None = None,
    ) -> str:
        """A stored value as export shows it ("" when unset, "0"/"1" for checkbox columns).

        Raises ``KeyError`` for an unknown record or column.
        """
        if column not in self.schema.columns:
            raise KeyError(f"not a column of this project: {column!r}")
        key = self._row_key(event, repeat_instrument, instance)
        with self._lock:
            row = self._records[record_id].rows.get(key, {})
            if column == self.schema.record_id:
                return record_id
            return self._export_value(self.schema.columns[column], row)

    def delete_record(self, record_id: str) -> None:
        """Delete a record as a REDCap user would in the web UI (test set-up; no call logged)."""
        with self._lock:
            del self._records[record_id]
            self._sorted_ids = None

    def record_ids(self) -> list[str]:
        """All record IDs in REDCap's order (numeric IDs numerically, then the others)."""
        with self._lock:
            return list(self._ordered_ids())

    def _row_key(self, event: str | None, instrument: str | None, instance: int | None) -> RowKey:
        if self.longitudinal:
            event = event or self._event_names[0]
            if event not in self._event_names:
                raise KeyError(f"not an event of this project: {event!r}")
        elif event:
            raise KeyError("a classic project has no events")
        return (event or "", instrument or "", instance or 0)

    def _record(self, record_id: str, now: datetime) -> _Record:
        """The record, created (as modified ``now``) if it does not exist yet."""
        record = self._records.get(record_id)
        if record is None:
            record = self._records[record_id] = _Record(modified=now)
            self._sorted_ids = None
        return record

    def _ordered_ids(self) -> list[str]:
        if self._sorted_ids is None:
            self._sorted_ids = sorted(self._records, key=_record_order)
        return self._sorted_ids

    # -- export -------------------------------------------------------------------------

    def export_records(self, query: ExportQuery) -> tuple[list[dict[str, str]], int]:
        """Flat export rows, one per record–event(–instance), every value a string, and the
        number of distinct records they hold.

        Without ``fields`` and ``forms`` all columns are exported. Repeating-instrument rows
        are left out when the request names fields but none on that instrument (the rows
        would carry nothing asked for); rows of events and non-repeating forms always appear.
        """
        columns, id_wanted, wanted_forms = self._export_columns(query)
        unknown_events = [name for name in query.events if name not in self._event_names]
        if unknown_events:
            raise invalid_values("events", unknown_events)
        events = set(query.events)
        event_order = {name: index for index, name in enumerate(self._event_names)}
        form_order = {form: index for index, form in enumerate(self.schema.forms, start=1)}

        def row_order(key: RowKey) -> tuple[int, int, int]:
            return (event_order.get(key[0], 0), form_order.get(key[1], 0), key[2])

        # (column, default, the form's columns when it is a status column derived from them)
        layout = [
            (
                c.name,
                "0" if c.is_checkbox else "",
                self.schema.form_columns[c.form] if c.field is None else None,
            )
            for c in columns
        ]
        output: list[dict[str, str]] = []
        exported = 0
        with self._lock:
            if query.records:
                wanted = set(query.records)
                ids = sorted((r for r in wanted if r in self._records), key=_record_order)
            else:
                ids = self._ordered_ids()
            for record_id in ids:
                record = self._records[record_id]
                if (query.modified_from and record.modified < query.modified_from) or (
                    query.modified_until and record.modified > query.modified_until
                ):
                    continue
                rows_before = len(output)
                for key in sorted(record.rows, key=row_order):
                    event, instrument, instance = key
                    if events and event not in events:
                        continue
                    if instrument and wanted_forms is not None and instrument not in wanted_forms:
                        continue
                    row = record.rows[key]
                    out: dict[str, str] = {}
                    if id_wanted:
                        out[self.schema.record_id] = record_id
                        if self.longitudinal:
                            out[EVENT_KEY] = event
                        if self.has_repeating:
                            out[INSTRUMENT_KEY] = instrument
                            out[INSTANCE_KEY] = str(instance) if instance else ""
                    for name, default, form_columns in layout:
                        if form_columns is None:
                            out[name] = row.get(name, default)
                        else:
                            out[name] = row.get(name) or _derived_status(row, form_columns)
                    output.append(out)
                exported += len(output) > rows_before
        return output, exported

    def _export_columns(self, query: ExportQuery) -> tuple[list[Column], bool, set[str] | None]:
        """Columns to export (record ID excluded), whether the record ID is wanted, and the
        forms that requested fields live on (None when everything is exported)."""
        schema = self.schema
        statuses = {complete_column(form): form for form in schema.forms}
        unknown_fields = [f for f in query.fields if f not in schema.fields and f not in statuses]
        if unknown_fields:
            raise invalid_values("fields", unknown_fields)
        unknown_forms = [form for form in query.forms if form not in schema.forms]
        if unknown_forms:
            raise invalid_values("forms", unknown_forms)
        if not query.fields and not query.forms:
            columns = [c for c in schema.columns.values() if c.name != schema.record_id]
            return columns, True, None
        forms = set(query.forms)
        names = set(query.fields)
        columns = [
            c
            for c in schema.columns.values()
            if c.name != schema.record_id
            and (
                c.form in forms
                or c.name in names
                or (c.field is not None and c.field.name in names)
            )
        ]
        id_wanted = schema.record_id in names or schema.fields[schema.record_id].form in forms
        wanted_forms = {c.form for c in columns if c.field is not None}
        return columns, id_wanted, wanted_forms

    def _export_value(self, column: Column, row: Mapping[str, str]) -> str:
        if column.field is None:
            return row.get(column.name) or _derived_status(
                row, self.schema.form_columns[column.form]
            )
        return row.get(column.name, "0" if column.is_checkbox else "")

    # -- import -------------------------------------------------------------------------

    @property
    def imports_per_record(self) -> Counter[str]:
        """A snapshot: record ID -> number of successful import calls that included it."""
        with self._lock:
            return Counter(self._imports_per_record)

    def import_records(self, rows: Sequence[Mapping[str, str]], overwrite: bool) -> list[str]:
        """Apply flat import rows all or nothing; return the distinct record IDs in order.

        In normal mode a blank value never replaces a stored one; with ``overwrite`` a blank
        clears, but only columns present in a row are touched. Unknown record IDs create
        records, as REDCap does. A record's modification time moves only when something in
        it changed (REDCap's dateRange filters read the change log).
        """
        known = set(self.schema.columns)
        known |= {EVENT_KEY} if self.longitudinal else set()
        known |= {INSTRUMENT_KEY, INSTANCE_KEY} if self.has_repeating else set()
        unknown = list(dict.fromkeys(name for row in rows for name in row if name not in known))
        if unknown:
            raise ApiError(
                400,
                "The following fields were not found in the project as real data fields: "
                + ", ".join(unknown),
            )
        bad_events = [
            name
            for name in dict.fromkeys(row.get(EVENT_KEY, "") for row in rows)
            if name and name not in self._event_names
        ]
        if bad_events:
            raise ApiError(
                400,
                "The following values of redcap_event_name are invalid: " + ", ".join(bad_events),
            )
        errors: list[tuple[str, str, str, str]] = []
        prepared = [self._prepare(row, overwrite, errors) for row in rows]
        if errors:
            raise ApiError(400, "\n".join(_error_line(*error) for error in errors))
        with self._lock:
            now = self.clock()
            for item in prepared:
                if item is not None:
                    self._apply(item, now)
            ids = list(dict.fromkeys(item.record_id for item in prepared if item is not None))
            self._imports_per_record.update(ids)
        return ids

    def _prepare(
        self, row: Mapping[str, str], overwrite: bool, errors: list[tuple[str, str, str, str]]
    ) -> _PreparedRow | None:
        """Check one row; add its error lines to ``errors`` or return what to store."""
        record_id = row.get(self.schema.record_id, "")
        if not record_id:
            errors.append(("", self.schema.record_id, "", BLANK_RECORD_ID))
            return None
        first_error = len(errors)
        event = ""
        if self.longitudinal:
            # A row without the key silently goes to the first event, as in REDCap.
            event = row.get(EVENT_KEY, self._event_names[0])
            if not event:
                errors.append((record_id, EVENT_KEY, "", "The record event name is missing."))
                return None
        instrument = row.get(INSTRUMENT_KEY, "")
        instance_text = row.get(INSTANCE_KEY, "")
        instance = 0
        if instrument and (
            instrument not in self.repeating_forms
            or event in self.repeating_events
            or (self.longitudinal and (event, instrument) not in self._designated)
        ):
            errors.append((record_id, INSTRUMENT_KEY, instrument, NOT_REPEATING_INSTRUMENT))
        if instrument or event in self.repeating_events:
            instance = (
                int(instance_text) if instance_text.isascii() and instance_text.isdigit() else 0
            )
            if instance < 1:
                errors.append((record_id, INSTANCE_KEY, instance_text, INSTANCE_REQUIRED))
        elif instance_text:
            errors.append((record_id, INSTANCE_KEY, instance_text, INSTANCE_NOT_ALLOWED))
        values: list[tuple[str, str | None]] = []
        for name, value in row.items():
            if name in (self.schema.record_id, EVENT_KEY, INSTRUMENT_KEY, INSTANCE_KEY):
                continue
            if value == "":
                if overwrite:
                    values.append((name, None))
                continue
            column = self.schema.columns[name]
            try:
                self._check_placement(column, event, instrument)
                values.append((name, clean_value(column, value) or None))
            except InvalidValue as invalid:
                errors.append((record_id, name, value, invalid.message))
        if len(errors) > first_error:
            return None
        return _PreparedRow(record_id, (event, instrument, instance), tuple(values))

    def _check_placement(self, column: Column, event: str, instrument: str) -> None:
        """Refuse a value whose form does not belong in the row's event or repeat context."""
        form = column.form
        if self.longitudinal and (event, form) not in self._designated:
            raise InvalidValue(
                f"This field ('{column.name}') exists on an instrument that is not designated "
                f"for the event named '{self._event_label(event)}'. You are not allowed to "
                "import data for this field into this event."
            )
        if instrument and form != instrument:
            raise InvalidValue(
                f"This field ('{column.name}') is not on the repeating instrument "
                f"'{instrument}' named in redcap_repeat_instrument."
            )
        if not instrument and form in self.repeating_forms and event not in self.repeating_events:
            raise InvalidValue(
                f"This field ('{column.name}') exists on a repeating instrument, so "
                "redcap_repeat_instrument and redcap_repeat_instance must be given."
            )

    def _event_label(self, unique_name: str) -> str:
        """How REDCap names an event in messages: ``Event (Arm 1: Arm 1)``."""
        event = next(e for e in self._events if e["unique_event_name"] == unique_name)
        return f"{event['event_name']} (Arm {event['arm_num']}: Arm {event['arm_num']})"

    def _apply(self, item: _PreparedRow, now: datetime) -> None:
        existing = self._records.get(item.record_id)
        changed = existing is None or item.key not in existing.rows
        record = self._record(item.record_id, now)
        row = record.rows.setdefault(item.key, {})
        for name, value in item.values:
            if value is None:
                changed |= row.pop(name, None) is not None
            elif row.get(name) != value:
                row[name] = value
                changed = True
        if changed:
            record.modified = now


def _event_row(event: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A ``content=event`` row from the short form tests give (name, arm, unique name)."""
    return {
        "event_name": event["event_name"],
        "arm_num": int(event.get("arm_num", 1)),
        "unique_event_name": event["unique_event_name"],
        "custom_event_label": event.get("custom_event_label", ""),
        "event_id": int(event.get("event_id", 40 + index)),
    }


def _record_order(record_id: str) -> tuple[int, int, str]:
    """Numeric IDs first and by value, then the rest alphabetically (REDCap's listing)."""
    if record_id.isascii() and record_id.isdigit():
        return (0, int(record_id), "")
    return (1, 0, record_id)


def _derived_status(row: Mapping[str, str], form_columns: Sequence[str]) -> str:
    """An unset instrument status reads "0" (Incomplete) once the form has data, else ""."""
    return "0" if any(name in row for name in form_columns) else ""


def _error_line(record_id: str, field_name: str, value: str, message: str) -> str:
    """One line of an import error: four CSV-quoted cells."""
    return ",".join(
        '"' + cell.replace('"', '""') + '"' for cell in (record_id, field_name, value, message)
    )
