"""The worker's loops offer the GIL to waiting webhook threads every few dozen items."""

from __future__ import annotations

import pytest

from bridge import cooperative
from bridge.cooperative import yielding


def test_every_item_in_order_with_a_yield_after_each_full_stretch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(cooperative.time, "sleep", sleeps.append)
    seen = []
    for item in yielding(range(100), every=32):
        seen.append((item, len(sleeps)))
    assert [item for item, _ in seen] == list(range(100))
    assert sleeps == [0, 0, 0]  # after items 32, 64 and 96: sleep(0) only releases the GIL
    # each yield comes after its stretch, before the next item is handed out
    assert [count for item, count in seen if item in (31, 32, 63, 64)] == [0, 1, 1, 2]


def test_a_generator_is_consumed_lazily() -> None:
    produced = []

    def rows():
        for n in range(5):
            produced.append(n)
            yield n

    stream = yielding(rows(), every=2)
    assert next(stream) == 0
    assert produced == [0]  # a streamed export is read as it is used, not all at once
    assert list(stream) == [1, 2, 3, 4]
