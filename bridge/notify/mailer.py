"""The mailer: a scheduled job that sends due notifications and records each outcome.

Each tick plans the emails that are due (``plan``), claims their rows (``pending`` ->
``sending``), opens one SMTP session, and sends them one by one. The moment the server has
accepted an email its rows are committed as ``sent``; when it did not, they go back to
``pending`` with exponential backoff and jitter and the server's answer in ``last_error``.

Guarantees and their limits:

- Never lost: a row leaves the queue only once a server accepted its email. Emails are never
  given up on: a permanent refusal (wrong password, refused sender or recipients, no STARTTLS,
  untrusted certificate) is logged at ERROR on every attempt and retried at the capped
  interval, so fixing the configuration and restarting delivers everything queued. REDCap
  writes never wait for the mail server; they only queue rows.
- Not sent twice, with one window: if the process dies after the server accepted an email
  but before the ``sent`` commit (a few milliseconds), the rows are still ``sending`` and the
  next run sends that email again. The copy carries the same Message-ID (it is derived from
  the rows), so mail systems that de-duplicate by Message-ID drop it; others show it twice.
  We prefer a rare duplicate to a possibly lost opt-out notice.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby

from bridge import metrics
from bridge.config import Config, ProjectConfig
from bridge.notify.compose import Notice, compose, message_id
from bridge.notify.plan import BURST_WINDOW, plan
from bridge.notify.queue import NotificationQueue
from bridge.notify.smtp import SmtpError, SmtpTransport
from bridge.store import Store, epoch

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0
RETRY_BASE_SECONDS = 10.0
RETRY_MAX_SECONDS = 600.0


@dataclass(frozen=True)
class Outgoing:
    """One email: its project, the notifications it carries, and its Message-ID."""

    project: ProjectConfig
    notices: tuple[Notice, ...]
    email_id: str


class Mailer:
    def __init__(self, config: Config, store: Store, *, transport: SmtpTransport | None = None,
                 stop: threading.Event | None = None, clock: Callable[[], float] = epoch,
                 rng: random.Random | None = None,
                 retry_base_seconds: float = RETRY_BASE_SECONDS,
                 retry_max_seconds: float = RETRY_MAX_SECONDS) -> None:
        if config.smtp is None:
            raise ValueError("the mailer needs the smtp section of the configuration")
        self.smtp = config.smtp
        self.projects = {p.name: p for p in config.projects if p.notify is not None}
        self.queue = NotificationQueue(store)
        self.transport = transport or SmtpTransport(config.smtp)
        self.stop = stop or threading.Event()
        self.clock = clock
        self.rng = rng or random.Random()
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self._warned_unconfigured: set[str] = set()

    def tick(self) -> int:
        """Send what is due; returns how many emails the server accepted. Never raises."""
        try:
            emails = self._left_in_flight() + self._claim_due(self.clock())
            return self._deliver(emails) if emails else 0
        except Exception:  # a bug or a store failure must not kill the scheduler thread
            logger.exception("mailer: unexpected error; notifications stay queued")
            return 0

    # -- choosing what to send ---------------------------------------------------------------

    def _left_in_flight(self) -> list[Outgoing]:
        """Emails a previous run claimed but never recorded as sent: send them as they were."""
        emails: list[Outgoing] = []
        for email_id, group in groupby(self.queue.in_flight(), key=lambda n: n.email_id):
            notices = tuple(group)
            project = self.projects.get(notices[0].project)
            if project is None or email_id is None:
                self.queue.release([(n.id, 0.0) for n in notices], None, count_attempt=False)
                continue
            logger.warning("mailer: email %s (%d notifications, project %s) was being sent when"
                           " the bridge stopped; sending it again, so it may arrive twice",
                           email_id, len(notices), project.name)
            emails.append(Outgoing(project, notices, email_id))
        return emails

    def _claim_due(self, now: float) -> list[Outgoing]:
        moment = datetime.fromtimestamp(now, UTC)
        emails: list[Outgoing] = []
        for name, group in groupby(self.queue.due(now), key=lambda n: n.project):
            notices = list(group)
            project = self.projects.get(name)
            if project is None or project.notify is None:
                if name not in self._warned_unconfigured:
                    self._warned_unconfigured.add(name)
                    logger.warning("mailer: %d notifications for project %s wait: it has no"
                                   " notify configuration now", len(notices), name)
                continue
            oldest = min(n.created_at for n in notices)
            groups = plan(project.notify, notices,
                          made=self.queue.made_since(name, oldest - BURST_WINDOW),
                          singles_sent=self.queue.single_emails_since(name, moment - BURST_WINDOW),
                          now=moment)
            for notices_of_email in groups:
                email_id = message_id(name, notices_of_email, self.smtp.from_addr)
                if self.queue.claim(email_id, [n.id for n in notices_of_email]):
                    emails.append(Outgoing(project, tuple(notices_of_email), email_id))
        return emails

    # -- sending -----------------------------------------------------------------------------

    def _deliver(self, emails: list[Outgoing]) -> int:
        remaining = list(emails)
        sent = 0
        try:
            with self.transport.session() as session:
                while remaining and not self.stop.is_set():
                    email = remaining[0]
                    notify = email.project.notify
                    assert notify is not None
                    try:
                        message = compose(email.project, self.smtp, email.notices,
                                          email_id=email.email_id, now=self._now())
                    except Exception as exc:  # a bug; keep the rows queued, go on
                        logger.exception("mailer: cannot compose email %s", email.email_id)
                        remaining.pop(0)
                        self._retry([email], f"internal error: {type(exc).__name__}",
                                    permanent=True)
                        continue
                    try:
                        refused = session.send(message, notify.emails)
                    except SmtpError as exc:
                        if exc.session:
                            raise
                        remaining.pop(0)
                        self._retry([email], exc.message, permanent=exc.permanent)
                        continue
                    remaining.pop(0)
                    # At once: from the server's acceptance to this commit is the only window
                    # in which a crash makes the next run send the email again. Should the
                    # commit itself fail, the rows stay ``sending`` and are sent again too.
                    self._mark_sent(email, refused)
                    sent += 1
        except SmtpError as exc:
            self._retry(remaining, exc.message, permanent=exc.permanent)
            remaining = []
        finally:
            if remaining:  # shutting down (or a bug): hand them back untouched
                self.queue.release([(n.id, 0.0) for email in remaining for n in email.notices],
                                   None, count_attempt=False)
        return sent

    def _mark_sent(self, email: Outgoing, refused: dict[str, str]) -> None:
        note = ("accepted, but refused for " + "; ".join(
            f"{address} ({reply})" for address, reply in refused.items())) if refused else None
        self.queue.mark_sent(email.email_id, self._now(), note)
        metrics.EMAILS.labels(result="sent").inc()
        kinds = ",".join(sorted({n.kind for n in email.notices}))
        logger.info("mailer: sent %s for project %s (%s, %d notifications)", email.email_id,
                    email.project.name, kinds, len(email.notices))
        if note:
            logger.warning("mailer: email %s %s", email.email_id, note)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _retry(self, emails: Sequence[Outgoing], error: str, *, permanent: bool) -> None:
        """Back to pending, due again after base * 2^attempts (capped), with jitter."""
        if not emails:
            return
        now = self.clock()
        retries: list[tuple[int, float]] = []
        longest = 0.0
        for email in emails:
            attempts = max(n.attempts for n in email.notices)
            delay = min(self.retry_max_seconds,
                        self.retry_base_seconds * 2 ** min(attempts, 30)) * \
                self.rng.uniform(0.5, 1.0)
            longest = max(longest, delay)
            retries.extend((n.id, now + delay) for n in email.notices)
        self.queue.release(retries, error)
        metrics.EMAILS.labels(result="permanent_error" if permanent else "transient_error") \
            .inc(len(emails))
        logger.log(logging.ERROR if permanent else logging.WARNING,
                   "mailer: %d emails (%d notifications) not sent, next try within %.0f s: %s%s",
                   len(emails), len(retries), longest, error,
                   " (a setting needs fixing; they stay queued until then)" if permanent else "")
