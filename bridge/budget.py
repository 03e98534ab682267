"""Request budget per REDCap host: REDCap bans an IP for good past 600 requests a minute.

A token bucket of capacity ``burst`` refilled at ``(per_minute - burst) / 60`` tokens a second
never allows more than ``per_minute`` requests in ANY 60-second window (at most ``burst`` saved
up plus what refills during the window), which is the guarantee that keeps the bridge unbanned,
whatever REDCap's state: slow, failing, or draining a backlog after an outage. Every request
takes a token, including ones that fail.

``window_seconds`` is 60 in service; a test shortens it to watch many windows go by quickly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit


class RequestBudget:
    def __init__(self, per_minute: int, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 window_seconds: float = 60.0) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.burst = burst if burst is not None else max(1, min(per_minute // 10, 30))
        if per_minute > self.burst:
            self.rate = (per_minute - self.burst) / window_seconds
        else:  # a tiny budget: one request every window/per_minute seconds, nothing saved up
            self.burst, self.rate = 1, per_minute / window_seconds
        self._clock = clock
        self._tokens = float(self.burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_acquire(self) -> float:
        """Take a token and return 0.0, or return how many seconds until one is available."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            # A hair of tolerance: float refills can stop at 0.9999999999 and never reach 1.
            if self._tokens >= 1.0 - 1e-9:
                self._tokens = max(0.0, self._tokens - 1.0)
                return 0.0
            return max((1.0 - self._tokens) / self.rate, 0.001)

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


class BudgetRegistry:
    """One budget per REDCap host, shared by every project on that host."""

    def __init__(self, per_minute: int, window_seconds: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_seconds = window_seconds
        self._budgets: dict[str, RequestBudget] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str) -> RequestBudget:
        host = urlsplit(url).netloc.lower()
        with self._lock:
            budget = self._budgets.get(host)
            if budget is None:
                budget = self._budgets[host] = RequestBudget(
                    self.per_minute, window_seconds=self.window_seconds)
            return budget
