"""The worker: the only writer to REDCap.

Each tick claims every due job of a project, keeps only the newest event per phone (older ones
are superseded, and a job older than the state already applied is never written over it),
finds the records through the phone index, and writes them in as few imports as the batch
size allows. Before each import it reads the chunk's records back (one export), which:

- drops records deleted since the index was built (an import would re-create them), and
- skips records already in the wanted state, so a job re-run after a crash between REDCap's
  answer and our commit does not write twice.

Transient REDCap failures put jobs back with exponential backoff and jitter; permanent ones
fail the jobs with REDCap's message (a validation error naming records fails only the jobs
touching those records). Outcomes and their notifications are committed together.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bridge import metrics
from bridge.budget import BudgetRegistry
from bridge.config import Config, ProjectConfig, SyncConfig
from bridge.cooperative import yielding
from bridge.phone_index import PhoneIndex
from bridge.phones import mask
from bridge.redcap import ProjectInfo, RedcapClient, RedcapError, StopRequested
from bridge.store import (
    APPLIED,
    FAILED,
    SUPERSEDED,
    UNMATCHED,
    Job,
    JobOutcome,
    NewNotification,
    Store,
    StoreError,
    epoch,
    utcnow,
)

logger = logging.getLogger(__name__)

STOP, START = "stop", "start"


class ProjectSetupError(Exception):
    """The project's fields in REDCap do not fit its configuration (a person must fix it)."""


@dataclass
class Target:
    """One job to write: the newest event of a phone, and the records carrying that phone."""

    job: Job
    records: tuple[str, ...]
    # The event before this one for the phone was the same action (a second STOP, say): REDCap
    # is brought in line all the same, but it is no change of consent, so nobody is emailed.
    repeat: bool = False


class ProjectSync:
    """Per-project state the worker keeps between ticks: client, structure, phone index."""

    def __init__(self, project: ProjectConfig, client: RedcapClient, store: Store) -> None:
        self.project = project
        self.client = client
        self.index = PhoneIndex(project, store)
        self.info: ProjectInfo | None = None
        self.build_tried = False  # the scheduled pass builds a missing index once

    def structure(self) -> ProjectInfo:
        if self.info is None:
            info = self.client.project_info()
            check_fields(self.project, info)
            self.info = info
        return self.info

    def stamp_format(self) -> str:
        """The text REDCap stores for the opt-out field's validation type."""
        validation = self.structure().fields[self.project.opt_out_field].validation
        return "%Y-%m-%d %H:%M" if validation.startswith("datetime_") and \
            not validation.startswith("datetime_seconds") else "%Y-%m-%d %H:%M:%S"

    def stamp(self, event_at: str) -> str:
        moment = datetime.fromisoformat(event_at).astimezone(ZoneInfo(self.project.timezone))
        return moment.strftime(self.stamp_format())


@dataclass(frozen=True)
class SetupProblem:
    """One way a project's REDCap fields or events do not fit its configuration.

    ``aspect`` groups problems for the ``check`` report: ``field`` (missing), ``opt_out_type``,
    ``checkbox``, ``events``. ``key`` is the configuration key to look at. A problem that is
    not ``blocking`` is a sure misconfiguration that the worker can nevertheless write around
    (event keys on a classic project are ignored), so only ``check`` reports it.
    """

    aspect: str
    key: str
    message: str
    blocking: bool = True


def setup_problems(project: ProjectConfig, info: ProjectInfo) -> list[SetupProblem]:
    """Every way the project's REDCap fields cannot hold what the bridge writes."""
    where = f"project {project.name!r}"
    problems: list[SetupProblem] = []
    for key in ("phone_field", "opt_out_field", "opt_out_checkbox"):
        name = getattr(project, key)
        if name and name not in info.fields:
            problems.append(SetupProblem(
                "field", key, f"{where}: {key} {name!r} is not a field in REDCap"))
    opt_out = info.fields.get(project.opt_out_field)
    if opt_out is not None and (opt_out.field_type != "text" or not (
            opt_out.validation == "" or opt_out.validation.startswith("datetime_"))):
        problems.append(SetupProblem(
            "opt_out_type", "opt_out_field",
            f"{where}: opt_out_field {opt_out.name!r} must be a text field without validation or"
            f" with a datetime validation (it has type {opt_out.field_type!r},"
            f" validation {opt_out.validation or 'none'!r}); a date-only field cannot hold the"
            " time"))
    checkbox = info.fields.get(project.opt_out_checkbox or "")
    if checkbox is not None:
        codes = {choice.split(",", 1)[0].strip() for choice in checkbox.choices.split("|")}
        if checkbox.field_type != "checkbox" or "1" not in codes:
            problems.append(SetupProblem(
                "checkbox", "opt_out_checkbox", f"{where}: opt_out_checkbox {checkbox.name!r}"
                " must be a checkbox field with an option coded 1"))
    problems.extend(_event_problems(project, info, where))
    return problems


