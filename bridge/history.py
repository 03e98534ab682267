"""Read the record: the consent history, per-project status, one number's state; and retry.

The store is the source of truth for what happened, so every operator view (the CLI, the
admin API, the metrics gauges) is a query here, never SQL in a route or a command. Times are
shown as stored: UTC ISO-8601.

A job is one consent event of one number in one project (stop, start, help, review). Its
``attempts`` count every time the worker tried it, across re-queues; the ``attempts`` table
keeps each try with its outcome, and a ``requeued`` row marks each operator retry.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import phonenumbers

from bridge.config import Config
from bridge.cooperative import yielding
from bridge.phones import mask, normalise
from bridge.store import FAILED, OPEN_STATUSES, PENDING, RUNNING, UNMATCHED, Store, iso, utcnow

logger = logging.getLogger(__name__)

JOB_STATUSES = (PENDING, RUNNING, "applied", "unmatched", FAILED, "superseded", "help", "review")
FORMATS = ("table", "csv", "json")
REQUEUED = "requeued"  # the attempts-table outcome recording an operator's retry


class HistoryError(ValueError):
    """A request the history cannot answer; the message says why, for the operator."""


class BadFilter(HistoryError):
    """An unparseable date or phone number, or an unknown status."""


class UnknownProject(HistoryError):
    """Neither configured nor present in the store."""


class UnknownJob(HistoryError):
    """No such job, or not one that can be retried."""


# -- filters -----------------------------------------------------------------------------------

def parse_since(text: str) -> datetime:
    """``YYYY-MM-DD`` or an ISO datetime; without a UTC offset it is read as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadFilter(f"not a date: {text!r}; use YYYY-MM-DD or an ISO date and time like"
                        " 2026-03-01T14:30 (UTC unless an offset is given)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_phone(text: str, region: str = "US") -> str:
    """Any way of writing a number, as E.164 (read in ``region`` when it has no country code)."""
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise BadFilter(f"unknown region {region!r}; expected a code like US or GB")
    number = normalise(text, region)
    if number is None:
        raise BadFilter(f"not a phone number: {text!r}")
    return number


def parse_status(text: str) -> str:
    if text not in JOB_STATUSES:
        raise BadFilter(f"unknown status {text!r}; expected one of: {', '.join(JOB_STATUSES)}")
    return text


def known_projects(config: Config, store: Store) -> list[str]:
    """Configured projects, then any retired ones whose history is still in the store."""
    names = [project.name for project in config.projects]
    stored = [row[0] for row in store.read().execute("SELECT DISTINCT project FROM jobs")]
    return names + sorted(set(stored) - set(names))


def default_region(config: Config, project: str | None) -> str:
    """Where a number without a country code is read: the project's region, else the US."""
    for item in config.projects:
        if item.name == project:
            return item.default_region
    return "US"


def check_project(name: str | None, config: Config, store: Store) -> str | None:
    if name is not None and name not in known_projects(config, store):
        configured = ", ".join(project.name for project in config.projects)
        raise UnknownProject(f"unknown project {name!r}; configured: {configured}")
    return name


@dataclass(frozen=True)
class EventFilter:
    project: str | None = None
    phone: str | None = None  # E.164
    since: datetime | None = None
    status: str | None = None
    limit: int | None = None  # the newest ``limit`` events


# -- the consent history -----------------------------------------------------------------------

@dataclass(frozen=True)
class HistoryEvent:
    """One consent event and what became of it."""

    id: int
    time: str  # when the message was received (the time written to REDCap)
    project: str
    phone: str
    event: str  # stop | start | help | review
    records: tuple[str, ...]
    outcome: str  # the job status
    attempts: int
    last_error: str | None
    completed_at: str | None
    message_sid: str

    def as_dict(self, show_phone: bool = False) -> dict[str, object]:
        # Spelled out rather than dataclasses.asdict, which deep-copies every field and was
        # two thirds of the CPU of listing a long history.
        return {
            "id": self.id, "time": self.time, "project": self.project,
            "phone": self.phone if show_phone else mask(self.phone), "event": self.event,
            "records": list(self.records), "outcome": self.outcome, "attempts": self.attempts,
            "last_error": self.last_error, "completed_at": self.completed_at,
            "message_sid": self.message_sid,
        }


_EVENT_SQL = """
SELECT jobs.id, jobs.event_at, jobs.project, jobs.phone, jobs.action, jobs.records, jobs.status,
       jobs.last_error, jobs.completed_at, messages.message_sid,
       (SELECT COUNT(*) FROM attempts WHERE attempts.job_id = jobs.id
                                        AND attempts.outcome != 'requeued') AS tries
FROM jobs JOIN messages ON messages.id = jobs.message_id
"""


def iter_events(store: Store, where: EventFilter = EventFilter(),
                batch: int = 500) -> Iterator[HistoryEvent]:
    """The consent history, oldest first (the newest ``limit`` when a limit is given).

    One query, so one consistent snapshot, read ``batch`` rows at a time: a history of a
    hundred thousand events streams out of the admin API without being held in memory at once
    (listed whole it took about 2 KB and 130 µs of CPU an event). The GIL is offered between
    rows, as in the worker, because the bridge's webhooks share the process.
    """
    clauses: list[str] = []
    args: list[object] = []
    if where.project is not None:
        clauses.append("jobs.project = ?")
        args.append(where.project)
    if where.phone is not None:
        clauses.append("jobs.phone = ?")
        args.append(where.phone)
    if where.since is not None:
        clauses.append("jobs.event_at >= ?")
        args.append(iso(where.since))
    if where.status is not None:
        clauses.append("jobs.status = ?")
        args.append(where.status)
    sql = _EVENT_SQL + (" WHERE " + " AND ".join(clauses) if clauses else "")
    if where.limit is None:
        sql += " ORDER BY jobs.event_at, jobs.id"
    else:
        # The newest ``limit``, turned oldest first. Only constant clauses are joined in; every
        # value is a bound parameter.
        newest = sql + " ORDER BY jobs.event_at DESC, jobs.id DESC LIMIT ?"
        sql = f"SELECT * FROM ({newest}) ORDER BY event_at, id"  # noqa: S608
        args.append(where.limit)
    # Run here, not in the generator, so a failing query raises while the caller can still
    # answer with an error status rather than in the middle of a streamed 200.
    cursor = store.read().execute(sql, args)
    return _stream(cursor, batch)


def _stream(cursor: sqlite3.Cursor, batch: int) -> Iterator[HistoryEvent]:
    try:
        while rows := cursor.fetchmany(batch):
            yield from (_event(row) for row in yielding(rows))
    finally:
        cursor.close()  # ends the read snapshot also when the reader stops early


def list_events(store: Store, where: EventFilter = EventFilter()) -> list[HistoryEvent]:
    """``iter_events`` as a list, for views that need every row at once (the table)."""
    return list(iter_events(store, where))


def _event(row: sqlite3.Row) -> HistoryEvent:
    return HistoryEvent(
        id=row["id"], time=row["event_at"], project=row["project"], phone=row["phone"],
        event=row["action"], records=tuple(json.loads(row["records"])), outcome=row["status"],
        attempts=row["tries"], last_error=row["last_error"], completed_at=row["completed_at"],
        message_sid=row["message_sid"],
    )


EVENT_COLUMNS = ("id", "time", "project", "phone", "event", "records", "outcome", "attempts",
                 "last_error", "completed_at", "message_sid")


def events_csv(events: Iterable[HistoryEvent], show_phone: bool = False) -> Iterator[str]:
    """CSV for spreadsheets, line by line: records separated by spaces (record IDs never
    contain one)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EVENT_COLUMNS)
    for event in events:
        data = event.as_dict(show_phone)
        data["records"] = " ".join(event.records)
        writer.writerow(["" if data[column] is None else data[column] for column in EVENT_COLUMNS])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def events_json(events: Iterable[HistoryEvent], show_phone: bool = False) -> Iterator[str]:
    """What ``json.dumps(events, indent=2)`` writes, an event at a time."""
    opening = "["
    for event in events:
        # Newlines inside values are escaped by json.dumps, so these are only its indentation.
        item = json.dumps(event.as_dict(show_phone), indent=2).replace("\n", "\n  ")
        yield f"{opening}\n  {item}"
        opening = ","
    yield "[]\n" if opening == "[" else "\n]\n"


def events_table(events: Sequence[HistoryEvent], show_phone: bool = False) -> str:
    if not events:
        return "no events\n"
    rows = [("ID", "TIME (UTC)", "PROJECT", "PHONE", "EVENT", "RECORDS", "OUTCOME", "TRIES",
             "LAST ERROR")]
    for event in events:
        data = event.as_dict(show_phone)
        rows.append((str(event.id), event.time[:19].replace("T", " "), event.project,
                     str(data["phone"]), event.event, ",".join(event.records) or "-",
                     event.outcome, str(event.attempts), _short(event.last_error, 80)))
    return _table(rows)


def format_events(events: Iterable[HistoryEvent], fmt: str, show_phone: bool = False
                  ) -> Iterator[str]:
    """The history as ``fmt`` (one of FORMATS), in pieces; CSV and JSON stream, the table
    needs every row for its column widths."""
    if fmt == "csv":
        return events_csv(events, show_phone)
    if fmt == "json":
        return events_json(events, show_phone)
    return iter([events_table(list(events), show_phone)])


# -- status ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProjectStatus:
    project: str
    configured: bool
    opted_out: int  # numbers whose newest applied event is a STOP
    jobs: dict[str, int]  # by status
    oldest_pending_at: str | None
    oldest_pending_age_seconds: float | None
    last_write_at: str | None  # the last job the worker completed against REDCap
    last_error: str | None
    last_error_at: str | None
    last_error_job: int | None = None
    # The phone index the worker matches numbers with: how many numbers, and when REDCap was
    # last read for it (None before the first build). A stale or empty index explains
    # "unmatched" outcomes.
    index_numbers: int | None = None
    index_refreshed_at: str | None = None

    @property
    def pending(self) -> int:
        return sum(self.jobs.get(status, 0) for status in OPEN_STATUSES)

    @property
    def failed(self) -> int:
        return self.jobs.get(FAILED, 0)

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["pending"] = self.pending
        data["failed"] = self.failed
        return data


def queue_state(store: Store) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Jobs per project and status, and the receipt time of each project's oldest open job.

    Cheap enough to run on every metrics scrape (both queries use the jobs indexes).
    """
    conn = store.read()
    jobs: dict[str, dict[str, int]] = {}
    for row in conn.execute("SELECT project, status, COUNT(*) AS n FROM jobs"
                            " GROUP BY project, status"):
        jobs.setdefault(row["project"], {})[row["status"]] = row["n"]
    oldest = dict(conn.execute("SELECT project, MIN(event_at) FROM jobs WHERE status IN (?,?)"
                               " GROUP BY project", OPEN_STATUSES).fetchall())
    return jobs, oldest


def status_summary(config: Config, store: Store,
                   now: datetime | None = None) -> list[ProjectStatus]:
    """Per project: opt-outs now in force, the queue, the last write and the last error."""
    now = now or utcnow()
    conn = store.read()
    jobs, oldest = queue_state(store)
    opted = dict(conn.execute("SELECT project, COUNT(*) FROM consent_state WHERE action='stop'"
                              " GROUP BY project").fetchall())
    written = dict(conn.execute("SELECT project, MAX(completed_at) FROM jobs WHERE status='applied'"
                                " GROUP BY project").fetchall())
    errors: dict[str, tuple[str, str, int]] = {}
    # SQLite takes the bare columns of a MAX() aggregate from the row holding the maximum.
    for row in conn.execute(
            "SELECT jobs.project, MAX(attempts.id), attempts.at, attempts.error, attempts.job_id"
            " FROM attempts JOIN jobs ON jobs.id = attempts.job_id"
            " WHERE attempts.error IS NOT NULL GROUP BY jobs.project"):
        errors[row["project"]] = (row["at"], row["error"], row["job_id"])
    indexed = dict(conn.execute("SELECT project, COUNT(DISTINCT phone) FROM phone_index"
                                " GROUP BY project").fetchall())
    refreshed = dict(conn.execute("SELECT project, refreshed_at FROM index_meta").fetchall())
    configured = {project.name for project in config.projects}
    summary: list[ProjectStatus] = []
    for name in known_projects(config, store):
        pending_since = oldest.get(name)
        error = errors.get(name)
        summary.append(ProjectStatus(
            project=name, configured=name in configured, opted_out=opted.get(name, 0),
            jobs=dict(sorted(jobs.get(name, {}).items())),
            oldest_pending_at=pending_since,
            oldest_pending_age_seconds=None if pending_since is None else max(
                0.0, (now - datetime.fromisoformat(pending_since)).total_seconds()),
            last_write_at=written.get(name),
            last_error=error[1] if error else None, last_error_at=error[0] if error else None,
            last_error_job=error[2] if error else None,
            index_numbers=indexed.get(name, 0) if name in refreshed else None,
            index_refreshed_at=refreshed.get(name),
        ))
    return summary


def status_table(summary: Sequence[ProjectStatus]) -> str:
    rows = [("PROJECT", "OPTED OUT", "PENDING", "FAILED", "REVIEW", "OLDEST PENDING",
             "LAST WRITE (UTC)", "NUMBERS INDEXED (READ AT)", "LAST ERROR")]
    for item in summary:
        name = item.project if item.configured else f"{item.project} (not configured)"
        error = "-" if item.last_error is None else \
            f"{(item.last_error_at or '')[:19].replace('T', ' ')} {_short(item.last_error, 50)}"
        index = "-" if item.index_refreshed_at is None else \
            f"{item.index_numbers} ({item.index_refreshed_at[:19].replace('T', ' ')})"
        rows.append((name, str(item.opted_out), str(item.pending), str(item.failed),
                     str(item.jobs.get("review", 0)), _age(item.oldest_pending_age_seconds),
                     (item.last_write_at or "-")[:19].replace("T", " "), index, error))
    return _table(rows)


# -- one number --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConsentState:
    project: str
    state: str  # "opted out" | "opted in"
    since: str  # the receipt time of the event that set it
    records: tuple[str, ...]
    applied_at: str


@dataclass(frozen=True)
class ConsentLookup:
    phone: str
    states: list[ConsentState] = field(default_factory=list)
    history: list[HistoryEvent] = field(default_factory=list)

    def as_dict(self, show_phone: bool = True) -> dict[str, object]:
        return {
            "phone": self.phone if show_phone else mask(self.phone),
            "states": [{**asdict(state), "records": list(state.records)}
                       for state in self.states],
            "history": [event.as_dict(show_phone) for event in self.history],
        }


def consent_lookup(store: Store, phone: str, project: str | None = None) -> ConsentLookup:
    """The state in force for ``phone`` in each project, and every event that led to it."""
    sql = "SELECT * FROM consent_state WHERE phone = ?"
    args: list[object] = [phone]
    if project is not None:
        sql += " AND project = ?"
        args.append(project)
    states = [
        ConsentState(project=row["project"],
                     state="opted out" if row["action"] == "stop" else "opted in",
                     since=row["event_at"], records=tuple(json.loads(row["records"])),
                     applied_at=row["applied_at"])
        for row in store.read().execute(sql + " ORDER BY project", args)
    ]
    history = list_events(store, EventFilter(project=project, phone=phone))
    return ConsentLookup(phone=phone, states=states, history=history)


def consent_text(lookup: ConsentLookup, show_phone: bool = False) -> str:
    shown = lookup.phone if show_phone else mask(lookup.phone)
    lines = [f"{shown}"]
    if not lookup.states:
        lines.append("  no opt-out or opt-in has been applied for this number")
    for state in lookup.states:
        lines.append(f"  {state.project}: {state.state} since {state.since[:19].replace('T', ' ')}"
                     f" UTC (records: {', '.join(state.records) or 'none matched'})")
    lines.append("")
    return "\n".join(lines) + "\n" + events_table(lookup.history, show_phone)


# -- retry -------------------------------------------------------------------------------------

def retry_failed(store: Store, project: str | None = None, job_id: int | None = None,
                 *, unmatched: bool = False) -> list[int]:
    """Put failed jobs back in the queue, due now; returns their IDs.

    ``failed`` jobs, and with ``unmatched`` also opt-outs and opt-ins that matched no record:
    once the phone field, its event or the token's rights are fixed (the bridge reads the
    index afresh after such a change), or a record gained the number, they find their records.
    Every other final state is an outcome, not something to redo. The attempt count starts
    afresh (so ``sync.max_attempts`` gives the fixed set-up a full chance) while the
    ``attempts`` table keeps every earlier try plus a ``requeued`` row. A re-queued job older
    than a state applied since is still superseded by the worker, never written over it.
    """
    statuses = (FAILED, UNMATCHED) if unmatched else (FAILED,)
    now = iso(utcnow())
    with store.transaction() as conn:
        if job_id is not None:
            row = conn.execute("SELECT project, status FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
            if row is None or (project is not None and row["project"] != project):
                where = f" in project {project!r}" if project is not None else ""
                raise UnknownJob(f"no job {job_id}{where}")
            if row["status"] not in statuses:
                also = "" if unmatched or row["status"] != UNMATCHED else \
                    " (with --unmatched, unmatched ones too)"
                raise UnknownJob(f"job {job_id} is {row['status']}, not failed; only failed"
                                 f" jobs can be retried{also}")
        marks = "(" + ",".join("?" * len(statuses)) + ")"
        clauses = ["status IN " + marks]
        args: list[str] = list(statuses)
        if project is not None:
            clauses.append("project = ?")
            args.append(project)
        if job_id is not None:
            clauses.append("id = ?")
            args.append(str(job_id))
        ids = [row[0] for row in conn.execute(
            "SELECT id FROM jobs WHERE " + " AND ".join(clauses) + " ORDER BY id",  # noqa: S608
            args)]
        requeue = "UPDATE jobs SET status = ?, attempts = 0, next_attempt_at = 0," \
            " completed_at = NULL WHERE id = ? AND status IN " + marks  # noqa: S608
        conn.executemany(requeue, [(PENDING, job, *statuses) for job in ids])
        conn.executemany("INSERT INTO attempts (job_id, at, outcome, error) VALUES (?,?,?,NULL)",
                         [(job, now, REQUEUED) for job in ids])
    if ids:
        logger.info("re-queued %d %s jobs%s: %s", len(ids),
                    "failed or unmatched" if unmatched else "failed",
                    f" of project {project}" if project else "", ",".join(map(str, ids)))
    return ids


# -- text helpers ------------------------------------------------------------------------------

def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    delta = timedelta(seconds=int(seconds))
    if delta.days:
        return f"{delta.days}d {delta.seconds // 3600}h"
    if delta.seconds >= 3600:
        return f"{delta.seconds // 3600}h {delta.seconds % 3600 // 60}m"
    if delta.seconds >= 60:
        return f"{delta.seconds // 60}m {delta.seconds % 60}s"
    return f"{delta.seconds}s"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join(lines) + "\n"
