"""Data kept: message bodies are participant data and are purged after ``keep_bodies_days``.

Only the text goes. The consent history (who opted out or in, when, which records, what
happened) is the proof the bridge exists to keep, and stays. Bodies also sit in the payload of
help and review notifications; those are stripped too.

An ``UPDATE`` alone would leave the old text in free space inside the database file and in the
write-ahead log, readable with ``strings``. The purge therefore runs with
``PRAGMA secure_delete`` (SQLite zeroes the space it frees) and then truncates the WAL, so the
text is gone from the files on disk, not only from query results.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.store import Store, StoreError, iso, utcnow

logger = logging.getLogger(__name__)

PURGE_BATCH = 5000  # rows per transaction


@dataclass(frozen=True)
class PurgeResult:
    cutoff: str
    messages: int
    notifications: int


def purge_bodies(store: Store, keep_days: int, now: datetime | None = None,
                 batch: int = PURGE_BATCH) -> PurgeResult:
    """Blank the bodies of messages received more than ``keep_days`` days before ``now``.

    Works in batches of ``batch`` rows, one transaction each, so the first purge of a large
    store never holds the write lock long enough to keep a webhook from answering Twilio.
    """
    cutoff = iso((now or utcnow()) - timedelta(days=keep_days))
    messages = notifications = 0
    try:
        conn = store.read()
        conn.execute("PRAGMA secure_delete=ON")
        while True:
            with store.transaction() as tx:
                done = tx.execute(
                    "UPDATE messages SET body = NULL WHERE id IN (SELECT id FROM messages"
                    " WHERE received_at < ? AND body IS NOT NULL LIMIT ?)",
                    (cutoff, batch)).rowcount
            messages += done
            if done < batch:
                break
        while True:
            # A notification's body is its message's: judged by when that was received.
            with store.transaction() as tx:
                done = tx.execute(
                    "UPDATE notifications SET payload = json_remove(payload, '$.body')"
                    " WHERE id IN (SELECT id FROM notifications"
                    " WHERE json_extract(payload, '$.body') IS NOT NULL AND (created_at < ? OR"
                    " job_id IN (SELECT jobs.id FROM jobs JOIN messages"
                    " ON messages.id = jobs.message_id WHERE messages.received_at < ?))"
                    " LIMIT ?)", (cutoff, cutoff, batch)).rowcount
            notifications += done
            if done < batch:
                break
        if messages or notifications:
            # Copy the rewritten pages into the database file and empty the log, so the old
            # text no longer sits in the -wal file either.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        raise StoreError(f"purging message bodies: {exc}") from exc
    if messages or notifications:
        logger.info("purged the text of %d messages and %d notifications received before %s",
                    messages, notifications, cutoff)
    return PurgeResult(cutoff=cutoff, messages=messages, notifications=notifications)
