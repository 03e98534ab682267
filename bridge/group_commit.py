"""Group commit for the webhook path: concurrent messages share one transaction and one fsync.

With ``synchronous=FULL`` every commit waits for the disk, and SQLite lets one writer in at a
time, so webhooks committing one by one queue behind each other's fsync: under a blast the
queue, not the work, sets the answer time (measured in bench/README.md). Here the first
caller to find no commit under way becomes the leader: it commits every message queued so far
in one transaction, while callers arriving meanwhile queue for the next one; when it is done,
the oldest of them leads the next. Each caller still returns only once the transaction
holding its message has committed, so an answered webhook is exactly as durable as before.
No thread of its own: nothing to start or stop.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.store import NewJob, NewMessage, NewNotification, Store, StoreError

# A bound on one transaction, so a leader's own wait stays short under any backlog.
MAX_BATCH = 256


@dataclass(eq=False)
class _Entry:
    message: NewMessage
    jobs: Sequence[NewJob]
    notifications: Sequence[NewNotification]
    result: bool | StoreError | None = None
    # Held from creation; released once, when the entry has its result or is to lead.
    wake: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.wake.acquire()


class GroupCommit:
    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: list[_Entry] = []
        self._committing = False
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """Messages queued for the next commit."""
        with self._lock:
            return len(self._queue)

    def record_inbound(self, message: NewMessage, jobs: Sequence[NewJob],
                       notifications: Sequence[NewNotification] = ()) -> bool:
        """``Store.record_inbound``, committed together with concurrent callers' messages.

        Returns False for an already stored MessageSid; raises StoreError if the message
        could not be stored.
        """
        entry = _Entry(message, jobs, notifications)
        with self._lock:
            self._queue.append(entry)
            lead = not self._committing
            self._committing = True
        if not lead:
            # Each waiter sleeps on its own lock and is woken exactly once: a shared condition
            # woke every waiter at every commit, and they queued again for its lock.
            entry.wake.acquire()
        if entry.result is None:  # woken to lead: commit the oldest queued, ours among them
            self._lead()
        result = entry.result
        if isinstance(result, StoreError):
            raise result
        assert result is not None
        return result

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
        try:
            self._commit(batch)
        finally:
            with self._lock:  # hand over to the oldest caller still waiting, if any
                if self._queue:
                    self._queue[0].wake.release()
                else:
                    self._committing = False

    def _commit(self, batch: list[_Entry]) -> None:
        try:
            results = self.store.record_inbound_batch(
                [(e.message, e.jobs, e.notifications) for e in batch])
        except BaseException as exc:  # never leave followers waiting for a dead leader
            results = [StoreError(f"internal error: {type(exc).__name__}")] * len(batch)
            raise
        finally:
            for entry, result in zip(batch, results, strict=True):
                entry.result = result
                if entry is not batch[0]:  # the first is the leader's own, or led it
                    entry.wake.release()
