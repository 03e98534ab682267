"""Clean shutdown: SIGTERM while the worker is in the middle of a batch.

Guarantee: a SIGTERM lets the batch in flight finish or hands it back (its jobs return to
``pending``); the process exits 0 with no job left ``running``, and after a restart every
event is applied exactly once. Webhooks acknowledged up to the last moment are kept.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bridge.sim import RedcapSimulator
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, BRIDGE_NUMBER, classic_project
from tests.faults import Event, StoreReader, TwilioSender, wait_for
from tests.process import BridgeProcess, free_port, heart_study_config

PHONES = 18


def shutdown_config(tmp_path: Path, sim: RedcapSimulator, port: int) -> Path:
    # Imports of 3 records: a backlog of 18 phones takes 6 imports, about 0.4 s each.
    return heart_study_config(tmp_path, sim.api_url, port, account_sid=ACCOUNT_SID,
                              number=BRIDGE_NUMBER,
                              sync={"poll_seconds": 0.1, "batch_size": 3})


def test_sigterm_mid_batch_leaves_no_job_running_and_applies_everything_once(
        tmp_path: Path) -> None:
    project = classic_project()
    phones = [f"+1555{2000000 + index * 7919:07d}" for index in range(PHONES)]
    for index, phone in enumerate(phones):
        project.add_record(str(index + 1), {"mobile": phone})
    with RedcapSimulator(latency_seconds=0.2) as sim:
        token = sim.add_project(project)
        port = free_port()
        config = shutdown_config(tmp_path, sim, port)
        env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
        store = StoreReader(tmp_path / "bridge.db")
        bridge = BridgeProcess(config, port, env=env).start()
        sender = TwilioSender(bridge.url + "/twilio/sms")
        events = [Event.make(phone, "stop", "STOP", None) for phone in phones]
        for event in events[:PHONES // 2]:
            assert sender.deliver(event)

        # The worker has written some records and is waiting on REDCap for the next import.
        assert wait_for(lambda: 0 < sum(project.imports_per_record.values()) < PHONES // 2,
                        step=0.01)
        assert store.status_counts().get("running", 0) > 0

        # Webhooks keep arriving while the signal lands: each either gets a 200 and is kept,
        # or is refused/unanswered and Twilio knows it was not taken.
        late = threading.Thread(target=lambda: [sender.deliver(e) for e in events[PHONES // 2:]])
        late.start()
        time.sleep(0.05)
        began = time.monotonic()
        assert bridge.stop(timeout=20) == 0
        took = time.monotonic() - began
        late.join()

        # Nothing is left in progress: the batch finished or was handed back.
        assert "running" not in store.status_counts()
        assert took < 5, f"shutdown took {took:.1f} s"
        logs = bridge.logs()
        assert "received SIGTERM: shutting down" in logs and "stopped" in logs
        assert "jobs left in progress" not in logs

        stored = store.stored_sids()
        acknowledged = [event for event in events if event.acknowledged]
        assert {event.sid for event in acknowledged} <= stored
        assert store.status_counts().get("pending", 0) > 0  # handed back, to be done later

        bridge = BridgeProcess(config, port, env=env).start()
        assert wait_for(lambda: store.open_jobs() == 0, timeout=40), store.status_counts()
        assert bridge.stop() == 0
        assert "jobs left in progress" not in bridge.logs()

    applied = [event for event in events if event.sid in stored]
    for event in applied:
        record = str(phones.index(event.phone) + 1)
        assert project.value(record, "sms_opted_out___1") == "1"
        assert project.imports_per_record[record] == 1, record
    assert sum(project.imports_per_record.values()) == len(applied)
    assert store.status_counts() == {"applied": len(applied)}
