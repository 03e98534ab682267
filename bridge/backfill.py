"""Backfill: recover opt-outs and opt-ins from Twilio's message history.

For a bridge set up after participants already replied, or after an outage in which messages
reached Twilio but not the bridge. ``python -m bridge backfill --project P --since DATE``
reads the inbound messages to the project's numbers through Twilio's Messages API, takes each
sender's latest opt-out or opt-in, and prints where REDCap disagrees. ``--apply`` then queues
each disagreement as an ordinary job, exactly as if the message had just arrived.

Decisions:

* **Classification** is the bridge's own (``bridge.consent.classify`` with the project's keyword
  sets, and phrase revocations only where ``revocation_phrases: apply``). Twilio's history has
  no ``OptOutType``, so a custom Advanced Opt-Out keyword the project does not list is missed.
* **Only the latest STOP/START per sender counts**: the worker applies the newest state and
  never an older one over it, so queueing earlier messages would change nothing.
* **Compared with REDCap** through the worker's own pieces: the phone index (every stored phone
  format matched, as for live messages) and the worker's read-back of the opt-out field and
  checkbox. A record agrees when the worker would not write it.
* **Applying** goes through ``Intake.receive`` with ``source="backfill"`` and the time Twilio
  received the message as the event time, so the store's dedupe by MessageSid applies (a
  message the bridge already has is not queued twice) and every project sharing the number
  gets its job, as with a live message. Numbers that match no record are listed, not queued.
* **Limits are printed with every run**: Twilio's history may be incomplete (REDCap erases the
  Twilio message log of its projects' numbers every few minutes, and logs can be deleted or
  redacted), and Twilio's Messages list cannot be filtered by Messaging Service, so only the
  project's ``twilio.numbers`` are read.
* Phone numbers are masked in the output, as in logs; record IDs are shown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import IO
from zoneinfo import ZoneInfo

import requests
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from bridge.config import Config, ProjectConfig
from bridge.consent import classify, load_keyword_sets
from bridge.inbound import InboundMessage
from bridge.intake import Intake, decide
from bridge.phones import mask, normalise
from bridge.redcap import RedcapError
from bridge.store import REVIEW, Store, StoreError
from bridge.sync import START, STOP, ProjectSetupError, Worker

logger = logging.getLogger(__name__)

INCOMPLETE_HISTORY = (
    "Twilio's message history may be incomplete: REDCap erases the Twilio message log of its"
    " projects' numbers every few minutes, and logs can be deleted or redacted in Twilio."
    " A participant missing here may still have opted out.")
# Twilio's client logs each request's query (the phone numbers) at INFO; keep it quiet.
_TWILIO_LOG = logging.getLogger(__name__ + ".twilio")
_TWILIO_LOG.setLevel(logging.WARNING)

ClientFactory = Callable[[str, str], Client]


class BackfillError(Exception):
    """The backfill cannot run or could not finish; the message says why."""


class BadRequest(BackfillError):
    """The command was asked for something the configuration cannot give (exit status 2)."""


@dataclass(frozen=True)
class HistoryMessage:
    """One inbound message from Twilio's log."""

    sid: str
    account_sid: str
    sender: str  # as Twilio has it
    phone: str  # E.164, the key the bridge matches on
    to: str
    body: str
    received_at: datetime
    messaging_service_sid: str = ""


@dataclass(frozen=True)
class OptState:
    """A sender's latest opt-out or opt-in in the history."""

    phone: str
    action: str  # stop | start
    message: HistoryMessage


@dataclass(frozen=True)
class Difference:
    state: OptState
    records: tuple[str, ...]  # the matching records that do not agree


@dataclass
class BackfillReport:
    project: ProjectConfig
    since: datetime
    messages_read: int = 0
    inbound: int = 0
    states: list[OptState] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    unmatched: list[OptState] = field(default_factory=list)
    reviews: list[HistoryMessage] = field(default_factory=list)  # free text, for a person
    applied: bool = False
    queued: int = 0
    already_recorded: int = 0
    shared_with: tuple[str, ...] = ()  # other projects that get jobs for these numbers


def twilio_client(account_sid: str, auth_token: str, timeout: float = 30.0) -> Client:
    return Client(account_sid, auth_token,
                  http_client=TwilioHttpClient(timeout=timeout, logger=_TWILIO_LOG))


