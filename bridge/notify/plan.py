"""Which due notifications go out now, one email each or combined into a digest.

The rule, per project:

- ``digest_minutes: N``: everything waits until the oldest waiting notification is N minutes
  old, then all of it goes in one digest. At most one email per N minutes.
- otherwise a notification goes out alone, within seconds, unless it is part of a burst: more
  than ``burst_limit`` of the project's notifications fell due within one minute up to and
  including it, or ``burst_limit`` single emails already went out in the last minute. It then
  waits, with every later one (so order is kept), until the oldest waiting one has waited a
  minute; then all that is due goes out as one digest. During a sustained text blast the
  team gets ``burst_limit`` single emails and then one digest a minute.
- notifications held up by a mail-server outage are due together once it is back: they go
  out singly if they fit in the budget above, otherwise as one digest.

Everything is decided from what the store says (times notifications were made and sent), so a
restart does not reset the count. Pure: no clock, no I/O.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import datetime, timedelta

from bridge.config import NotifyConfig
from bridge.notify.compose import Notice

BURST_WINDOW = timedelta(minutes=1)
# A digest lists at most this many notifications (about 250 KB of email); more make several.
MAX_DIGEST = 1000


def plan(notify: NotifyConfig, due: Sequence[Notice], *, made: Sequence[tuple[datetime, int]],
         singles_sent: int, now: datetime) -> list[list[Notice]]:
    """The emails to send now, as groups of notifications; what is left out waits.

    ``made``: (created_at, id) of the project's notifications made since a minute before the
    oldest due one, whatever their status. ``singles_sent``: single emails sent in the last
    minute.
    """
    ordered = sorted(due, key=_key)
    if not ordered:
        return []
    if notify.digest_minutes > 0:
        if ordered[0].created_at <= now - timedelta(minutes=notify.digest_minutes):
            return _chunks(ordered)
        return []
    made_keys = sorted(made)
    budget = notify.burst_limit - singles_sent
    if ordered[0].created_at <= now - BURST_WINDOW:
        # The oldest has waited a whole window: it was held for a digest, or the mail server
        # was out. Singles only if every one of them still fits the budget.
        if len(ordered) <= budget and all(
                _made_within_window(made_keys, n) <= notify.burst_limit for n in ordered):
            return [[notice] for notice in ordered]
        return _chunks(ordered)
    emails: list[list[Notice]] = []
    for notice in ordered:
        if budget <= 0 or _made_within_window(made_keys, notice) > notify.burst_limit:
            break  # this one and every later one wait for the digest
        emails.append([notice])
        budget -= 1
    return emails


def _key(notice: Notice) -> tuple[datetime, int]:
    return notice.created_at, notice.id


def _made_within_window(made_keys: Sequence[tuple[datetime, int]], notice: Notice) -> int:
    """How many notifications were made in the minute up to this one, itself included.

    Ties in time (a whole batch of outcomes is committed at once) are broken by id, so the
    first ``burst_limit`` of a batch still go out alone.
    """
    end = bisect_right(made_keys, _key(notice))
    start = bisect_right(made_keys, (notice.created_at - BURST_WINDOW, 2**63))
    return max(end - start, 1)


def _chunks(notices: Sequence[Notice]) -> list[list[Notice]]:
    return [list(notices[i:i + MAX_DIGEST]) for i in range(0, len(notices), MAX_DIGEST)]
