"""Phone normalisation and masking."""

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.phones import mask, mask_pretty, normalise

SAME_NUMBER = [
    "(555) 867-5309",
    "555-867-5309",
    "555.867.5309",
    "5558675309",
    "+15558675309",
    "1-555-867-5309",
    "15558675309",
    "(555) 867-5309 x12",
    "555-867-5309 ext. 123",
    " +1 (555) 867 5309 ",
]


@pytest.mark.parametrize("raw", SAME_NUMBER)
def test_every_us_format_normalises_to_one_key(raw: str) -> None:
    assert normalise(raw, "US") == "+15558675309"


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("+44 20 7946 0958", "US", "+442079460958"),
    ("442079460958", "US", "+442079460958"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("+61 2 9374 4000", "US", "+61293744000"),
    ("1-555-867-5309", "GB", "+15558675309"),
])
def test_international_numbers(raw: str, region: str, expected: str) -> None:
    assert normalise(raw, region) == expected


@pytest.mark.parametrize("raw", ["", None, "abc", "12", "n/a", "x" * 500, "+", "555"])
def test_garbage_is_none(raw: str | None) -> None:
    assert normalise(raw) is None


@given(st.text(max_size=80))
def test_normalise_never_raises_and_is_idempotent(raw: str) -> None:
    result = normalise(raw)
    if result is not None:
        assert result.startswith("+")
        assert normalise(result) == result


@given(st.integers(min_value=200, max_value=999), st.integers(min_value=200, max_value=999),
       st.integers(min_value=0, max_value=9999))
def test_formats_of_the_same_number_agree(area: int, exchange: int, line: int) -> None:
    digits = f"{area}{exchange}{line:04d}"
    forms = [digits, f"({area}) {exchange}-{line:04d}", f"{area}.{exchange}.{line:04d}",
             f"+1{digits}", f"1-{area}-{exchange}-{line:04d}"]
    results = {normalise(form, "US") for form in forms}
    assert len(results) == 1


def test_mask_keeps_country_area_and_last_four() -> None:
    assert mask("+15558675309") == "+1555***5309"
    assert "867" not in mask("+15558675309")
    assert mask("+442079460958") == "+44207***0958"
    assert mask("+35312345678") == "+3531***5678"  # at least three digits always hidden
    assert mask(None) == "(none)"
    assert mask("+123") == "***"


def test_mask_pretty_for_people() -> None:
    assert mask_pretty("+15558675309") == "+1 (555) ***-5309"
    assert mask_pretty("+442079460958").endswith("0958")
    assert "7946" not in mask_pretty("+442079460958")


# --- hostile input: every region, every format (properties) ------------------------------------

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
FORMATS = (phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL,
           phonenumbers.PhoneNumberFormat.NATIONAL)


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=80), st.text("0123456789+-(). x#*", max_size=40)),
       st.sampled_from(REGIONS))
def test_normalise_never_raises_in_any_region_and_is_idempotent(raw: str, region: str) -> None:
    result = normalise(raw, region)
    if result is not None:
        assert result.startswith("+") and result[1:].isdigit()
        assert normalise(result, region) == result
        assert normalise(result, "US") == result  # E.164 reads the same from anywhere


def example_numbers() -> list[tuple[str, phonenumbers.PhoneNumber]]:
    """libphonenumber's example number of every type in every region it knows."""
    return [(region, example) for region in REGIONS
            for number_type in phonenumbers.PhoneNumberType.values()
            if (example := phonenumbers.example_number_for_type(region, number_type))]


def test_every_format_of_every_example_number_agrees_in_its_region() -> None:
    """Each region's example numbers as a REDCap field might hold them (national,
    international, E.164; with an extension or stray spaces), read with that region as the
    project's default, give one key. All regions and number types, not a sample."""
    disagreements = []
    for region, example in example_numbers():
        e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        for number_format in FORMATS:
            written = phonenumbers.format_number(example, number_format)
            for suffix in ("", " x12", "  "):
                if normalise(written + suffix, region) != e164:
                    disagreements.append((region, written + suffix, e164))
    assert not disagreements, disagreements[:20]


@given(st.text(max_size=40))
def test_mask_never_raises(raw: str) -> None:
    assert isinstance(mask(raw), str)
    assert isinstance(mask_pretty(raw), str)


def test_mask_hides_at_least_three_digits_of_every_example_number() -> None:
    """In countries with short numbers (Iceland: 7 digits, Ascension: 5) keeping the area
    code and the last four would show the whole number; at least three digits always go."""
    for _region, example in example_numbers():
        e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        national = str(example.national_number)
        for masked in (mask(e164), mask_pretty(e164)):
            shown = "".join(ch for ch in masked if ch.isdigit())
            assert masked.count("*") >= min(3, len(national)), (e164, masked)
            assert national not in shown, (e164, masked)


def test_mask_of_short_national_numbers() -> None:
    assert mask("+3545511234") == "+354***1234"  # Iceland, 7 digits
    assert mask("+4532123456") == "+453***3456"  # Denmark, 8 digits
    assert mask("+24762889") == "+247***89"  # Ascension Island, 5 digits
