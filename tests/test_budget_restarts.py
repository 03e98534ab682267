"""The request budget holds across restarts: a crash loop must not get REDCap to ban the bridge.

A bridge that crashes and is restarted (systemd ``Restart=``, Docker ``restart: always``) with a
backlog to drain makes its start-up calls and then drains as fast as its budget lets it. If each
new process started with a fresh budget, every restart would add a burst on top of what the
last one spent, and a few restarts a minute would pass REDCap's 600 requests a minute, which
bans the server's IP for good. The budget is kept in the store, so every process serving it
(and ``backfill`` beside it) draws from one bucket, however often it is killed.
"""

from __future__ import annotations

import time
from pathlib import Path

from bridge.budget import RequestBudget
from bridge.sim import RedcapSimulator
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, BRIDGE_NUMBER, classic_project
from tests.faults import Event, StoreReader, TwilioSender
from tests.process import BridgeProcess, free_port, heart_study_config

REQUESTS_PER_MINUTE = 60  # a burst of 6, then 0.9 requests a second
RESTARTS = 5


def most_in_any_interval(times: list[float], budget: RequestBudget) -> float:
    """How far the calls exceed the bucket's envelope: burst + rate * (b - a) for any [a, b].

    The envelope is what one budget that never restarted could have allowed; a positive
    answer is requests that only a fresh burst could have paid for.
    """
    times = sorted(times)
    worst = float("-inf")
    for first, start in enumerate(times):
        for last in range(first, len(times)):
            count = last - first + 1
            worst = max(worst, count - (budget.burst + budget.rate * (times[last] - start)))
    return worst


def test_a_crash_loop_spends_one_budget_not_a_burst_per_restart(tmp_path: Path) -> None:
    phones = [f"+1555{3000000 + index * 7919:07d}" for index in range(40)]
    project = classic_project()
    for index, phone in enumerate(phones):
        project.add_record(str(index + 1), {"mobile": phone})
    sim = RedcapSimulator(port=free_port())
    sim.start()
    token = sim.add_project(project)
    port = free_port()
    config = heart_study_config(
        tmp_path, sim.api_url, port, account_sid=ACCOUNT_SID, number=BRIDGE_NUMBER,
        # One job per import: the backlog takes 80 calls, far more than the budget allows
        # in the few seconds of the loop, so every process is limited by its budget.
        sync={"poll_seconds": 0.05, "batch_size": 1, "requests_per_minute": REQUESTS_PER_MINUTE})
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
    store = StoreReader(tmp_path / "bridge.db")
    try:
        bridge = BridgeProcess(config, port, env=env).start()
        sender = TwilioSender(bridge.url + "/twilio/sms")
        for phone in phones:
            assert sender.deliver(Event.make(phone, "stop", "STOP", "STOP"))
        for _ in range(RESTARTS):
            time.sleep(1.5)
            bridge.kill()
            bridge = BridgeProcess(config, port, env=env).start()
        time.sleep(1.5)
        bridge.kill()
        calls = sim.calls
    finally:
        sim.stop()

    assert store.open_jobs() > 0, "the backlog was drained: the budget was never the limit"
    budget = RequestBudget(REQUESTS_PER_MINUTE)
    assert len(calls) > budget.burst
    excess = most_in_any_interval([call.time for call in calls], budget)
    # Tokens are taken in the bridge and counted on arrival in the simulator: allow a request
    # or two of jitter between the two (a fresh burst per restart gave 24 here).
    assert excess <= 2.0, f"{excess:.1f} requests beyond one budget's envelope"
