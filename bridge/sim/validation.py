"""Value checks and normalisation that REDCap applies to imported values.

The bridge writes timestamps and reads phone numbers, so these rules decide whether its
imports are accepted and what it later reads back: REDCap rewrites datetimes to a fixed
form and phone numbers to ``(AAA) EEE-NNNN`` unless they contain dashes.
"""

from __future__ import annotations

import re
from datetime import date

from bridge.sim.schema import COMPLETE_CODES, Column

# Shown for any value that fails its field's text validation (other than dates).
BAD_FORMAT = (
    "The value you provided could not be validated because it does not follow the expected "
    "format. Please try again."
)
BAD_DATETIME = (
    "Invalid date format. (NOTE: Dates must be imported here only in Y-M-D H:M[:S] format, "
    "regardless of the specific date format designated for this field.)"
)
BAD_DATE = (
    "Invalid date format. (NOTE: Dates must be imported here only in Y-M-D format, "
    "regardless of the specific date format designated for this field.)"
)

_DATE = r"(\d{4})-(\d{1,2})-(\d{1,2})"
_DATE_RE = re.compile(_DATE)
_DATETIME_RE = re.compile(_DATE + r"[ T](\d{1,2}):(\d{2})")
_DATETIME_SECONDS_RE = re.compile(_DATE + r"[ T](\d{1,2}):(\d{2}):(\d{2})")
# North American numbers as REDCap's ``phone`` validation accepts them: an area code that is
# not N11-like, an exchange starting 2-9, optional separators and an optional extension.
_PHONE_RE = re.compile(
    r"\(?([2-9]0[1-9]|[2-9]1[02-9]|[2-9][2-9]\d)\)?\s*(?:[.-]\s*)?"
    r"([2-9]\d{2})\s*(?:[.-]\s*)?(\d{4})"
    r"(?:\s*(?:#|x\.?|ext\.?|extension)\s*\d+)?",
    re.IGNORECASE,
)
_INTEGER_RE = re.compile(r"[-+]?\d+")
_NUMBER_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class InvalidValue(ValueError):
    """A value REDCap would reject; ``message`` is REDCap's wording for the error line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def clean_value(column: Column, value: str) -> str:
    """Check a non-blank imported value for ``column`` and return it as REDCap stores it.

    A checkbox column stores "1" for ticked and "" (absent) for unticked, so "0" comes back
    as "". Raises ``InvalidValue`` with REDCap's message.
    """
    field = column.field
    if field is None:
        if value not in COMPLETE_CODES:
            raise InvalidValue(f"The value is not a valid category for {column.name}")
        return value
    if column.is_checkbox:
        if value not in ("0", "1"):
            raise InvalidValue(f"The value is not a valid category for {field.name}")
        return "1" if value == "1" else ""
    if field.choices:
        if value not in field.choices:
            raise InvalidValue(f"The value is not a valid category for {field.name}")
        return value
    return _validate_text(value, field.validation)


def _validate_text(value: str, validation: str) -> str:
    if validation.startswith("datetime_seconds_"):
        return _datetime(value, _DATETIME_SECONDS_RE)
    if validation.startswith("datetime_"):
        return _datetime(value, _DATETIME_RE)
    if validation.startswith("date_"):
        match = _DATE_RE.fullmatch(value)
        if match is None:
            raise InvalidValue(BAD_DATE)
        return _checked_date(match.groups(), BAD_DATE)
    if validation == "phone":
        return _phone(value)
    if validation == "integer":
        return _matching(value, _INTEGER_RE)
    if validation == "number":
        return _matching(value, _NUMBER_RE)
    if validation == "email":
        return _matching(value, _EMAIL_RE)
    return value


def _datetime(value: str, pattern: re.Pattern[str]) -> str:
    """Accept ``Y-M-D H:M[:S]`` (or ``T`` for the space); store zero-padded with a space.

    One-digit month, day and hour are padded rather than refused (REDCap pads them too);
    minutes and seconds must have two digits.
    """
    match = pattern.fullmatch(value)
    if match is None:
        raise InvalidValue(BAD_DATETIME)
    day = _checked_date(match.groups()[:3], BAD_DATETIME)
    clock = [int(part) for part in match.groups()[3:]]
    if clock[0] > 23 or any(part > 59 for part in clock[1:]):
        raise InvalidValue(BAD_DATETIME)
    return day + " " + ":".join(f"{part:02d}" for part in clock)


def _checked_date(parts: tuple[str, ...], message: str) -> str:
    try:
        return date(*(int(part) for part in parts)).isoformat()
    except ValueError:
        raise InvalidValue(message) from None


def _phone(value: str) -> str:
    """REDCap's import-time phone clean-up, then its ``phone`` validation.

    With dots, brackets and spaces removed, a value that starts with ten digits is rewritten
    as ``(AAA) EEE-NNNN`` (anything after them, an extension, is kept); any other value is
    kept as given. Dashes are not removed, so ``555-867-5309`` stays as it is. A leading
    country code fails validation.
    """
    stripped = re.sub(r"[.() ]", "", value)
    if len(stripped) >= 10 and stripped[:10].isdigit():
        value = f"({stripped[:3]}) {stripped[3:6]}-{stripped[6:10]}{stripped[10:]}"
    if _PHONE_RE.fullmatch(value) is None:
        raise InvalidValue(BAD_FORMAT)
    return value


def _matching(value: str, pattern: re.Pattern[str]) -> str:
    if pattern.fullmatch(value) is None:
        raise InvalidValue(BAD_FORMAT)
    return value
