"""Duplicates and reordering: the same webhook many times, replays, interleaved STOP/START.

Guarantee: each MessageSid is applied at most once however often and however concurrently it
is delivered, and the state REDCap ends in is the newest event per phone and project (with the
opt-out time of the STOP that began the current opt-out).

Longer runs: ``BRIDGE_ORDERING_SEEDS=200 pytest tests/test_ordering.py``.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from bridge.inbound import sign
from bridge.sim import Fault, RedcapSimulator
from tests.conftest import (
    AUTH_TOKEN,
    BRIDGE_NUMBER,
    PARTICIPANT,
    SERVICE_SID,
    Bridge,
    classic_project,
    project_config,
    twilio_params,
)
from tests.faults import MESSAGES, ConsentFold, StoreReader, fold, wait_for
from tests.process import BridgeProcess, free_port
from tests.test_serve import serve_config

SEEDS = int(os.environ.get("BRIDGE_ORDERING_SEEDS", "4"))
TIMEZONE = "America/New_York"
SECOND_NUMBER = "+18057160000"


class Clock:
    """The intake's clock, moved on by whole minutes so opt-out times (to the second) differ."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def ticking(bridge: Bridge) -> Bridge:
    bridge.intake.clock = Clock()
    return bridge


def received_at(bridge: Bridge, sid: str) -> str:
    row = bridge.store.read().execute(
        "SELECT received_at FROM messages WHERE message_sid=?", (sid,)).fetchone()
    return row[0]


def stamp(bridge: Bridge, sid: str) -> str:
    return fold([("stop", received_at(bridge, sid))]).field_value(TIMEZONE)


def text(bridge: Bridge, body: str, sender: str = PARTICIPANT, **kwargs: object) -> str:
    params = twilio_params(body, sender, **kwargs)  # type: ignore[arg-type]
    assert bridge.post(params).status_code == 200
    return params["MessageSid"]


def imports(sim: RedcapSimulator) -> int:
    return sum(1 for call in sim.calls if call.content == "record" and call.action == "import")


# --- the same webhook, many times -------------------------------------------------------------