def parse_since(text: str, zone: str) -> datetime:
    """``YYYY-MM-DD`` (midnight) or an ISO date-time; without an offset, in ``zone``."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected a date (YYYY-MM-DD) or ISO date-time, got {text!r}") \
            from None
    if len(text.strip()) == 10:
        moment = datetime.combine(moment.date(), time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment


def read_history(clients: Iterable[Client], numbers: Sequence[str], since: datetime,
                 default_region: str = "US") -> tuple[int, list[HistoryMessage]]:
    """Inbound messages to ``numbers`` since ``since``, oldest first, and how many were read."""
    read = 0
    found: dict[str, HistoryMessage] = {}
    for client in clients:
        for number in numbers:
            # twilio-python writes the filter's clock time with a "Z" whatever its zone.
            for record in client.messages.stream(to=number,
                                                 date_sent_after=since.astimezone(UTC)):
                read += 1
                received = record.date_sent or record.date_created
                if record.direction != "inbound" or received is None or received < since:
                    continue
                sender = record.from_ or ""
                phone = normalise(sender.removeprefix("whatsapp:"), default_region) or sender
                found[record.sid] = HistoryMessage(
                    sid=record.sid, account_sid=record.account_sid or "", sender=sender,
                    phone=phone, to=record.to or number, body=record.body or "",
                    received_at=received,
                    messaging_service_sid=record.messaging_service_sid or "")
    return read, sorted(found.values(), key=lambda m: (m.received_at, m.sid))


def latest_states(project: ProjectConfig, messages: Iterable[HistoryMessage],
                  ) -> tuple[dict[str, OptState], list[HistoryMessage]]:
    """Each sender's latest STOP or START, and the free-text revocations left to a person.

    ``messages`` must be oldest first.
    """
    keywords = load_keyword_sets(project.keywords)
    states: dict[str, OptState] = {}
    reviews = []
    for message in messages:
        action = decide(project, classify(message.body, None, keywords))
        if action in (STOP, START):
            states[message.phone] = OptState(message.phone, action, message)
        elif action == REVIEW:
            reviews.append(message)
    return states, reviews


def backfill(config: Config, project_name: str, since: datetime, *, apply: bool = False,
             client_factory: ClientFactory | None = None) -> BackfillReport:
    """Compare the project's Twilio history with REDCap; with ``apply``, queue the fixes."""
    try:
        project = config.project(project_name)
    except KeyError:
        raise BadRequest(f"no project named {project_name!r} in {config.path}") from None
    if not project.numbers:
        raise BadRequest(
            f"project {project.name!r} lists no twilio.numbers: Twilio's Messages list can only"
            " be searched by number, not by Messaging Service. Add the service's numbers to"
            " twilio.numbers.")
    factory = client_factory or (lambda sid, token: twilio_client(
        sid, token, config.sync.request_timeout_seconds))
    report = BackfillReport(project=project, since=since)
    try:
        clients = [factory(a.account_sid, a.auth_token) for a in config.twilio_accounts]
        report.messages_read, history = read_history(clients, project.numbers, since,
                                                     project.default_region)
    except TwilioException as exc:
        raise BackfillError(f"reading Twilio's message history failed: {exc}") from exc
    except requests.RequestException as exc:
        # The message would carry the request's URL; the kind of failure is what helps.
        raise BackfillError(f"cannot reach Twilio's API ({type(exc).__name__}): check this"
                            " machine's network, DNS and proxy settings") from exc
    report.inbound = len(history)
    states, report.reviews = latest_states(project, history)
    report.states = list(states.values())

    store = Store(config.storage.path)
    try:
        _compare(config, store, project, report)
        if apply:
            _apply(config, store, report)
    except (RedcapError, ProjectSetupError, StoreError) as exc:
        raise BackfillError(f"project {project.name!r}: {exc}") from exc
    finally:
        store.close()
    return report


def _compare(config: Config, store: Store, project: ProjectConfig,
             report: BackfillReport) -> None:
    if not report.states:
        return
    worker = Worker(config, store)
    sync = worker.projects[project.name]
    info = sync.structure()
    sync.index.load()
    sync.index.refresh(sync.client, info, full=True)
    matched = {state.phone: sync.index.lookup(state.phone) for state in report.states}
    records = sorted({record for found in matched.values() for record in found})
    current = worker.current_values(sync, info, records) if records else {}
    for state in report.states:
        present = [record for record in matched[state.phone] if record in current]
        if not present:
            report.unmatched.append(state)
            continue
        disagree = tuple(r for r in present if not _agrees(project, state.action, current[r]))
        if disagree:
            report.differences.append(Difference(state, disagree))


