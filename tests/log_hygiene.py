"""What must never appear in a log line: secrets and full phone numbers.

Used by ``tests/conftest.py`` to check every log record of the whole test run (at DEBUG) and
every log file of a ``serve`` process, and by ``tests/test_log_hygiene.py``. Masked numbers
(``+1555***5309``) keep at most the country code, area code and last four digits, so any run
of a phone number's digits longer than that is a leak.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Known secrets of the test run; a test adds its own with ``SECRETS.add``.
SECRETS: set[str] = set()

# A REDCap API token: 32 upper-case hex characters standing alone.
REDCAP_TOKEN = re.compile(r"(?<![0-9A-Za-z])[0-9A-F]{32}(?![0-9A-Za-z])")
# Phone numbers in the forms people and systems write them. Digits glued to letters or other
# digits (message SIDs, hex, timestamps) are not phone numbers and are not matched.
PHONE_PATTERNS = (
    re.compile(r"\+\d(?:[\s().-]?\d){7,14}"),  # +15558675309, +44 20 7946 0958
    re.compile(r"(?<![\w.+-])1?\d{10}(?!\w|[.-]\d)"),  # bare: 5558675309, 15558675309
    re.compile(r"\(\d{3}\)\s?\d{3}[-.\s]\d{4}(?!\d)"),  # (555) 867-5309
    re.compile(r"(?<![\w-])1?[-.\s]?\d{3}[-.]\d{3}[-.]\d{4}(?![\w-])"),  # 555-867-5309
    re.compile(r"(?<![\w:.-])\d{3}-\d{4}(?![\w-])"),  # 867-5309
)


def leaks(text: str, secrets: Iterable[str] = ()) -> list[str]:
    """The secrets and phone numbers found in ``text`` (empty when it is clean)."""
    found = [f"secret {secret[:4]}…" for secret in {*SECRETS, *secrets}
             if secret and secret in text]
    found += [f"REDCap-like token {match[:4]}…" for match in REDCAP_TOKEN.findall(text)]
    for pattern in PHONE_PATTERNS:
        found += [f"phone number {match!r}" for match in pattern.findall(text)]
    return found
