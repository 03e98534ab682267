"""Request budget per REDCap host: REDCap bans an IP for good past 600 requests a minute.

A token bucket of capacity ``burst`` refilled at ``(per_minute - burst) / 60`` tokens a second
never allows more than ``per_minute`` requests in ANY 60-second window (at most ``burst`` saved
up plus what refills during the window), which is the guarantee that keeps the bridge unbanned,
whatever REDCap's state: slow, failing, or draining a backlog after an outage. Every request
takes a token, including ones that fail.

Where the bucket's level is kept is a ``Ledger``. ``serve`` and ``backfill`` keep it in the
store (``Store.settle_budget``), on the wall clock: a process that is killed and restarted,
however often, continues the same bucket, and a backfill beside ``serve`` draws from it too.
With a bucket per process, each restart of a crash loop would add a fresh burst on top of what
the last process spent, and a few restarts a minute would pass REDCap's limit
(``tests/test_budget_restarts.py``). Other uses (``check``, tests) keep it in memory.

``window_seconds`` is 60 in service; a test shortens it to watch many windows go by quickly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Level:
    """A bucket's tokens as of ``at`` (its clock's time)."""

    tokens: float
    at: float


# Given the level kept (None: never kept), the level to keep and the answer to return.
Step = Callable[[Level | None], tuple[Level, float]]


class Ledger(Protocol):
    def settle_budget(self, key: str, step: Step) -> float:
        """Apply ``step`` to the level kept under ``key``, atomically; return its answer."""


class MemoryLedger:
    """Levels kept in this process only."""

    def __init__(self) -> None:
        self._levels: dict[str, Level] = {}
        self._lock = threading.Lock()

    def settle_budget(self, key: str, step: Step) -> float:
        with self._lock:
            self._levels[key], answer = step(self._levels.get(key))
            return answer


class RequestBudget:
    def __init__(self, per_minute: int, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 window_seconds: float = 60.0, *, ledger: Ledger | None = None,
                 key: str = "") -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.burst = burst if burst is not None else max(1, min(per_minute // 10, 30))
        if per_minute > self.burst:
            self.rate = (per_minute - self.burst) / window_seconds
        else:  # a tiny budget: one request every window/per_minute seconds, nothing saved up
            self.burst, self.rate = 1, per_minute / window_seconds
        self._clock = clock
        self._ledger = ledger or MemoryLedger()
        self._key = key

    def _take(self, kept: Level | None) -> tuple[Level, float]:
        now = self._clock()
        if kept is None:  # a bucket never used starts full
            tokens = float(self.burst)
        else:
            # No refill for time the clock went back (a wall clock can): the level is kept as
            # of now, so a step back costs nothing and refills go on from there.
            refill = max(0.0, now - kept.at) * self.rate
            tokens = min(float(self.burst), kept.tokens + refill)
        # A hair of tolerance: float refills can stop at 0.9999999999 and never reach 1.
        if tokens >= 1.0 - 1e-9:
            return Level(max(0.0, tokens - 1.0), now), 0.0
        return Level(tokens, now), max((1.0 - tokens) / self.rate, 0.001)

    def try_acquire(self) -> float:
        """Take a token and return 0.0, or return how many seconds until one is available."""
        return self._ledger.settle_budget(self._key, self._take)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until a token is taken. Returns False if ``stop`` was set while waiting."""
        while True:
            wait = self.try_acquire()
            if wait == 0.0:
                return True
            if stop is not None:
                if stop.wait(wait):
                    return False
            else:
                time.sleep(wait)


def host_of(url: str) -> str:
    """The budget's key for a REDCap URL: its host and port, as REDCap's limit counts per server."""
    return urlsplit(url).netloc.lower()


class BudgetRegistry:
    """One budget per REDCap host, shared by every project on that host.

    With a ``ledger`` (the store) the buckets are kept there, on the wall clock, so that
    every process using that store shares them, across restarts.
    """

    def __init__(self, per_minute: int, window_seconds: float = 60.0, *,
                 ledger: Ledger | None = None) -> None:
        self.per_minute = per_minute
        self.window_seconds = window_seconds
        self._ledger = ledger or MemoryLedger()
        self._clock = time.time if ledger is not None else time.monotonic
        self._budgets: dict[str, RequestBudget] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str) -> RequestBudget:
        host = host_of(url)
        with self._lock:
            budget = self._budgets.get(host)
            if budget is None:
                budget = self._budgets[host] = RequestBudget(
                    self.per_minute, window_seconds=self.window_seconds, clock=self._clock,
                    ledger=self._ledger, key=host)
            return budget
