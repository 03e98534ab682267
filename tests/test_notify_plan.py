"""The single-or-digest rule, driven tick by tick over simulated time.

The planner is pure, so these tests play whole arrival patterns (quiet days, text blasts,
trickles) through it every two seconds, as the scheduler does, and check the promises: every
notification goes out exactly once, a lone change within one tick, never more than
``burst_limit`` single emails and one digest in any minute, digests at least a minute apart,
and nothing waits longer than the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import NotifyConfig
from bridge.notify.compose import Notice
from bridge.notify.plan import MAX_DIGEST, plan

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TICK = 2.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def notice(id_: int, created: float) -> Notice:
    return Notice(id=id_, project="p", kind="stop", action="stop", phone="+15558675309",
                  event_at=at(created), created_at=at(created), records=(str(id_),))


@dataclass
class Sent:
    time: float
    ids: list[int]


@dataclass
class Run:
    emails: list[Sent] = field(default_factory=list)

    @property
    def singles(self) -> list[Sent]:
        return [email for email in self.emails if len(email.ids) == 1]

    @property
    def digests(self) -> list[Sent]:
        return [email for email in self.emails if len(email.ids) > 1]

    def sent_at(self) -> dict[int, float]:
        return {i: email.time for email in self.emails for i in email.ids}


def simulate(arrivals: list[float], notify: NotifyConfig, horizon: float) -> Run:
    """Tick every two seconds; a notification is due from the tick after it was made."""
    notices = [notice(i, t) for i, t in enumerate(sorted(arrivals))]
    pending = {n.id: n for n in notices}
    run = Run()
    now = 0.0
    while now <= horizon:
        due = [n for n in pending.values() if n.created_at <= at(now)]
        if due:
            oldest = min(n.created_at for n in due)
            made = [(n.created_at, n.id) for n in notices
                    if oldest - timedelta(minutes=1) <= n.created_at <= at(now)]
            singles = sum(1 for e in run.singles if e.time >= now - 60)
            for group in plan(notify, due, made=made, singles_sent=singles, now=at(now)):
                run.emails.append(Sent(now, [n.id for n in group]))
                for n in group:
                    del pending[n.id]
        now += TICK
    assert not pending, "everything is sent by the horizon"
    return run


def test_a_lone_change_goes_out_at_the_next_tick() -> None:
    run = simulate([10.5], NotifyConfig(emails=("a@b.cd",)), horizon=200)
    assert [(e.time, e.ids) for e in run.emails] == [(12.0, [0])]


def test_a_blast_gives_burst_limit_singles_then_one_digest_a_minute_later() -> None:
    run = simulate([5.0] * 50, NotifyConfig(emails=("a@b.cd",)), horizon=300)
    assert [e.ids for e in run.singles] == [[0], [1], [2], [3], [4]]
    assert all(e.time == 6.0 for e in run.singles)
    [digest] = run.digests
    assert digest.ids == list(range(5, 50)) and digest.time == 66.0


def test_a_sustained_blast_gives_one_digest_a_minute() -> None:
    arrivals = [i * 0.5 for i in range(1200)]  # two STOPs a second for ten minutes
    run = simulate(arrivals, NotifyConfig(emails=("a@b.cd",)), horizon=1000)
    assert len(run.singles) == 5
    assert 10 <= len(run.digests) <= 11


def test_quiet_after_a_blast_means_single_emails_again() -> None:
    run = simulate([0.0] * 20 + [300.0], NotifyConfig(emails=("a@b.cd",)), horizon=600)
    assert run.emails[-1].ids == [20] and run.emails[-1].time == 300.0


def test_after_an_outage_a_large_backlog_is_one_digest() -> None:
    notify = NotifyConfig(emails=("a@b.cd",))
    backlog = [notice(i, i * 600.0) for i in range(12)]  # one every 10 minutes: no burst
    now = at(12 * 600.0)
    emails = plan(notify, backlog, made=[(n.created_at, n.id) for n in backlog],
                  singles_sent=0, now=now)
    assert [len(group) for group in emails] == [12]
    emails = plan(notify, backlog[:5], made=[(n.created_at, n.id) for n in backlog],
                  singles_sent=0, now=now)
    assert [len(group) for group in emails] == [1, 1, 1, 1, 1]  # a small one goes out singly


def test_singles_already_sent_this_minute_count() -> None:
    notify = NotifyConfig(emails=("a@b.cd",), burst_limit=3)
    due = [notice(1, 0.0)]
    assert plan(notify, due, made=[(n.created_at, n.id) for n in due], singles_sent=3,
                now=at(1)) == []
    assert plan(notify, due, made=[(n.created_at, n.id) for n in due], singles_sent=2,
                now=at(1)) == [due]


def test_a_huge_digest_is_split() -> None:
    notify = NotifyConfig(emails=("a@b.cd",))
    due = [notice(i, 0.0) for i in range(MAX_DIGEST * 2 + 1)]
    groups = plan(notify, due, made=[(n.created_at, n.id) for n in due], singles_sent=5,
                  now=at(61))
    assert [len(g) for g in groups] == [MAX_DIGEST, MAX_DIGEST, 1]


def test_digest_minutes_waits_for_the_oldest_to_reach_the_period() -> None:
    run = simulate([10.0, 20.0, 500.0, 2000.0], NotifyConfig(emails=("a@b.cd",),
                                                           digest_minutes=15), horizon=4000)
    assert [(e.time, e.ids) for e in run.emails] == [(910.0, [0, 1, 2]), (2900.0, [3])]


@settings(max_examples=40, deadline=None)
@given(arrivals=st.lists(st.floats(min_value=0, max_value=900, allow_nan=False), max_size=150),
       limit=st.integers(min_value=1, max_value=8))  # config: at least 1
def test_promises_hold_for_any_arrival_pattern(arrivals: list[float], limit: int) -> None:
    run = simulate(arrivals, NotifyConfig(emails=("a@b.cd",), burst_limit=limit), horizon=1100)
    sent = run.sent_at()
    ordered = sorted(arrivals)
    assert sorted(sent) == list(range(len(ordered)))  # each exactly once
    for i, made in enumerate(ordered):
        assert sent[i] - made <= 60 + TICK  # nothing waits longer than the window
    for email in run.emails:  # at most burst_limit single emails and one digest a minute
        # (a digest may carry a single notification, so count all emails together)
        assert sum(1 for e in run.emails if email.time - 60 < e.time <= email.time) <= limit + 1
    times = [e.time for e in run.digests]
    assert all(b - a >= 60 for a, b in pairwise(times))
    for i, made in enumerate(ordered):  # alone in a quiet minute: alone, at the next tick
        quiet = not any(made - 60 < other <= made for j, other in enumerate(ordered) if j != i)
        if quiet and not any(made - 60 <= e.time <= made + TICK
                                           for e in run.emails):
            assert sent[i] - made <= TICK
            assert [i] in [e.ids for e in run.singles]


@settings(max_examples=30, deadline=None)
@given(arrivals=st.lists(st.floats(min_value=0, max_value=3000, allow_nan=False), max_size=80),
       minutes=st.integers(min_value=1, max_value=20))
def test_digest_minutes_promises(arrivals: list[float], minutes: int) -> None:
    period = minutes * 60
    run = simulate(arrivals, NotifyConfig(emails=("a@b.cd",), digest_minutes=minutes),
                   horizon=3000 + period + 10)
    sent = run.sent_at()
    for i, made in enumerate(sorted(arrivals)):
        assert sent[i] - made <= period + TICK
    times = [e.time for e in run.emails]
    assert all(b - a >= period - TICK for a, b in pairwise(times))
