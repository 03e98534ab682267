"""SQLite store: the durable record of every message, job, attempt, outcome and notification.

Why SQLite: one file, transactional, no server for a research-IT team to run. The webhook
commits the message and its jobs in one transaction before answering Twilio, so an answered
event is never lost. WAL mode lets the webhook threads and the worker work side by side;
``synchronous=FULL`` makes every commit survive a power cut, not only a process crash. That
costs an fsync per commit, so concurrent webhooks share commits (``bridge.group_commit``)
rather than the store giving up FULL: measured in bench/README.md, NORMAL gained little once
commits were shared, and an answered webhook that a power cut could undo is a lost opt-out.

Each thread gets its own connection (web server threads, the worker, the mailer); nothing
here is tied to a Flask request.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bridge.budget import Level, Step

# Kept in the file (PRAGMA user_version), so a later release that changes SCHEMA knows what it
# is opening and can migrate it, and this one refuses a store written by a newer release
# rather than misreading it. Version 0 is a store from before versioning: the same schema as 1.
# A new table (CREATE ... IF NOT EXISTS) needs no new version: an older release ignores it.
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    message_sid TEXT NOT NULL UNIQUE,
    account_sid TEXT NOT NULL,
    from_phone TEXT NOT NULL,
    to_phone TEXT NOT NULL DEFAULT '',
    messaging_service_sid TEXT NOT NULL DEFAULT '',
    body TEXT,
    opt_out_type TEXT NOT NULL DEFAULT '',
    intent TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    routed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_received ON messages(received_at);

CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    project TEXT NOT NULL,
    phone TEXT NOT NULL,
    action TEXT NOT NULL,
    event_at TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    records TEXT NOT NULL DEFAULT '[]',
    value_written TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    completed_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(status, project, next_attempt_at);
CREATE INDEX IF NOT EXISTS jobs_phone ON jobs(project, phone, event_at);

CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts(job_id);

CREATE TABLE IF NOT EXISTS consent_state (
    project TEXT NOT NULL,
    phone TEXT NOT NULL,
    action TEXT NOT NULL,
    event_at TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    records TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (project, phone)
);

CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    kind TEXT NOT NULL,
    job_id INTEGER,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    last_error TEXT,
    email_id TEXT  -- the Message-ID of the email that carries it (set when claimed for sending)
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notifications_project ON notifications(project, created_at);
CREATE INDEX IF NOT EXISTS notifications_email ON notifications(email_id);

CREATE TABLE IF NOT EXISTS phone_index (
    project TEXT NOT NULL,
    record TEXT NOT NULL,
    phone TEXT NOT NULL,
    PRIMARY KEY (project, record, phone)
);

CREATE TABLE IF NOT EXISTS readiness_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
);

-- The REDCap request budget of each host (bridge.budget): kept here so that every process
-- serving this store, and every restart, spends one budget. ``at`` is wall-clock seconds.
CREATE TABLE IF NOT EXISTS request_budget (
    host TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS index_meta (
    project TEXT PRIMARY KEY,
    refreshed_at TEXT NOT NULL,
    full_refreshed_at TEXT NOT NULL
);

-- What each phone index was read from (bridge.phone_index.source_of): REDCap project, phone
-- field, event and region. An index read from anything else is read afresh, not refreshed.
CREATE TABLE IF NOT EXISTS index_source (
    project TEXT PRIMARY KEY,
    source TEXT NOT NULL
);
"""

# Job statuses. ``pending`` and ``running`` are the only ones the worker ever moves on from.
PENDING = "pending"
RUNNING = "running"
APPLIED = "applied"
UNMATCHED = "unmatched"
FAILED = "failed"
SUPERSEDED = "superseded"
HELP = "help"
REVIEW = "review"
OPEN_STATUSES = (PENDING, RUNNING)