def _event_problems(project: ProjectConfig, info: ProjectInfo,
                    where: str) -> list[SetupProblem]:
    pairs = (("phone_field", "phone_event"), ("opt_out_field", "opt_out_event"),
             ("opt_out_checkbox", "opt_out_checkbox_event"))
    problems: list[SetupProblem] = []
    if not info.longitudinal:
        for _, event_key in pairs:
            if getattr(project, event_key):
                problems.append(SetupProblem(
                    "events", event_key, f"{where}: {event_key} is set but the REDCap project is"
                    " classic (not longitudinal); remove the event keys", blocking=False))
        return problems
    known_events = sorted(set().union(*info.form_events.values()))
    for field_key, event_key in pairs:
        name, event = getattr(project, field_key), getattr(project, event_key)
        if not name or name not in info.fields:
            continue
        if not event:
            problems.append(SetupProblem(
                "events", event_key,
                f"{where}: the REDCap project is longitudinal; set {event_key}"))
            continue
        form = info.fields[name].form
        if event not in info.form_events.get(form, frozenset()):
            unknown = "" if event in known_events else \
                f" (the project's events: {', '.join(known_events) or 'none'})"
            problems.append(SetupProblem(
                "events", event_key, f"{where}: {event_key} {event!r} is not an event that"
                f" form {form!r} (holding {name!r}) is designated for{unknown}"))
    return problems


def check_fields(project: ProjectConfig, info: ProjectInfo) -> None:
    """Refuse a project whose REDCap fields cannot hold what the bridge writes."""
    for problem in setup_problems(project, info):
        if problem.blocking:
            raise ProjectSetupError(problem.message)


