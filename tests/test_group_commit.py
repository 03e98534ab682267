"""Group commit: concurrent webhooks share a transaction, yet each answer waits for its commit."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bridge.group_commit import GroupCommit
from bridge.store import InboundEntry, NewJob, NewMessage, Store, StoreError


def message(number: int) -> NewMessage:
    return NewMessage(message_sid=f"SM{number:032x}", account_sid="AC" + "1" * 32,
                      from_phone=f"+1555867{number:04d}", to_phone="+18057166646",
                      messaging_service_sid="", body="STOP", opt_out_type="", intent="stop",
                      source="webhook", received_at=datetime.now(UTC))


class GatedStore(Store):
    """Records each transaction's size; the first one waits until ``others`` are queued.

    ``crash_on`` makes that transaction (1-based) commit and then raise, like a bug.
    """

    def __init__(self, path: Path, others: int, crash_on: int = 0) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.others = others
        self.crash_on = crash_on
        self.entered = threading.Event()
        self.writer: GroupCommit | None = None

    def record_inbound_batch(self, entries: Sequence[InboundEntry]) -> list[bool | StoreError]:
        if not self.batches:
            self.entered.set()
            deadline = time.monotonic() + 10
            assert self.writer is not None
            while self.writer.waiting < self.others and time.monotonic() < deadline:
                time.sleep(0.005)
        self.batches.append(len(entries))
        results = super().record_inbound_batch(entries)
        if len(self.batches) == self.crash_on:
            raise RuntimeError("a bug")
        return results


def run_concurrently(store: GatedStore, writer: GroupCommit, numbers: list[int],
                     ) -> dict[int, object]:
    """The first caller starts a commit; the others arrive while it is under way."""
    results: dict[int, object] = {}

    def call(number: int) -> None:
        try:
            results[number] = writer.record_inbound(message(number), [
                NewJob("p", f"+1555867{number:04d}", "stop")])
        except Exception as exc:  # handed to the test thread
            results[number] = exc

    threads = [threading.Thread(target=call, args=(n,)) for n in numbers]
    threads[0].start()
    assert store.entered.wait(10)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)  # a separate connection sees only what was committed
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
    finally:
        conn.close()


def test_callers_arriving_during_a_commit_share_the_next_one(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "b.db", others=20)
    store.writer = writer = GroupCommit(store)
    results = run_concurrently(store, writer, list(range(21)))
    assert results == {n: True for n in range(21)}
    assert store.batches == [1, 20]
    assert count(store.path, "messages") == 21
    assert count(store.path, "jobs") == 21


def test_a_transaction_holds_at_most_max_batch(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "b.db", others=12)
    store.writer = writer = GroupCommit(store, max_batch=5)
    results = run_concurrently(store, writer, list(range(13)))
    assert all(result is True for result in results.values())
    assert len(results) == 13
    assert store.batches == [1, 5, 5, 2]


def test_a_caller_returns_only_once_its_message_is_committed(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    writer = GroupCommit(store)
    assert writer.record_inbound(message(1), [NewJob("p", "+15558670001", "stop")]) is True
    assert count(store.path, "messages") == 1
    assert writer.record_inbound(message(1), []) is False  # a Twilio retry
    assert count(store.path, "messages") == 1


def test_one_failing_entry_does_not_fail_the_others(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    broken = NewJob(None, "+15558670002", "stop")  # type: ignore[arg-type]  # NOT NULL
    results = store.record_inbound_batch([
        (message(1), [NewJob("p", "+15558670001", "stop")], []),
        (message(2), [broken], []),
        (message(3), [NewJob("p", "+15558670003", "stop")], []),
        (message(3), [NewJob("p", "+15558670003", "stop")], []),  # the same MessageSid
    ])
    assert results[0] is True and results[2] is True and results[3] is False
    assert isinstance(results[1], StoreError)
    assert count(store.path, "messages") == 2  # message 2 went with its job
    assert count(store.path, "jobs") == 2


def test_a_leader_that_crashes_releases_the_others(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "b.db", others=3, crash_on=2)
    store.writer = writer = GroupCommit(store)
    results = run_concurrently(store, writer, [0, 1, 2, 3])
    assert store.batches == [1, 3]
    assert results[0] is True
    outcomes = sorted(type(results[n]).__name__ for n in (1, 2, 3))
    assert outcomes == ["RuntimeError", "StoreError", "StoreError"]  # the leader has the bug
    assert writer.record_inbound(message(9), []) is True  # nobody is left waiting


def test_many_concurrent_callers_each_get_their_own_answer(tmp_path: Path) -> None:
    """Leadership passes from caller to caller; nobody is left waiting, nothing is lost."""
    store = Store(tmp_path / "b.db")
    writer = GroupCommit(store, max_batch=7)
    results: dict[tuple[int, int], object] = {}
    start = threading.Barrier(24)

    def caller(thread: int) -> None:
        start.wait()
        for round_ in range(25):
            number = round_ % 20 if thread < 4 else 100 + thread * 25 + round_  # 4 share sids
            results[thread, round_] = writer.record_inbound(message(number), [
                NewJob("p", f"+1555867{number:04d}", "stop")])

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert len(results) == 24 * 25
    shared = [value for (thread, _), value in results.items() if thread < 4]
    assert shared.count(True) == 20  # each shared MessageSid stored once, the rest duplicates
    assert all(value is True for (thread, _), value in results.items() if thread >= 4)
    assert count(store.path, "messages") == count(store.path, "jobs") == 20 + 20 * 25
    assert writer.waiting == 0