@pytest.mark.parametrize("deliveries", [2, 10])
def test_the_same_webhook_delivered_concurrently_is_stored_and_applied_once(
        tmp_path: Path, sim: RedcapSimulator, deliveries: int) -> None:
    """N identical signed requests at the same instant against the real server (8 threads):
    every one is answered 200, one message and one job are stored, REDCap is written once."""
    project = classic_project({"1": "555-867-5309", "2": "(555) 867-5309"})
    token = sim.add_project(project)
    port = free_port()
    config = serve_config(tmp_path, sim, token, port)
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
    with BridgeProcess(config, port, env=env) as bridge:
        url = bridge.url + "/twilio/sms"
        params = twilio_params("STOP")
        headers = {"X-Twilio-Signature": sign(url, params, AUTH_TOKEN)}
        barrier = threading.Barrier(deliveries)
        statuses: list[int] = []

        def deliver() -> None:
            barrier.wait()
            statuses.append(requests.post(url, data=params, headers=headers, timeout=10)
                            .status_code)

        threads = [threading.Thread(target=deliver) for _ in range(deliveries)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * deliveries
        assert wait_for(lambda: project.value("2", "sms_opt_out") != "")
        # and once more, long after: still nothing new
        assert requests.post(url, data=params, headers=headers, timeout=10).status_code == 200
        assert bridge.stop() == 0
    store = StoreReader(tmp_path / "bridge.db")
    assert store.stored_sids() == {params["MessageSid"]}
    assert store.status_counts() == {"applied": 1}
    assert project.imports_per_record == {"1": 1, "2": 1}
    assert bridge.logs().count("duplicate, ignored") == deliveries


def test_a_replayed_request_changes_nothing_even_after_newer_events(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    """A late redelivery (or an attacker's replay) of an old, validly signed STOP after the
    participant opted back in: answered 200, nothing stored, REDCap untouched."""
    project = classic_project({"1": PARTICIPANT})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    stop = twilio_params("STOP")
    assert bridge.post(stop).status_code == 200
    bridge.drain()
    text(bridge, "START")
    bridge.drain()
    before = imports(sim)
    for _ in range(3):
        assert bridge.post(stop).status_code == 200
    bridge.drain()
    assert project.value("1", "sms_opt_out") == ""
    assert project.value("1", "sms_opted_out___1") == "0"
    assert imports(sim) == before
    assert bridge.job_statuses() == ["applied", "applied"]


# --- coalesced events keep the right opt-out time ---------------------------------------------


def test_stop_start_stop_in_one_batch_records_the_new_opt_out_time(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    """The START between two opt-outs is coalesced away, but it ended the first opt-out: the
    record must show the second STOP's time, not the first's."""
    project = classic_project({"1": PARTICIPANT})
    bridge = ticking(make_bridge([project_config(sim, sim.add_project(project))]))
    text(bridge, "STOP")
    bridge.drain()
    text(bridge, "START")
    second = text(bridge, "STOP")
    bridge.drain()
    assert project.value("1", "sms_opt_out") == stamp(bridge, second)
    assert bridge.job_statuses() == ["applied", "superseded", "applied"]


def test_repeated_stops_in_one_batch_record_the_first_time(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = ticking(make_bridge([project_config(sim, sim.add_project(project))]))
    first = text(bridge, "STOP")
    text(bridge, "stop")
    text(bridge, "UNSUBSCRIBE")
    bridge.drain()
    assert project.value("1", "sms_opt_out") == stamp(bridge, first)
    assert imports(sim) == 1


def test_a_start_coalesced_before_a_failed_write_still_ends_the_old_opt_out(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    """START is marked superseded before REDCap is asked anything; when that batch then fails
    and the STOP is retried on its own, the START must still count."""
    project = classic_project({"1": PARTICIPANT})
    bridge = ticking(make_bridge([project_config(sim, sim.add_project(project))]))
    text(bridge, "STOP")
    bridge.drain()
    text(bridge, "START")
    second = text(bridge, "STOP")
    sim.inject(Fault.status(503))
    bridge.worker.tick()
    assert bridge.job_statuses() == ["applied", "superseded", "pending"]
    bridge.drain()
    assert project.value("1", "sms_opt_out") == stamp(bridge, second)


def test_stop_after_an_applied_start_is_a_new_opt_out(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": PARTICIPANT})
    bridge = ticking(make_bridge([project_config(sim, sim.add_project(project))]))
    text(bridge, "STOP")
    bridge.drain()
    text(bridge, "START")
    bridge.drain()
    second = text(bridge, "STOP")
    bridge.drain()
    assert project.value("1", "sms_opt_out") == stamp(bridge, second)


# --- interleaved STOP/START across phones and projects ----------------------------------------


@pytest.mark.parametrize("seed", range(SEEDS))
def test_interleaved_stop_start_across_phones_and_projects_ends_in_the_newest_state(
        make_bridge: Callable[..., Bridge], seed: int) -> None:
    """A seeded random interleaving of opt-outs and opt-ins from several phones to three
    projects (two share a number, one listens on a Messaging Service), with the worker run at
    random moments, REDCap failing now and then (so older jobs wait for a retry while newer
    ones arrive), and old messages redelivered. Every (project, phone) must end in the state
    the fold of its own events gives, with each record imported at most once per change.

    (The request budget is not what this test is about: it is set out of the way.)"""
    with RedcapSimulator(rate_limit_per_minute=None) as sim:
        interleave(sim, make_bridge, random.Random(seed))


def interleave(sim: RedcapSimulator, make_bridge: Callable[..., Bridge],
               rng: random.Random) -> None:
    phones = [f"+1555{number:07d}" for number in rng.sample(range(2_000_000, 9_999_999), 5)]
    sims, configs, records = {}, [], {}
    for name, numbers, services in (("alpha", (BRIDGE_NUMBER,), ()),
                                    ("beta", (BRIDGE_NUMBER,), ()),
                                    ("gamma", (SECOND_NUMBER,), (SERVICE_SID,))):
        project = classic_project()
        for index, phone in enumerate(phones):
            if (index + len(name)) % 4 == 0:
                continue  # not every phone is in every project
            digits = phone[2:]
            stored = [phone, f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"][index % 2]
            project.add_record(str(index + 1), {"mobile": stored})
            records[(name, phone)] = str(index + 1)
        sims[name] = project
        configs.append(project_config(sim, sim.add_project(project), name=name,
                                      numbers=numbers, messaging_service_sids=services))
    bridge = ticking(make_bridge(configs, requests_per_minute=100_000))
    events: list[tuple[str, dict[str, str], str | None]] = []  # (phone, params, action)
    for _ in range(60):
        phone = rng.choice(phones)
        action = rng.choice(["stop", "start", "stop", "start", None])
        body, opt_out_type = rng.choice(MESSAGES[action])
        target = rng.choice([{"to": BRIDGE_NUMBER, "service": None},
                             {"to": SECOND_NUMBER, "service": None},
                             {"to": "+18057169999", "service": SERVICE_SID}])
        params = twilio_params(body, phone, opt_out_type=opt_out_type, **target)
        assert bridge.post(params).status_code == 200
        events.append((phone, params, action))
        roll = rng.random()
        if roll < 0.15:
            sim.inject(Fault.status(rng.choice([500, 503, 429])), times=rng.randint(1, 3))
            bridge.worker.tick()
        elif roll < 0.35:
            bridge.worker.tick()
        elif roll < 0.45:
            _, old, _ = rng.choice(events)  # a late redelivery of an earlier message
            assert bridge.post(old).status_code == 200
    sim.clear_faults()
    bridge.drain()

    routes = {BRIDGE_NUMBER: ("alpha", "beta"), SECOND_NUMBER: ("gamma",)}
    expected: dict[tuple[str, str], ConsentFold] = {}
    for phone, params, action in events:
        projects = routes.get(params["To"], ()) or ("gamma",)
        for name in projects:
            state = expected.setdefault((name, phone), ConsentFold())
            if action in ("stop", "start"):
                state.apply(action, received_at(bridge, params["MessageSid"]))
    for (name, phone), state in expected.items():
        record = records.get((name, phone))
        if record is None:
            continue
        project = sims[name]
        assert (project.value(record, "sms_opt_out"), project.value(record, "sms_opted_out___1")) \
            == (state.field_value(TIMEZONE), state.checkbox()), (name, state.history)
        assert project.imports_per_record[record] <= state.changes
    assert set(bridge.job_statuses()) <= {"applied", "superseded", "help", "unmatched"}
    assert bridge.store.read().execute("SELECT COUNT(*) FROM messages").fetchone()[0] == \
        len(events)
