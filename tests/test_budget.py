"""The per-host request budget: never more than per_minute in any 60 s window."""

import threading

from bridge.budget import BudgetRegistry, RequestBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(budget: RequestBudget, clock: FakeClock, seconds: float, step: float) -> list[float]:
    """A client that always wants more: records the time of every granted request."""
    granted: list[float] = []
    while clock.now < seconds:
        wait = budget.try_acquire()
        if wait == 0.0:
            granted.append(clock.now)
        else:
            clock.now += min(wait, step)
    return granted


def max_in_window(times: list[float], window: float = 60.0) -> int:
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_never_more_than_per_minute_in_any_window() -> None:
    clock = FakeClock()
    budget = RequestBudget(300, clock=clock)
    granted = simulate(budget, clock, seconds=600, step=0.01)
    assert max_in_window(granted) <= 300
    # and it does not starve: close to the full budget over ten minutes
    assert len(granted) >= 10 * 270


def test_idle_time_does_not_bank_more_than_the_burst() -> None:
    clock = FakeClock()
    budget = RequestBudget(60, burst=5, clock=clock)
    clock.now = 3600.0  # an hour idle
    granted = 0
    while budget.try_acquire() == 0.0:
        granted += 1
    assert granted == 5


def test_tiny_budget() -> None:
    clock = FakeClock()
    budget = RequestBudget(1, clock=clock)
    granted = simulate(budget, clock, seconds=300, step=0.5)
    assert max_in_window(granted) <= 1


def test_acquire_stops_when_asked() -> None:
    budget = RequestBudget(1)
    assert budget.acquire()
    stop = threading.Event()
    stop.set()
    assert budget.acquire(stop) is False


def test_registry_shares_a_budget_per_host() -> None:
    registry = BudgetRegistry(300)
    a = registry.for_url("https://redcap.example.edu/api/")
    b = registry.for_url("https://REDCAP.example.edu/other/api/")
    c = registry.for_url("https://redcap2.example.edu/api/")
    assert a is b
    assert a is not c


def test_a_shorter_window_keeps_the_same_guarantee() -> None:
    clock = FakeClock()
    budget = RequestBudget(10, clock=clock, window_seconds=1.0)
    granted = simulate(budget, clock, seconds=30, step=0.001)
    assert max_in_window(granted, window=1.0) <= 10
    assert len(granted) >= 30 * 9 * 0.95  # and it does not starve