class Worker:
    def __init__(self, config: Config, store: Store, *, budgets: BudgetRegistry | None = None,
                 stop: threading.Event | None = None,
                 client_factory: Callable[[ProjectConfig, BudgetRegistry, threading.Event],
                                          RedcapClient] | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.settings: SyncConfig = config.sync
        self.store = store
        self.stop = stop or threading.Event()
        # Kept in the store: restarts and a backfill beside ``serve`` spend one budget.
        self.budgets = budgets or BudgetRegistry(self.settings.requests_per_minute,
                                                 ledger=store)
        factory = client_factory or self._client
        self.projects = {
            project.name: ProjectSync(project, factory(project, self.budgets, self.stop), store)
            for project in config.projects
        }
        self.rng = rng or random.Random()
        self.last_success: dict[str, datetime] = {}
        self.last_error: dict[str, str] = {}

    def _client(self, project: ProjectConfig, budgets: BudgetRegistry,
                stop: threading.Event) -> RedcapClient:
        return RedcapClient(project.redcap.url, project.redcap.token,
                            budgets.for_url(project.redcap.url),
                            timeout=self.settings.request_timeout_seconds, stop=stop)

    # -- scheduling entry points -------------------------------------------------------------

    def tick(self) -> int:
        """One pass: refresh indexes that are due, then apply every due job. Never raises.

        It first hands back jobs an earlier pass left ``running`` because it could not record
        their outcome (the store was not writable): ticks never overlap and only one process
        serves a store, so a job running between ticks is an orphan. Re-running it is safe,
        as every write is read back first. While the store cannot be written, each tick just
        logs that and tries again next time.
        """
        finished = 0
        try:
            orphans = self.store.recover_in_flight()
            if orphans:
                logger.warning("worker: %d jobs whose outcome could not be recorded are due"
                               " again", orphans)
            for name in self.store.projects_with_due_jobs(epoch()):
                if self.stop.is_set():
                    break
                sync = self.projects.get(name)
                if sync is None:
                    continue  # a retired project: its jobs wait until it is configured again
                finished += self.run_project(sync)
            if not self.stop.is_set():
                self.refresh_indexes()
        except (StoreError, sqlite3.Error) as exc:
            logger.error("worker: the store cannot be written (%s); trying again next tick",
                         exc)
        return finished

    def drain(self, max_ticks: int = 1000) -> None:
        """Tick until no job is due now (tests and the demo; serve relies on the scheduler)."""
        for _ in range(max_ticks):
            if not self.store.projects_with_due_jobs(epoch()):
                return
            self.tick()

    def refresh_indexes(self) -> None:
        """Scheduled refresh: incremental every few minutes, a full one daily.

        The first pass after start loads each persisted index and builds any that was never
        built, once: a blast arriving later finds the index ready. Building one (100,000
        records: seconds of CPU) while webhooks pour in slows their answers. If that first
        build fails, the first job that needs the index tries again.
        """
        now = utcnow()
        for sync in self.projects.values():
            if self.stop.is_set():
                return
            index = sync.index
            if not index.loaded:
                index.load()
            if index.refreshed_at is None and sync.build_tried:
                continue
            sync.build_tried = True
            full_due = index.full_refreshed_at is None or now - index.full_refreshed_at > \
                timedelta(hours=self.settings.index_full_refresh_hours)
            due = index.refreshed_at is None or now - index.refreshed_at > \
                timedelta(minutes=self.settings.index_refresh_minutes)
            if full_due or due:
                try:
                    index.refresh(sync.client, sync.structure(), full=full_due)
                except (RedcapError, ProjectSetupError) as exc:
                    logger.warning("phone index %s: refresh failed: %s", sync.project.name, exc)
                except StopRequested:
                    return

    # -- applying jobs -----------------------------------------------------------------------

    def run_project(self, sync: ProjectSync) -> int:
        """Apply the due jobs of one project. Returns how many jobs got a final outcome."""
        claim = max(self.settings.batch_size * 20, 1000)
        jobs = self.store.claim_due(sync.project.name, epoch(), claim)
        if not jobs:
            return 0
        open_jobs = {job.id: job for job in jobs}
        finished = 0

        def finish(outcomes: Sequence[JobOutcome]) -> None:
            nonlocal finished
            self.store.finish(outcomes)
            for outcome in yielding(outcomes):
                open_jobs.pop(outcome.job.id, None)
                metrics.JOB_OUTCOMES.labels(project=sync.project.name,
                                            outcome=outcome.status).inc()
                self._log_outcome(sync.project.name, outcome)
            finished += len(outcomes)

        try:
            self._apply(sync, jobs, finish)
        except StopRequested:
            self.store.release(open_jobs.values(), None, None, count_attempt=False)
        except RedcapError as exc:
            self.last_error[sync.project.name] = exc.message
            if exc.permanent:
                sync.info = None  # re-read the structure once a person has fixed things
                finish([self._failed(sync.project, job, exc.message)
                        for job in open_jobs.values()])
            else:
                self._retry_later(sync.project, list(open_jobs.values()), exc.message, finish)
        except (StoreError, sqlite3.Error) as exc:
            logger.error("project %s: could not record the outcome of %d jobs (%s); they are"
                         " checked again once the store can be written", sync.project.name,
                         len(open_jobs), exc)
        except ProjectSetupError as exc:
            self.last_error[sync.project.name] = str(exc)
            sync.info = None
            finish([self._failed(sync.project, job, str(exc)) for job in open_jobs.values()])
        except Exception as exc:  # a bug must not lose jobs or kill the scheduler thread
            logger.exception("worker: unexpected error in project %s", sync.project.name)
            self._retry_later(sync.project, list(open_jobs.values()),
                              f"internal error: {type(exc).__name__}", finish)
        return finished

    def _apply(self, sync: ProjectSync, jobs: list[Job],
               finish: Callable[[Sequence[JobOutcome]], None]) -> None:
        project = sync.project
        latest: dict[str, Job] = {}
        superseded: list[JobOutcome] = []
        for job in sorted(jobs, key=lambda j: (j.event_at, j.id)):
            older = latest.get(job.phone)
            if older is not None:
                superseded.append(JobOutcome(older, SUPERSEDED))
            latest[job.phone] = job
        applied_states = self.store.consent_states(project.name, latest)
        for phone, job in list(latest.items()):
            state = applied_states.get(phone)
            if state and (state.event_at, state.job_id) > (job.event_at, job.id):
                superseded.append(JobOutcome(job, SUPERSEDED))
                del latest[phone]
        if superseded:
            finish(superseded)
        if not latest:
            return

        sync.build_tried = True  # jobs build the index on demand; no second try this tick
        info = sync.structure()
        if not sync.index.loaded:
            sync.index.load()
        if sync.index.refreshed_at is None:
            sync.index.refresh(sync.client, info, full=True)
        targets = [Target(job, sync.index.lookup(job.phone),
                          self.store.previous_action(job) == job.action)
                   for job in yielding(latest.values())]
        newest_miss = max((t.job.event_at for t in targets if not t.records), default=None)
        if newest_miss is not None and sync.index.refreshed_at is not None and \
                sync.index.refreshed_at.isoformat() < newest_miss:
            # One refresh for every miss in this batch, and only when the index is older than
            # the message: a burst of unknown numbers cannot cause a storm of exports.
            sync.index.refresh(sync.client, info, full=False)
            targets = [Target(t.job, t.records or sync.index.lookup(t.job.phone), t.repeat)
                       for t in targets]
        unmatched = [t for t in targets if not t.records]
        if unmatched:
            finish([self._unmatched(project, t.job) for t in unmatched])
        matched = sorted((t for t in targets if t.records),
                         key=lambda t: (t.job.event_at, t.job.id))
        for chunk in _chunk_by_records(matched, self.settings.batch_size):
            if self.stop.is_set():
                raise StopRequested()
            self._write_chunk(sync, info, chunk, finish)
        self.last_success[project.name] = utcnow()

    def _write_chunk(self, sync: ProjectSync, info: ProjectInfo, chunk: list[Target],
                     finish: Callable[[Sequence[JobOutcome]], None]) -> None:
        project = sync.project
        while chunk:
            records = sorted({r for t in chunk for r in t.records})
            current = self.current_values(sync, info, records)
            rows: dict[tuple[str, str], dict[str, str]] = {}
            outcomes: list[JobOutcome] = []
            for target in yielding(chunk):
                present = [r for r in target.records if r in current]
                if not present:
                    outcomes.append(self._unmatched(project, target.job))
                    continue
                value, continues = "", True
                if target.job.action == STOP:
                    since, continues = self.store.opt_out_run(target.job)
                    value = sync.stamp(since)
                effective = self._plan_rows(project, info, target.job.action, value, present,
                                            current, rows, keep_time=continues)
                notes = [] if target.repeat else self._notes(
                    project, target.job.action, target.job, records=present, value=effective)
                outcomes.append(JobOutcome(target.job, APPLIED, records=present,
                                           value_written=effective or None, notifications=notes))
            try:
                if rows:
                    sync.client.import_records(list(rows.values()))
            except RedcapError as exc:
                bad = exc.records
                if not exc.permanent or not bad or not any(
                        bad & set(t.records) for t in chunk):
                    raise
                failed = [t for t in chunk if bad & set(t.records)]
                finish([self._failed(project, t.job, exc.message) for t in failed])
                chunk = [t for t in chunk if not bad & set(t.records)]
                continue
            finish(outcomes)
            return

    def current_values(self, sync: ProjectSync, info: ProjectInfo,
                       records: list[str]) -> dict[str, dict[str, str]]:
        """Read back the opt-out field and checkbox of existing records, keyed by record ID.

        Each record maps to ``{"field": value, "checkbox": "0"/"1"}`` for the configured
        events; a record REDCap does not return does not exist (any more).
        """
        project = sync.project
        fields = [info.record_id_field, project.opt_out_field]
        if project.opt_out_checkbox:
            fields.append(project.opt_out_checkbox)
        rows = sync.client.export_records(fields, records=records)
        checkbox_key = f"{project.opt_out_checkbox}___1"
        current: dict[str, dict[str, str]] = {}
        for row in rows:
            record = row.get(info.record_id_field)
            if not record:
                continue
            values = current.setdefault(record, {"field": "", "checkbox": "0"})
            if row.get("redcap_repeat_instrument"):
                continue
            event = row.get("redcap_event_name")
            if not info.longitudinal or event == project.opt_out_event:
                values["field"] = row.get(project.opt_out_field, "") or ""
            if project.opt_out_checkbox and (
                    not info.longitudinal or event == project.opt_out_checkbox_event):
                values["checkbox"] = row.get(checkbox_key, "0") or "0"
        return current

    @staticmethod
    def _plan_rows(project: ProjectConfig, info: ProjectInfo, action: str, value: str,
                   records: list[str], current: dict[str, dict[str, str]],
                   rows: dict[tuple[str, str], dict[str, str]], keep_time: bool = True) -> str:
        """Add the import rows that bring ``records`` to the wanted state; return the value.

        A STOP on a record already opted out keeps the time of the first opt-out: a repeated
        STOP is not a change of consent. ``keep_time=False`` says REDCap's time belongs to an
        opt-out a later START ended (see ``Store.opt_out_run``), so ``value`` replaces it.
        Only the ID, the event and changed fields are sent, so ``overwrite`` clears exactly
        the fields meant and nothing else.
        """
        effective = value
        for record in records:
            now = current[record]
            if action == STOP:
                kept = now["field"] if keep_time else ""
                want_field = kept or value
                effective = kept or effective
                want_box = "1"
            else:
                want_field, want_box = "", "0"
            if now["field"] != want_field:
                _row(rows, info, record, project.opt_out_event)[project.opt_out_field] = \
                    want_field
            if project.opt_out_checkbox and now["checkbox"] != want_box:
                _row(rows, info, record, project.opt_out_checkbox_event)[
                    f"{project.opt_out_checkbox}___1"] = want_box
        return effective

    # -- outcomes ----------------------------------------------------------------------------

    def _retry_later(self, project: ProjectConfig, jobs: list[Job], error: str,
                     finish: Callable[[Sequence[JobOutcome]], None]) -> None:
        limit = self.settings.max_attempts
        exhausted = [job for job in jobs if limit is not None and job.attempts + 1 >= limit]
        if exhausted:
            finish([self._failed(project, job, f"gave up after {limit} attempts: {error}")
                    for job in exhausted])
        for job in jobs:
            if job in exhausted:
                continue
            delay = min(self.settings.retry_max_seconds,
                        self.settings.retry_base_seconds * (2 ** min(job.attempts, 30)))
            delay *= self.rng.uniform(0.5, 1.0)
            self.store.release([job], epoch() + delay, error)
        if len(jobs) > len(exhausted):
            logger.warning("project %s: REDCap unavailable (%s); %d jobs will be retried",
                           project.name, error, len(jobs) - len(exhausted))

    def _failed(self, project: ProjectConfig, job: Job, error: str) -> JobOutcome:
        return JobOutcome(job, FAILED, error=error,
                          notifications=self._notes(project, "failed", job, error=error))

    def _unmatched(self, project: ProjectConfig, job: Job) -> JobOutcome:
        return JobOutcome(job, UNMATCHED, notifications=self._notes(project, "unmatched", job))

    @staticmethod
    def _notes(project: ProjectConfig, kind: str, job: Job, *, records: Sequence[str] = (),
               value: str | None = None, error: str | None = None) -> list[NewNotification]:
        if project.notify is None or kind not in project.notify.on:
            return []
        payload = {"action": job.action, "phone": job.phone, "event_at": job.event_at,
                   "records": list(records), "value": value, "error": error}
        return [NewNotification(project.name, kind, payload, job.id)]

    @staticmethod
    def _log_outcome(project: str, outcome: JobOutcome) -> None:
        job = outcome.job
        if outcome.status == SUPERSEDED:
            logger.debug("job %d %s %s %s: superseded by a newer event", job.id, project,
                         job.action, mask(job.phone))
            return
        level = logging.WARNING if outcome.status == FAILED else logging.INFO
        logger.log(level, "job %d %s %s %s: %s records=%s%s", job.id, project, job.action,
                   mask(job.phone), outcome.status, ",".join(outcome.records) or "-",
                   f" error={outcome.error}" if outcome.error else "")


def _row(rows: dict[tuple[str, str], dict[str, str]], info: ProjectInfo, record: str,
         event: str | None) -> dict[str, str]:
    key = (record, event or "")
    row = rows.get(key)
    if row is None:
        row = rows[key] = {info.record_id_field: record}
        if info.longitudinal and event:
            row["redcap_event_name"] = event
    return row


def _chunk_by_records(targets: list[Target], size: int) -> list[list[Target]]:
    """Group targets so each import carries at most ``size`` records (a lone big one alone)."""
    chunks: list[list[Target]] = []
    current: list[Target] = []
    count = 0
    for target in targets:
        if current and count + len(target.records) > size:
            chunks.append(current)
            current, count = [], 0
        current.append(target)
        count += len(target.records)
    if current:
        chunks.append(current)
    return chunks