class StoreError(Exception):
    """The store could not be read or written (disk full, read-only file, corrupt database)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds: sorts as text in time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class NewMessage:
    message_sid: str
    account_sid: str
    from_phone: str
    to_phone: str
    messaging_service_sid: str
    body: str
    opt_out_type: str
    intent: str
    source: str
    received_at: datetime


@dataclass(frozen=True)
class NewJob:
    project: str
    phone: str
    action: str  # stop | start | help | review
    status: str = PENDING


@dataclass(frozen=True)
class NewNotification:
    project: str
    kind: str
    payload: dict
    job_id: int | None = None


# A message with its jobs and notifications, as stored by the intake transaction.
InboundEntry = tuple[NewMessage, Sequence[NewJob], Sequence[NewNotification]]


@dataclass(frozen=True)
class Job:
    id: int
    project: str
    phone: str
    action: str
    event_at: str
    attempts: int
    message_id: int


@dataclass
class JobOutcome:
    """What the worker decided for one job; written with its notifications in one transaction."""

    job: Job
    status: str  # applied | unmatched | failed | superseded
    records: Sequence[str] = ()
    value_written: str | None = None
    error: str | None = None
    notifications: list[NewNotification] = field(default_factory=list)


@dataclass(frozen=True)
class ConsentState:
    action: str
    event_at: str
    job_id: int


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Writers of this process queue here rather than in SQLite's busy handler, which
        # sleeps in growing steps (up to 100 ms) and so turns a 1 ms wait into a long one.
        self._write_lock = threading.Lock()
        self._create()

    # -- connections -------------------------------------------------------------------------

    def _create(self) -> None:
        """Create the file with mode 0600 (it holds participant data), then the schema."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            conn = self._connect()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path} has schema version {version}, newer than this"
                    f" release's {SCHEMA_VERSION}: run the release that wrote it, or restore"
                    " a backup taken before the upgrade")
            conn.executescript(SCHEMA)  # executescript commits on its own
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: take the write lock up front, no upgrades)."""
        conn = self._connect()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(str(exc)) from exc
            try:
                yield conn
            except BaseException:
                _rollback(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise StoreError(str(exc)) from exc

    def read(self) -> sqlite3.Connection:
        return self._connect()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def check_writable(self) -> None:
        """Raise StoreError unless a write to the store's own file commits (for /readyz).

        A real row in the main database, so the commit writes to the disk the events go to
        (a temporary table would live in memory and pass on a full or read-only disk).
        """
        try:
            with self.transaction() as conn:
                conn.execute("INSERT INTO readiness_probe (id, checked_at) VALUES (1, ?)"
                             " ON CONFLICT(id) DO UPDATE SET checked_at=excluded.checked_at",
                             (iso(utcnow()),))
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc
        if not os.access(self.path, os.W_OK):
            raise StoreError(f"{self.path} is not writable")

    def settle_budget(self, key: str, step: Step) -> float:
        """``bridge.budget.Ledger``: a host's request budget, kept across processes and restarts.

        One short write transaction per REDCap request (at most a few a second). A store that
        cannot be written raises StoreError, and no request is sent: a token that could not be
        recorded is not spent.
        """
        try:
            with self.transaction() as conn:
                row = conn.execute("SELECT tokens, at FROM request_budget WHERE host=?",
                                   (key,)).fetchone()
                level, answer = step(None if row is None else Level(row[0], row[1]))
                conn.execute("INSERT INTO request_budget (host, tokens, at) VALUES (?,?,?)"
                             " ON CONFLICT(host) DO UPDATE SET tokens=excluded.tokens,"
                             " at=excluded.at", (key, level.tokens, level.at))
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc
        return answer

    # -- intake ------------------------------------------------------------------------------

    def record_inbound(self, message: NewMessage, jobs: Sequence[NewJob],
                       notifications: Sequence[NewNotification] = ()) -> bool:
        """Store a message with its jobs and notifications atomically.

        Returns False (and changes nothing) when the MessageSid is already stored: Twilio
        retries and Event Streams deliveries of the same message are applied once.
        """
        result = self.record_inbound_batch([(message, jobs, notifications)])[0]
        if isinstance(result, StoreError):
            raise result
        return result

    def record_inbound_batch(self, entries: Sequence[InboundEntry]) -> list[bool | StoreError]:
        """``record_inbound`` for several messages in one transaction, so one commit.

        Each entry is atomic on its own (a savepoint): one that fails gets its StoreError in
        the result and the others are still stored. If the commit itself fails, every entry
        gets the error and nothing is stored.
        """
        now = iso(utcnow())
        results: list[bool | StoreError] = []
        try:
            with self.transaction() as conn:
                for message, jobs, notifications in entries:
                    conn.execute("SAVEPOINT inbound")
                    try:
                        results.append(_insert_inbound(conn, message, jobs, notifications, now))
                    except sqlite3.Error as exc:
                        conn.execute("ROLLBACK TO inbound")
                        results.append(StoreError(str(exc)))
                    conn.execute("RELEASE inbound")
        except sqlite3.Error as exc:
            return [StoreError(str(exc))] * len(entries)
        except StoreError as exc:
            return [exc] * len(entries)
        return results

    # -- the worker's queue ------------------------------------------------------------------

    def recover_in_flight(self) -> int:
        """Return jobs left ``running`` to ``pending``: after a crash, or a failed write.

        Cheap when there are none (a read), so the worker can call it before every pass.
        """
        if self.read().execute("SELECT 1 FROM jobs WHERE status=? LIMIT 1",
                               (RUNNING,)).fetchone() is None:
            return 0
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE jobs SET status=?, next_attempt_at=0 WHERE status=?", (PENDING, RUNNING)
            ).rowcount

    def claim_due(self, project: str, now: float, limit: int) -> list[Job]:
        """Move up to ``limit`` due jobs of a project to ``running``, oldest first."""
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT id, project, phone, action, event_at, attempts, message_id FROM jobs"
                " WHERE status=? AND project=? AND next_attempt_at<=?"
                " ORDER BY event_at, id LIMIT ?",
                (PENDING, project, now, limit),
            ).fetchall()
            conn.executemany("UPDATE jobs SET status=? WHERE id=?",
                             [(RUNNING, row["id"]) for row in rows])
        return [Job(**dict(row)) for row in rows]

    def release(self, jobs: Iterable[Job], next_attempt_at: float | None, error: str | None,
                count_attempt: bool = True) -> None:
        """Put claimed jobs back to ``pending`` (transient failure, or shutdown mid-batch)."""
        now = iso(utcnow())
        with self.transaction() as conn:
            for job in jobs:
                conn.execute(
                    "UPDATE jobs SET status=?, attempts=attempts+?, next_attempt_at=?,"
                    " last_error=COALESCE(?, last_error) WHERE id=? AND status=?",
                    (PENDING, int(count_attempt), next_attempt_at or 0, error, job.id, RUNNING),
                )
                if count_attempt:
                    conn.execute("INSERT INTO attempts (job_id, at, outcome, error)"
                                 " VALUES (?,?,?,?)", (job.id, now, "retry", error))

    def finish(self, outcomes: Sequence[JobOutcome]) -> None:
        """Record final outcomes, the consent state they establish, and their notifications.

        The rows are prepared before the transaction and written with ``executemany``: a
        batch of 500 outcomes holds the write lock, which webhooks wait for, a few
        milliseconds rather than the time of 1,500 statements issued one by one.
        """
        if not outcomes:
            return
        now = iso(utcnow())
        jobs: list[tuple[object, ...]] = []
        attempts: list[tuple[object, ...]] = []
        states: list[tuple[object, ...]] = []
        notes: list[tuple[NewNotification, int]] = []
        for outcome in outcomes:
            job = outcome.job
            counted = outcome.status != SUPERSEDED
            records = json.dumps(list(outcome.records))
            jobs.append((outcome.status, int(counted), records, outcome.value_written,
                         outcome.error, now, job.id))
            if counted:
                attempts.append((job.id, now, outcome.status, outcome.error))
            if outcome.status in (APPLIED, UNMATCHED):
                states.append((job.project, job.phone, job.action, job.event_at, job.id,
                               records, now))
            notes.extend((note, job.id) for note in outcome.notifications)
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE jobs SET status=?, attempts=attempts+?, records=?, value_written=?,"
                " last_error=?, completed_at=? WHERE id=?", jobs)
            conn.executemany("INSERT INTO attempts (job_id, at, outcome, error)"
                             " VALUES (?,?,?,?)", attempts)
            conn.executemany(
                "INSERT INTO consent_state (project, phone, action, event_at, job_id,"
                " records, applied_at) VALUES (?,?,?,?,?,?,?)"
                " ON CONFLICT(project, phone) DO UPDATE SET action=excluded.action,"
                " event_at=excluded.event_at, job_id=excluded.job_id,"
                " records=excluded.records, applied_at=excluded.applied_at"
                " WHERE excluded.event_at > consent_state.event_at OR"
                " (excluded.event_at = consent_state.event_at AND"
                "  excluded.job_id > consent_state.job_id)", states)
            for note, job_id in notes:
                _insert_notification(conn, note, job_id, now)

    def consent_states(self, project: str, phones: Iterable[str]) -> dict[str, ConsentState]:
        """The newest applied state per phone: older jobs must never be written over it."""
        conn = self.read()
        result: dict[str, ConsentState] = {}
        phone_list = list(set(phones))
        for start in range(0, len(phone_list), 500):
            chunk = phone_list[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                f"SELECT phone, action, event_at, job_id FROM consent_state"  # noqa: S608
                f" WHERE project=? AND phone IN ({marks})", (project, *chunk)
            ):
                result[row["phone"]] = ConsentState(row["action"], row["event_at"], row["job_id"])
        return result

    def opt_out_run(self, job: Job) -> tuple[str, bool]:
        """When the opt-out that a STOP ``job`` belongs to began, and whether it continues one.

        A STOP repeated without a START in between is not a new opt-out: the time to record is
        that of the first STOP of the run, whether or not the worker wrote each one (batches
        coalesce, so it may never have seen the earlier ones). The run *continues* what REDCap
        already holds unless a START arrived after the last applied state: then any opt-out
        time in REDCap belongs to an earlier run, ended by a START that was coalesced away.
        """
        conn = self.read()
        start = conn.execute(
            "SELECT event_at, id FROM jobs WHERE project=? AND phone=? AND action='start'"
            " AND (event_at, id) < (?, ?) ORDER BY event_at DESC, id DESC LIMIT 1",
            (job.project, job.phone, job.event_at, job.id)).fetchone()
        after = (start["event_at"], start["id"]) if start else ("", 0)
        first = conn.execute(
            "SELECT event_at FROM jobs WHERE project=? AND phone=? AND action='stop'"
            " AND (event_at, id) > (?, ?) AND (event_at, id) <= (?, ?)"
            " ORDER BY event_at, id LIMIT 1",
            (job.project, job.phone, *after, job.event_at, job.id)).fetchone()
        if start is None:
            return first["event_at"], True
        applied = conn.execute(
            "SELECT event_at, job_id FROM consent_state WHERE project=? AND phone=?",
            (job.project, job.phone)).fetchone()
        continues = applied is not None and \
            (applied["event_at"], applied["job_id"]) > after
        return first["event_at"], continues

    def previous_action(self, job: Job) -> str | None:
        """The opt-out or opt-in that arrived just before ``job`` for its phone and project."""
        row = self.read().execute(
            "SELECT action FROM jobs WHERE project=? AND phone=? AND action IN ('stop','start')"
            " AND (event_at, id) < (?, ?) ORDER BY event_at DESC, id DESC LIMIT 1",
            (job.project, job.phone, job.event_at, job.id)).fetchone()
        return row["action"] if row else None

    def projects_with_due_jobs(self, now: float) -> list[str]:
        rows = self.read().execute(
            "SELECT DISTINCT project FROM jobs WHERE status=? AND next_attempt_at<=?",
            (PENDING, now),
        ).fetchall()
        return [row["project"] for row in rows]

    def next_due_at(self) -> float | None:
        row = self.read().execute(
            "SELECT MIN(next_attempt_at) AS due FROM jobs WHERE status=?", (PENDING,)
        ).fetchone()
        return row["due"] if row and row["due"] is not None else None

    def job(self, job_id: int) -> sqlite3.Row | None:
        return self.read().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()

    def jobs_for_message(self, message_sid: str) -> list[sqlite3.Row]:
        return self.read().execute(
            "SELECT jobs.* FROM jobs JOIN messages ON messages.id = jobs.message_id"
            " WHERE messages.message_sid=? ORDER BY jobs.id", (message_sid,)
        ).fetchall()

    def count_jobs(self, project: str | None = None) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) AS n FROM jobs"
        args: tuple = ()
        if project is not None:
            sql += " WHERE project=?"
            args = (project,)
        rows = self.read().execute(sql + " GROUP BY status", args).fetchall()
        return {row["status"]: row["n"] for row in rows}

    # -- phone index persistence -------------------------------------------------------------

    def index_source(self, project: str) -> str | None:
        """What the saved index of ``project`` was read from; None if never saved with it."""
        row = self.read().execute("SELECT source FROM index_source WHERE project=?",
                                  (project,)).fetchone()
        return row[0] if row else None

    def load_index(self, project: str) -> tuple[list[tuple[str, str]], str | None, str | None]:
        """(record, phone) pairs with the times of the last refresh and last full refresh."""
        conn = self.read()
        pairs = [(row[0], row[1]) for row in conn.execute(
            "SELECT record, phone FROM phone_index WHERE project=?", (project,))]
        meta = conn.execute("SELECT refreshed_at, full_refreshed_at FROM index_meta"
                            " WHERE project=?", (project,)).fetchone()
        if meta is None:
            return pairs, None, None
        return pairs, meta["refreshed_at"], meta["full_refreshed_at"]

    def save_index(self, project: str, pairs: Iterable[tuple[str, str]], refreshed_at: str,
                   full: bool, records: Iterable[str] = (), source: str = "") -> None:
        """Persist a full index, or (``full=False``) replace the entries of ``records``;
        ``source`` is what a full one was read from (an incremental one only follows a full one
        read from the same, in this process or, per ``index_source``, a previous one)."""
        with self.transaction() as conn:
            if full:
                conn.execute("INSERT INTO index_source (project, source) VALUES (?,?)"
                             " ON CONFLICT(project) DO UPDATE SET source=excluded.source",
                             (project, source))
                conn.execute("DELETE FROM phone_index WHERE project=?", (project,))
            else:
                conn.executemany("DELETE FROM phone_index WHERE project=? AND record=?",
                                 [(project, record) for record in records])
            conn.executemany(
                "INSERT OR IGNORE INTO phone_index (project, record, phone) VALUES (?,?,?)",
                ((project, record, phone) for record, phone in pairs),
            )
            conn.execute(
                "INSERT INTO index_meta (project, refreshed_at, full_refreshed_at)"
                " VALUES (?,?,?) ON CONFLICT(project) DO UPDATE SET"
                " refreshed_at=excluded.refreshed_at,"
                " full_refreshed_at=CASE WHEN ? THEN excluded.full_refreshed_at"
                " ELSE index_meta.full_refreshed_at END",
                (project, refreshed_at, refreshed_at, int(full)),
            )


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: after a failed write (disk full, I/O error)
    SQLite has often rolled back already, and a second ROLLBACK would raise an error that
    hides the real one."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _insert_inbound(conn: sqlite3.Connection, message: NewMessage, jobs: Sequence[NewJob],
                    notifications: Sequence[NewNotification], now: str) -> bool:
    received_at = iso(message.received_at)
    cursor = conn.execute(
        "INSERT INTO messages (message_sid, account_sid, from_phone, to_phone,"
        " messaging_service_sid, body, opt_out_type, intent, source, received_at,"
        " routed) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(message_sid) DO NOTHING",
        (message.message_sid, message.account_sid, message.from_phone,
         message.to_phone, message.messaging_service_sid, message.body,
         message.opt_out_type, message.intent, message.source,
         received_at, len({job.project for job in jobs})),
    )
    if cursor.rowcount == 0:
        return False
    message_id = cursor.lastrowid
    job_ids: dict[str, int] = {}
    for job in jobs:
        job_cursor = conn.execute(
            "INSERT INTO jobs (message_id, project, phone, action, event_at, status,"
            " created_at, completed_at) VALUES (?,?,?,?,?,?,?,?)",
            (message_id, job.project, job.phone, job.action, received_at, job.status,
             now, None if job.status == PENDING else now),
        )
        job_ids[job.project] = int(job_cursor.lastrowid or 0)
    for note in notifications:
        _insert_notification(conn, note, job_ids.get(note.project), now)
    return True


def _insert_notification(conn: sqlite3.Connection, note: NewNotification, job_id: int | None,
                         now: str) -> None:
    conn.execute(
        "INSERT INTO notifications (project, kind, job_id, payload, created_at)"
        " VALUES (?,?,?,?,?)",
        (note.project, note.kind, note.job_id or job_id, json.dumps(note.payload), now),
    )


def epoch() -> float:
    """Wall-clock seconds, the unit of ``next_attempt_at`` (survives restarts, unlike monotonic)."""
    return time.time()