def _agrees(project: ProjectConfig, action: str, values: dict[str, str]) -> bool:
    """Whether a record already shows ``action`` (the worker would write nothing)."""
    opted_out = values["field"] != ""
    if project.opt_out_checkbox and values["checkbox"] != ("1" if action == STOP else "0"):
        return False
    return opted_out if action == STOP else not opted_out


def _apply(config: Config, store: Store, report: BackfillReport) -> None:
    intake = Intake(config, store)
    shared: set[str] = set()
    for difference in report.differences:
        message = difference.state.message
        result = intake.receive(
            InboundMessage(message_sid=message.sid, account_sid=message.account_sid,
                           from_number=message.sender, to_number=message.to, body=message.body,
                           messaging_service_sid=message.messaging_service_sid),
            source="backfill", received_at=message.received_at)
        if result.duplicate:
            report.already_recorded += 1
        else:
            report.queued += 1
        shared.update(d.project for d in result.decisions if d.action)
    shared.discard(report.project.name)
    report.shared_with = tuple(sorted(shared))
    report.applied = True


def format_report(report: BackfillReport) -> str:
    project = report.project
    zone = ZoneInfo(project.timezone)

    def when(moment: datetime) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")

    def line(state: OptState, note: str) -> str:
        return (f"  {mask(state.phone):<16} {state.action.upper():<5}"
                f" {when(state.message.received_at)}  {note}")

    lines = [
        f"Backfill for project {project.name}: inbound messages to"
        f" {', '.join(mask(n) for n in project.numbers)} since {when(report.since)}.",
        f"Read {report.messages_read} messages from Twilio: {report.inbound} inbound;"
        f" {len(report.states)} senders with an opt-out or opt-in.",
    ]
    if report.differences:
        lines.append(f"Differences from REDCap ({len(report.differences)}):")
        for diff in report.differences:
            records = ", ".join(diff.records)
            state = "not opted out" if diff.state.action == STOP else "still opted out"
            lines.append(line(diff.state, f"{state} in REDCap: record {records}"))
    else:
        lines.append("No differences from REDCap.")
    if report.unmatched:
        lines.append(f"No matching REDCap record ({len(report.unmatched)}; not queued):")
        lines.extend(line(state, "no record has this number") for state in report.unmatched)
    agreeing = len(report.states) - len(report.differences) - len(report.unmatched)
    lines.append(f"Already in agreement with REDCap: {agreeing}.")
    if report.reviews:
        lines.append(f"Free-text replies that may revoke consent ({len(report.reviews)}; with"
                     " revocation_phrases: review a person decides, so they are not counted):")
        lines.extend(f"  {mask(m.phone):<16} {'?':<5} {when(m.received_at)}  {m.sid}"
                     for m in report.reviews)
    if report.applied:
        lines.append(f"Queued {report.queued} jobs.")
        if report.already_recorded:
            lines.append(f"{report.already_recorded} of the messages were already recorded by"
                         " the bridge: see their jobs in its history.")
        if report.shared_with:
            lines.append("These numbers are shared: jobs were also queued for "
                         + ", ".join(report.shared_with) + ".")
    elif report.differences:
        lines.append(f"Dry run: nothing changed. Run again with --apply to queue"
                     f" {len(report.differences)} jobs.")
    lines.append("Note: " + INCOMPLETE_HISTORY)
    if project.messaging_service_sids:
        lines.append("Note: Twilio's Messages list cannot be filtered by Messaging Service, so"
                     " messages to this project's services ("
                     + ", ".join(project.messaging_service_sids)
                     + ") were read only through the numbers listed under twilio.numbers.")
    return "\n".join(lines) + "\n"


def run(config: Config, project: str, since: str, *, apply: bool, out: IO[str],
        err: IO[str], client_factory: ClientFactory | None = None) -> int:
    """The ``backfill`` command: 0 when it ran, 1 when it could not, 2 for bad input."""
    try:
        zone = config.project(project).timezone
    except KeyError:
        zone = "UTC"
    try:
        start = parse_since(since, zone)
    except ValueError as exc:
        err.write(f"error: --since: {exc}\n")
        return 2
    if start > datetime.now(UTC):
        err.write("error: --since is in the future\n")
        return 2
    try:
        report = backfill(config, project, start, apply=apply, client_factory=client_factory)
    except BackfillError as exc:
        err.write(f"error: {exc}\n")
        return 2 if isinstance(exc, BadRequest) else 1
    out.write(format_report(report))
    return 0
