"""Phone numbers: every stored or received form reduced to one E.164 key, and masked for output.

REDCap phone fields hold whatever people typed: ``(555) 867-5309``, ``555-867-5309``,
``1-555-867-5309``, ``+44 20 7946 0958``, with or without extensions. Matching compares
E.164 strings produced by libphonenumber, so every format of the same number agrees.
Extensions are dropped: a text goes to the line, not the extension.
"""

from __future__ import annotations

import functools

import phonenumbers


@functools.lru_cache(maxsize=4096)
def normalise(raw: str | None, default_region: str = "US") -> str | None:
    """``to_e164`` with a small cache, for numbers that recur: senders and Twilio numbers.

    The phone index calls ``to_e164`` itself: each stored value is read once per refresh,
    and caching a 100,000-record project's values would only hold memory.
    """
    return to_e164(raw, default_region)


def to_e164(raw: str | None, default_region: str = "US") -> str | None:
    """Return the E.164 form of ``raw``, or None when it is not a plausible phone number.

    Numbers without a country code are read in ``default_region``. Never raises: stored REDCap
    values can be anything, and one bad value must not stop a batch.
    """
    if not raw:
        return None
    text = str(raw).strip()
    if not text or len(text) > 64:
        return None
    number = _parse(text, default_region)
    if number is None and not text.startswith("+"):
        # Digits stored without "+" but with a country code ("442079460958", or
        # "1-555-867-5309" in a non-NANP project): read them as a full international number.
        digits = "".join(ch for ch in text.split("x")[0] if ch.isdigit())
        number = _parse("+" + digits, None) if digits else None
    if number is None:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(e164: str | None) -> str:
    """Mask a number for logs and lists: ``+15558675309`` -> ``+1555***5309``.

    The country code, up to three more digits (the area code, useful when reading logs) and
    up to the last four stay; at least three digits never appear, so in countries with short
    numbers fewer are shown (Iceland ``+354***1234``).
    """
    if not e164:
        return "(none)"
    digits = "".join(ch for ch in e164 if ch.isdigit())
    if len(digits) <= 7:
        return "***"
    country = len(_country_code(digits))
    national = len(digits) - country
    tail, head = _shown(national)
    hidden = national - head - tail
    return f"+{digits[:country + head]}{'*' * hidden}{digits[len(digits) - tail:]}"


def mask_pretty(e164: str) -> str:
    """Mask for people (emails): ``+1 (555) ***-5309`` for North American numbers.

    The area code stays so a study team can tell participants apart; the middle digits go.
    Other countries get the country code and the last four digits.
    """
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return mask(e164)
    national = str(number.national_number)
    if number.country_code == 1 and len(national) == 10:
        return f"+1 ({national[:3]}) ***-{national[-4:]}"
    tail, _ = _shown(len(national))
    return f"+{number.country_code} {'*' * (len(national) - tail)}{national[len(national) - tail:]}"


def _shown(national: int) -> tuple[int, int]:
    """How many trailing and leading digits of a national number a mask may show."""
    hidden = min(3, national)
    tail = min(4, national - hidden)
    return tail, min(3, national - hidden - tail)


def _parse(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None


def _country_code(digits: str) -> str:
    """The calling code that ``digits`` (an E.164 number without "+") starts with, or "".

    Calling codes are prefix-free, so the first known prefix is the one. A dictionary look-up
    rather than a parse: ``mask`` runs for every log line about a message.
    """
    for length in (1, 2, 3):
        if int(digits[:length]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return digits[:length]
    return ""
