"""Intake: route a verified inbound message to projects, classify it, and store it durably.

This is everything the webhook does after the signature check, and it never talks to REDCap,
SMTP or DNS: one SQLite transaction, then Twilio gets its answer. Once ``receive`` returns,
the event is safe; the worker does the rest.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.config import Config, KeywordConfig, ProjectConfig
from bridge.consent import Intent, KeywordSets, classify, load_keyword_sets
from bridge.group_commit import GroupCommit
from bridge.inbound import InboundMessage
from bridge.phones import mask, normalise
from bridge.store import (
    HELP,
    PENDING,
    REVIEW,
    NewJob,
    NewMessage,
    NewNotification,
    Store,
    utcnow,
)

logger = logging.getLogger(__name__)


@functools.cache
def default_keywords() -> KeywordSets:
    """Keywords for classifying unrouted messages (for the record only)."""
    return load_keyword_sets(KeywordConfig())


class Router:
    """Which projects a message belongs to: by the number it was sent to, or its service."""

    def __init__(self, projects: Sequence[ProjectConfig]) -> None:
        self._by_number: dict[str, list[ProjectConfig]] = {}
        self._by_service: dict[str, list[ProjectConfig]] = {}
        for project in projects:
            for number in project.numbers:
                self._by_number.setdefault(number, []).append(project)
            for sid in project.messaging_service_sids:
                self._by_service.setdefault(sid, []).append(project)

    def route(self, to_number: str, messaging_service_sid: str) -> list[ProjectConfig]:
        found: dict[str, ProjectConfig] = {}
        to = normalise(to_number.removeprefix("whatsapp:")) or to_number
        for project in (*self._by_number.get(to, ()),
                        *self._by_service.get(messaging_service_sid, ())):
            found.setdefault(project.name, project)
        return list(found.values())


@dataclass(frozen=True)
class Decision:
    project: str
    intent: Intent
    action: str | None  # the job's action: stop | start | help | review; None: nothing to do


@dataclass(frozen=True)
class IntakeResult:
    duplicate: bool
    decisions: tuple[Decision, ...]

    @property
    def routed(self) -> bool:
        return bool(self.decisions)


def decide(project: ProjectConfig, intent: Intent) -> str | None:
    """The job a classified message gives rise to in one project."""
    if intent is Intent.REVIEW and project.revocation_phrases == "apply":
        return "stop"
    if intent is Intent.NONE:
        return None
    return intent.value


class Intake:
    def __init__(self, config: Config, store: Store,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.store = store
        self.writer = GroupCommit(store)  # concurrent webhooks share a commit (one fsync)
        self.router = Router(config.projects)
        self.clock = clock
        self.keywords: dict[str, KeywordSets] = {
            project.name: load_keyword_sets(project.keywords) for project in config.projects
        }

    def receive(self, message: InboundMessage, source: str = "webhook",
                received_at: datetime | None = None) -> IntakeResult:
        """Classify, route and store one message. Raises StoreError if it cannot be stored."""
        received_at = received_at or self.clock()
        projects = self.router.route(message.to_number, message.messaging_service_sid)
        sender = normalise(message.from_number.removeprefix("whatsapp:")) or message.from_number
        decisions = tuple(
            Decision(p.name, intent, decide(p, intent))
            for p in projects
            for intent in (classify(message.body, message.opt_out_type, self.keywords[p.name]),)
        )
        overall = decisions[0].intent if decisions else classify(
            message.body, message.opt_out_type, default_keywords())
        jobs = [NewJob(d.project, sender, d.action, _status(d.action))
                for d in decisions if d.action]
        notes = [
            NewNotification(d.project, d.action, {"action": d.action, "phone": sender,
                                                  "event_at": received_at.isoformat(),
                                                  "body": message.body})
            for d, project in zip(decisions, projects, strict=True)
            if d.action in (HELP, REVIEW) and project.notify and d.action in project.notify.on
        ]
        stored = self.writer.record_inbound(
            NewMessage(
                message_sid=message.message_sid, account_sid=message.account_sid,
                from_phone=sender, to_phone=message.to_number,
                messaging_service_sid=message.messaging_service_sid, body=message.body,
                opt_out_type=message.opt_out_type, intent=overall.value, source=source,
                received_at=received_at,
            ),
            jobs, notes,
        )
        result = IntakeResult(duplicate=not stored, decisions=decisions)
        _log(message, sender, source, result)
        return result


def _status(action: str) -> str:
    return {HELP: HELP, REVIEW: REVIEW}.get(action, PENDING)


def _log(message: InboundMessage, sender: str, source: str, result: IntakeResult) -> None:
    if result.duplicate:
        logger.info("inbound %s via %s from %s: duplicate, ignored", message.message_sid,
                    source, mask(sender))
    elif not result.routed:
        logger.warning("inbound %s via %s from %s to %s: unrouted (no project has this number"
                       " or messaging service)", message.message_sid, source, mask(sender),
                       mask(message.to_number))
    else:
        logger.info("inbound %s via %s from %s: %s", message.message_sid, source, mask(sender),
                    ", ".join(f"{d.project}={d.action or 'none'}" for d in result.decisions))
