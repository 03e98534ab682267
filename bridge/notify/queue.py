"""The notification queue in the store: what is due, claiming rows for an email, outcomes.

Rows are written by intake and the worker, in the same transaction as the event or outcome
they report (``bridge.store``). Here they move ``pending`` -> ``sending`` (claimed for one
email, identified by its Message-ID in ``email_id``) -> ``sent``, or back to ``pending`` with
a later ``next_attempt_at`` when the mail server did not take them. A row is never given up.

Only one mailer works on a store (``serve`` holds a lock on it), so rows found ``sending``
when a tick starts were left by a process that died mid-send.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime

from bridge.notify.compose import Notice
from bridge.store import Store, iso

PENDING, SENDING, SENT = "pending", "sending", "sent"

_COLUMNS = "id, project, kind, payload, attempts, created_at, email_id"


class NotificationQueue:
    def __init__(self, store: Store) -> None:
        self.store = store

    def due(self, now: float) -> list[Notice]:
        """Pending notifications whose next attempt is due, per project in the order made."""
        rows = self.store.read().execute(
            f"SELECT {_COLUMNS} FROM notifications"  # noqa: S608 - constant column list
            " WHERE status=? AND next_attempt_at<=? ORDER BY project, created_at, id",
            (PENDING, now),
        ).fetchall()
        return [_notice(row) for row in rows]

    def in_flight(self) -> list[Notice]:
        """Notifications claimed for an email that was never confirmed sent (a crash)."""
        rows = self.store.read().execute(
            f"SELECT {_COLUMNS} FROM notifications"  # noqa: S608 - constant column list
            " WHERE status=? ORDER BY email_id, created_at, id", (SENDING,),
        ).fetchall()
        return [_notice(row) for row in rows]

    def made_since(self, project: str, since: datetime) -> list[tuple[datetime, int]]:
        """(created_at, id) of every notification of a project made since ``since``, any status.

        The burst rule counts how many fell due within a minute of each other.
        """
        rows = self.store.read().execute(
            "SELECT created_at, id FROM notifications WHERE project=? AND created_at>=?"
            " ORDER BY created_at, id", (project, iso(since)),
        ).fetchall()
        return [(datetime.fromisoformat(row["created_at"]), row["id"]) for row in rows]

    def single_emails_since(self, project: str, since: datetime) -> int:
        """How many one-notification emails the project was sent since ``since``."""
        row = self.store.read().execute(
            "SELECT COUNT(*) FROM (SELECT email_id FROM notifications"
            " WHERE project=? AND status=? AND sent_at>=? GROUP BY email_id HAVING COUNT(*)=1)",
            (project, SENT, iso(since)),
        ).fetchone()
        return int(row[0])

    def claim(self, email_id: str, ids: Sequence[int]) -> bool:
        """Mark pending rows as carried by one email (a conditional update, all or nothing).

        False, and nothing changed, when any of them is not pending any more.
        """
        try:
            with self.store.transaction() as conn:
                changed = sum(conn.execute(
                    "UPDATE notifications SET status=?, email_id=? WHERE id=? AND status=?",
                    (SENDING, email_id, row_id, PENDING)).rowcount for row_id in ids)
                if changed != len(ids):
                    raise _Conflict
        except _Conflict:
            return False
        return True

    def mark_sent(self, email_id: str, at: datetime, note: str | None = None) -> None:
        """The mail server accepted the email: its rows are done (``note``: refused copies)."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE notifications SET status=?, sent_at=?, attempts=attempts+1, last_error=?"
                " WHERE email_id=? AND status=?", (SENT, iso(at), note, email_id, SENDING))

    def release(self, retries: Iterable[tuple[int, float]], error: str | None,
                count_attempt: bool = True) -> None:
        """Put claimed rows back to pending, each due again at its own time."""
        with self.store.transaction() as conn:
            conn.executemany(
                "UPDATE notifications SET status=?, email_id=NULL, next_attempt_at=?,"
                " attempts=attempts+?, last_error=COALESCE(?, last_error)"
                " WHERE id=? AND status=?",
                [(PENDING, due, int(count_attempt), error, row_id, SENDING)
                 for row_id, due in retries])


class _Conflict(Exception):
    """A row to claim was not pending: roll the claim back."""


def _notice(row: sqlite3.Row) -> Notice:
    payload = json.loads(row["payload"])
    return Notice(
        id=row["id"],
        project=row["project"],
        kind=row["kind"],
        action=payload.get("action") or row["kind"],
        phone=payload.get("phone") or "",
        event_at=datetime.fromisoformat(payload["event_at"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        records=tuple(payload.get("records") or ()),
        value=payload.get("value"),
        error=payload.get("error"),
        body=payload.get("body"),
        attempts=row["attempts"],
        email_id=row["email_id"],
    )
