"""A project's data dictionary: the metadata rows REDCap returns and the columns they imply.

REDCap's record API does not speak in fields but in *columns*: a checkbox field becomes one
``field___code`` column per choice, and every instrument gets a ``<form>_complete`` status
column. Import and export both work on columns, so they are derived once here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# The keys of one ``content=metadata`` row, in REDCap's order.
METADATA_KEYS = (
    "field_name",
    "form_name",
    "section_header",
    "field_type",
    "field_label",
    "select_choices_or_calculations",
    "field_note",
    "text_validation_type_or_show_slider_number",
    "text_validation_min",
    "text_validation_max",
    "identifier",
    "branching_logic",
    "required_field",
    "custom_alignment",
    "question_number",
    "matrix_group_name",
    "matrix_ranking",
    "field_annotation",
)

# (field_name, form_name, field_type, validation) or the same plus choices ("1, Yes | 2, No").
FieldSpec = tuple[str, str, str, str] | tuple[str, str, str, str, str]

# Field types whose value must be one of the listed choice codes.
CHOICE_TYPES = frozenset({"radio", "dropdown", "checkbox"})
FIXED_CHOICES = {"yesno": ("1", "0"), "truefalse": ("1", "0")}
# Field types that hold no data: REDCap neither exports nor imports them.
NON_DATA_TYPES = frozenset({"descriptive"})
COMPLETE_CODES = ("0", "1", "2")


def make_metadata(record_id_field: str, fields: Sequence[FieldSpec]) -> list[dict[str, str]]:
    """Build metadata rows as ``content=metadata`` returns them.

    Tests describe a project in one line per field; this fills the other 14 keys the way
    REDCap does for a plain field, so code reading metadata meets the real shape. The record
    ID field comes first, on the first form named (REDCap requires it there).
    """
    names = [spec[0] for spec in fields]
    if record_id_field in names:
        raise ValueError(f"{record_id_field!r} is added as the record ID; do not list it")
    if len(set(names)) != len(names):
        raise ValueError("field names must be unique")
    first_form = fields[0][1] if fields else "my_first_instrument"
    rows = [_metadata_row(record_id_field, first_form, "text", "", "", label="Record ID")]
    for spec in fields:
        name, form, field_type, validation = spec[:4]
        choices = spec[4] if len(spec) == 5 else ""
        rows.append(_metadata_row(name, form, field_type, validation, choices))
    return rows


def _metadata_row(
    name: str, form: str, field_type: str, validation: str, choices: str, label: str = ""
) -> dict[str, str]:
    row = dict.fromkeys(METADATA_KEYS, "")
    row.update(
        field_name=name,
        form_name=form,
        field_type=field_type,
        field_label=label or name.replace("_", " ").capitalize(),
        select_choices_or_calculations=choices,
        text_validation_type_or_show_slider_number=validation,
    )
    return row


def parse_choice_codes(choices: str) -> tuple[str, ...]:
    """The codes of a ``"1, Yes | 2, No"`` choice list, in order."""
    return tuple(part.split(",", 1)[0].strip() for part in choices.split("|") if part.strip())


def checkbox_column(field_name: str, code: str) -> str:
    """REDCap's export name for one checkbox choice: lower case, odd characters as ``_``."""
    return f"{field_name}___{re.sub(r'[^a-z0-9_]', '_', code.lower())}"


@dataclass(frozen=True)
class Field:
    """One data field of the dictionary."""

    name: str
    form: str
    field_type: str
    validation: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Column:
    """One key of a flat record row.

    ``field`` is None for a ``<form>_complete`` status column; ``code`` is the choice code for
    a checkbox column.
    """

    name: str
    form: str
    field: Field | None
    code: str = ""

    @property
    def is_checkbox(self) -> bool:
        return self.field is not None and self.field.field_type == "checkbox"


class Schema:
    """Fields, forms and columns of one project, derived from its metadata rows."""

    def __init__(self, metadata: Sequence[dict[str, str]]) -> None:
        if not metadata:
            raise ValueError("metadata must contain at least the record ID field")
        self.metadata = [dict(row) for row in metadata]
        self.record_id = metadata[0]["field_name"]
        self.fields: dict[str, Field] = {}
        self.forms: list[str] = []
        for row in metadata:
            field_type = row["field_type"]
            choices = row.get("select_choices_or_calculations", "")
            codes = (
                parse_choice_codes(choices)
                if field_type in CHOICE_TYPES
                else FIXED_CHOICES.get(field_type, ())
            )
            field = Field(
                name=row["field_name"],
                form=row["form_name"],
                field_type=field_type,
                validation=row.get("text_validation_type_or_show_slider_number", ""),
                choices=codes,
            )
            self.fields[field.name] = field
            if field.form not in self.forms:
                self.forms.append(field.form)
        # Export order: each form's fields (checkboxes expanded), then its status column.
        self.columns: dict[str, Column] = {}
        for form in self.forms:
            for field in self.fields.values():
                if field.form != form or field.field_type in NON_DATA_TYPES:
                    continue
                if field.field_type == "checkbox":
                    for code in field.choices:
                        column = Column(checkbox_column(field.name, code), form, field, code)
                        self.columns[column.name] = column
                else:
                    self.columns[field.name] = Column(field.name, form, field)
            self.columns[complete_column(form)] = Column(complete_column(form), form, None)
        self.form_columns: dict[str, tuple[str, ...]] = {
            form: tuple(
                c.name
                for c in self.columns.values()
                if c.form == form and c.field is not None and c.name != self.record_id
            )
            for form in self.forms
        }


def complete_column(form: str) -> str:
    """The instrument status column REDCap adds for every form."""
    return f"{form}_complete"
