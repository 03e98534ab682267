"""The per-host request budget: never more than per_minute in any 60 s window."""

import threading
from pathlib import Path

from bridge.budget import BudgetRegistry, MemoryLedger, RequestBudget
from bridge.sim import most_in_window
from bridge.store import Store


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


def test_never_more_than_per_minute_in_any_window() -> None:
    clock = FakeClock()
    budget = RequestBudget(300, clock=clock)
    granted = simulate(budget, clock, seconds=600, step=0.01)
    assert most_in_window(granted) <= 300
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
    assert most_in_window(granted) <= 1


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
    assert most_in_window(granted, 1.0) <= 10
    assert len(granted) >= 30 * 9 * 0.95  # and it does not starve


def test_budgets_that_continue_one_ledger_keep_the_guarantee_across_restarts() -> None:
    """A crash loop: a new budget every few seconds, each continuing the ledger's bucket."""
    clock = FakeClock()
    ledger = MemoryLedger()
    granted: list[float] = []
    while clock.now < 300:
        budget = RequestBudget(60, clock=clock, ledger=ledger, key="redcap.example.edu")
        granted += simulate(budget, clock, seconds=clock.now + 3.7, step=0.01)
    assert most_in_window(granted) <= 60
    assert len(granted) >= 5 * 54 * 0.95  # and the restarts do not starve it either


def test_a_fresh_budget_per_restart_is_what_the_ledger_prevents() -> None:
    """The failure the ledger exists for: a fresh bucket per process passes the limit."""
    clock = FakeClock()
    granted: list[float] = []
    while clock.now < 60:
        granted += simulate(RequestBudget(60, clock=clock), clock, seconds=clock.now + 3.7,
                            step=0.01)
    assert most_in_window(granted) > 60


def test_a_clock_that_steps_back_neither_starves_nor_overspends() -> None:
    clock = FakeClock()
    clock.now = 1000.0
    budget = RequestBudget(60, burst=5, clock=clock)
    while budget.try_acquire() == 0.0:
        pass
    clock.now = 400.0  # the wall clock stepped back ten minutes
    granted = simulate(budget, clock, seconds=460.0, step=0.01)
    assert most_in_window(granted) <= 60
    assert len(granted) >= 54


def test_the_store_keeps_the_bucket_for_the_next_process(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "bridge.db")
    first = RequestBudget(60, burst=5, clock=clock, ledger=store, key="redcap.example.edu")
    assert [first.try_acquire() for _ in range(5)] == [0.0] * 5
    assert first.try_acquire() > 0.0
    store.close()

    reopened = Store(tmp_path / "bridge.db")
    second = RequestBudget(60, burst=5, clock=clock, ledger=reopened, key="redcap.example.edu")
    assert second.try_acquire() > 0.0  # the burst was spent by the process before
    clock.now += 60 / 55  # one token's refill
    assert second.try_acquire() == 0.0
    other_host = RequestBudget(60, burst=5, clock=clock, ledger=reopened, key="other.example")
    assert other_host.try_acquire() == 0.0
    reopened.close()


def test_the_registry_keeps_buckets_in_its_ledger_by_host(tmp_path: Path) -> None:
    store = Store(tmp_path / "bridge.db")
    registry = BudgetRegistry(300, ledger=store)
    assert registry.for_url("https://REDCap.example.edu/api/").acquire()
    hosts = [row[0] for row in store.read().execute("SELECT host FROM request_budget")]
    assert hosts == ["redcap.example.edu"]
    store.close()
