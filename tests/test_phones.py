"""Phone normalisation and masking."""

import pytest
from hypothesis import given
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
    assert mask("+35312345678") == "+353123*5678"
    assert mask(None) == "(none)"
    assert mask("+123") == "***"


def test_mask_pretty_for_people() -> None:
    assert mask_pretty("+15558675309") == "+1 (555) ***-5309"
    assert mask_pretty("+442079460958").endswith("0958")
    assert "7946" not in mask_pretty("+442079460958")
