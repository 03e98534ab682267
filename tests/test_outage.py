"""REDCap outage: refused connections, timeouts, 500/503 and 429, one after another.

Guarantee: while REDCap is unavailable the webhook keeps answering 200 and keeps every event;
when REDCap is back every event is applied, newest state per phone, each change written at
most once, and the bridge never sends more requests than its budget allows in any minute —
not while retrying during the outage, nor while draining the backlog after it.

The default run compresses the outage into a few seconds. For one that lasts minutes (the
budget's one-minute windows then really slide):

    BRIDGE_OUTAGE_SECONDS=300 pytest tests/test_outage.py
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from bridge.budget import RequestBudget
from bridge.sim import Fault, RedcapSimulator, most_in_window
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, BRIDGE_NUMBER, classic_project
from tests.faults import MESSAGES, Event, StoreReader, TwilioSender, expected_states, wait_for
from tests.process import BridgeProcess, free_port, heart_study_config

OUTAGE_SECONDS = float(os.environ.get("BRIDGE_OUTAGE_SECONDS", "8"))
REQUESTS_PER_MINUTE = 60
TIMEZONE = "America/New_York"


def outage_config(tmp_path: Path, api_url: str, port: int) -> Path:
    # Eager retries and small imports: left to itself the worker would send far more
    # requests than the budget allows, both during the outage and while draining.
    return heart_study_config(tmp_path, api_url, port, account_sid=ACCOUNT_SID,
                              number=BRIDGE_NUMBER, timezone=TIMEZONE,
                              sync={"poll_seconds": 0.05, "batch_size": 4,
                                    "retry_base_seconds": 0.02, "retry_max_seconds": 0.1,
                                    "request_timeout_seconds": 0.5,
                                    "requests_per_minute": REQUESTS_PER_MINUTE})


@pytest.mark.slow
def test_every_event_survives_a_redcap_outage_and_the_drain_stays_within_budget(
        tmp_path: Path) -> None:
    rng = random.Random(8)
    phones = [f"+1555{2000000 + index * 104729:07d}" for index in range(10)]
    project = classic_project()
    for index, phone in enumerate(phones):
        project.add_record(str(index + 1), {"mobile": phone})
    sim_port = free_port()
    sims = [RedcapSimulator(port=sim_port, rate_limit_per_minute=REQUESTS_PER_MINUTE)]
    sims[0].start()
    token = sims[0].add_project(project)
    port = free_port()
    config = outage_config(tmp_path, sims[0].api_url, port)
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
    store = StoreReader(tmp_path / "bridge.db")
    events: list[Event] = []
    try:
        with BridgeProcess(config, port, env=env) as bridge:
            sender = TwilioSender(bridge.url + "/twilio/sms")

            def text(count: int, seconds: float) -> None:
                """Participants keep texting: every message must be answered 200 at once."""
                for _ in range(count):
                    action = rng.choice(["stop", "start", "stop", None])
                    event = Event.make(rng.choice(phones), action,
                                       *rng.choice(MESSAGES[action]))
                    began = time.monotonic()
                    assert sender.deliver(event)
                    assert time.monotonic() - began < 1.0
                    events.append(event)
                    time.sleep(seconds / count)

            # REDCap up: the worker learns the project and builds its phone index.
            text(2, 0.2)
            assert wait_for(lambda: store.open_jobs() == 0)
            phase = OUTAGE_SECONDS / 4

            sims[0].stop()  # connection refused
            text(5, phase)

            sims.append(RedcapSimulator(port=sim_port,
                                        rate_limit_per_minute=REQUESTS_PER_MINUTE))
            sims[1].start()
            sims[1].add_project(project, token)
            sims[1].inject(Fault.status(500), times=100_000)
            text(3, phase / 2)
            sims[1].clear_faults()
            sims[1].inject(Fault.status(503), times=100_000)
            text(3, phase / 2)

            sims[1].clear_faults()  # REDCap carries requests out but answers too late
            sims[1].inject(Fault.slow(1.0), times=100_000)
            text(5, phase)

            sims[1].clear_faults()
            sims[1].inject(Fault.status(429), times=100_000)
            text(5, phase)

            during = [call for sim in sims for call in sim.calls]
            assert store.open_jobs() > 0
            sims[1].clear_faults()  # REDCap is back
            recovered = time.monotonic()
            assert wait_for(lambda: store.open_jobs() == 0 or sims[1].banned,
                            timeout=60 + OUTAGE_SECONDS), store.status_counts()
            assert not sims[1].banned, "the bridge exceeded REDCap's rate limit"
            drained = time.monotonic() - recovered
            assert bridge.stop() == 0
    finally:
        for sim in sims:
            sim.stop()

    stored = store.received_at()
    assert {event.sid for event in events} <= set(stored)
    expected = expected_states(events, stored)
    for phone, state in expected.items():
        record = str(phones.index(phone) + 1)
        assert (project.value(record, "sms_opt_out"),
                project.value(record, "sms_opted_out___1")) == \
            (state.field_value(TIMEZONE), state.checkbox()), state.history
        assert project.imports_per_record[record] <= state.changes, state.history
    assert set(store.status_counts()) <= {"applied", "superseded", "help"}

    calls = [call for sim in sims for call in sim.calls]
    assert not any(sim.banned for sim in sims)
    assert most_in_window(call.time for call in calls) <= REQUESTS_PER_MINUTE
    # The budget, not the worker's own pace, set the rate: it was used up during the outage,
    # and the drain after it waited for tokens.
    burst = RequestBudget(REQUESTS_PER_MINUTE).burst
    assert len(during) > burst
    drain_calls = len(calls) - len(during)
    assert drain_calls > burst or drained > 1.0
    assert bridge.logs().count("REDCap unavailable") >= 4
