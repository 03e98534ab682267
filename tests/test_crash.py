"""Crash: SIGKILL the real ``serve`` process again and again during a burst of signed webhooks.

Guarantee: every event Twilio got a 200 for is applied to REDCap, at most once per change, and
the final REDCap state is the one the event sequence asks for.

Seeded and reproducible in what it does (each phone's messages, the kill schedule); thread
timing varies from run to run, which is the point. Longer runs:

    BRIDGE_CRASH_KILLS=50 BRIDGE_CRASH_SEED=123 pytest tests/test_crash.py
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from bridge.sim import RedcapSimulator
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, BRIDGE_NUMBER, classic_project
from tests.faults import MESSAGES, Event, StoreReader, TwilioSender, expected_states, wait_for
from tests.process import BridgeProcess, free_port, heart_study_config

SEED = int(os.environ.get("BRIDGE_CRASH_SEED", "20250611"))
KILLS = int(os.environ.get("BRIDGE_CRASH_KILLS", "6"))
PHONES = int(os.environ.get("BRIDGE_CRASH_PHONES", "8"))
ONE_SHOTS = 40
TIMEZONE = "America/New_York"


def crash_config(tmp_path: Path, sim: RedcapSimulator, port: int) -> Path:
    # Small imports and a fast poll, so a kill often lands inside a batch of several.
    return heart_study_config(tmp_path, sim.api_url, port, account_sid=ACCOUNT_SID,
                              number=BRIDGE_NUMBER, timezone=TIMEZONE,
                              sync={"poll_seconds": 0.1, "batch_size": 3,
                                    "retry_base_seconds": 0.1, "retry_max_seconds": 0.5})


def next_event(phone: str, role: str, seed: str) -> Event:
    """A chatty phone says anything; a steady one only repeats STOP (or chats)."""
    rng = random.Random(seed)
    weights = [45, 40, 15] if role == "chatty" else [80, 0, 20]
    action = rng.choices(["stop", "start", None], weights=weights)[0]
    body, opt_out_type = rng.choice(MESSAGES[action])
    return Event.make(phone, action, body, opt_out_type)


def formats(phone: str) -> list[str]:
    digits = phone[2:]
    return [f"({digits[:3]}) {digits[3:6]}-{digits[6:]}", phone,
            f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"]


@pytest.mark.slow
def test_sigkill_during_a_burst_loses_no_acknowledged_event_and_applies_each_once(
        tmp_path: Path) -> None:
    """Kill -9 the bridge at seeded random moments while phones text it, restart it each time
    on the same store, and compare REDCap with the expected state.

    Half the kills are aimed at the most dangerous moment: just after REDCap applied an import
    and before the bridge heard back and committed (the simulator holds its answer back).

    Who texts: "chatty" phones send any mix of STOP, START, HELP and chit-chat; "steady"
    phones only ever repeat STOP; and a stream of one-shot phones send a single STOP each.
    Each phone sends one message after another from one thread, so the order of a phone's
    events is the order they were sent. Most deliveries retry until they get a 200 (Twilio
    with ``#rc=…&rp=all``); some give up after one failure (Twilio's default).

    What is asserted:

    - every event Twilio got a 200 for is in the store (durable once acknowledged);
    - the expected state per phone is the fold of the *stored* events in arrival order (an
      unacknowledged event counts if, and only if, it was committed before the kill);
    - every record's opt-out time and checkbox equal that expected state;
    - exactly once: a record is imported at most as many times as the expected sequence
      changed its state (``imports_per_record[r] <= changes``). The bridge coalesces a phone's
      pending events and skips writes REDCap already has, so fewer imports are fine; an import
      repeated after a crash shows as one too many, most plainly on steady and one-shot
      phones, whose state changes exactly once;
    - no job is left pending, running or failed; no record was created; REDCap never banned.
    """
    rng = random.Random(SEED)
    project = classic_project()
    numbers = rng.sample(range(2_000_000, 9_999_999), PHONES + ONE_SHOTS)
    phones = [f"+1555{number:07d}" for number in numbers]
    roles = {phone: "steady" if index % 4 == 3 else "chatty"
             for index, phone in enumerate(phones[:PHONES])}
    one_shots = phones[PHONES:]
    records: dict[str, list[str]] = {}
    for index, phone in enumerate(phones):
        records[phone] = [f"{index + 1}"] + ([f"{index + 1001}"] if index % 3 == 0 else [])
        for number, record in enumerate(records[phone]):
            project.add_record(record, {"mobile": formats(phone)[(index + number) % 3]})
    project.add_record("999", {"mobile": "(555) 000-0000"})  # nobody texts from this one
    all_records = set(project.record_ids())

    with RedcapSimulator(latency_seconds=0.05) as sim:
        token = sim.add_project(project)
        port = free_port()
        config = crash_config(tmp_path, sim, port)
        env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
        bridge = BridgeProcess(config, port, env=env).start()
        sender = TwilioSender(f"{bridge.url}/twilio/sms")
        store = StoreReader(tmp_path / "bridge.db")
        sent: list[list[Event]] = [[] for _ in range(PHONES + 1)]
        stop_sending = threading.Event()

        def deliver(event: Event, patient: bool) -> None:
            sender.deliver(event, retries=1000 if patient else 0, pause=0.1,
                           give_up_at=time.monotonic() + 30)

        def send(index: int) -> None:
            phone = phones[index]
            pace = random.Random(f"{SEED}-{index}")
            number = 0
            while not stop_sending.is_set():
                event = next_event(phone, roles[phone], f"{SEED}-{index}-{number}")
                number += 1
                sent[index].append(event)
                deliver(event, patient=pace.random() >= 0.15)
                time.sleep(pace.uniform(0.0, 0.08))

        def send_one_shots() -> None:
            pace = random.Random(f"{SEED}-one-shots")
            for phone in one_shots:
                if stop_sending.wait(pace.uniform(0.05, 0.3)):
                    return
                event = Event.make(phone, "stop", *pace.choice(MESSAGES["stop"]))
                sent[PHONES].append(event)
                deliver(event, patient=pace.random() >= 0.15)

        senders = [threading.Thread(target=send, args=(index,), daemon=True)
                   for index in range(PHONES)]
        senders.append(threading.Thread(target=send_one_shots, daemon=True))
        for thread in senders:
            thread.start()
        kill_rng = random.Random(f"{SEED}-kills")
        aimed = 0
        try:
            for _ in range(KILLS):
                if kill_rng.random() < 0.5:
                    imports = sum(project.imports_per_record.values())
                    if wait_for(lambda imports=imports:
                                sum(project.imports_per_record.values()) > imports,
                                timeout=5, step=0.002):
                        aimed += 1
                else:
                    time.sleep(kill_rng.uniform(0.2, 1.5))
                bridge.kill()
                bridge.start()
            time.sleep(0.5)
        finally:
            stop_sending.set()
            for thread in senders:
                thread.join(timeout=40)

        events = [event for phone_events in sent for event in phone_events]
        assert wait_for(lambda: store.open_jobs() == 0, timeout=40), store.status_counts()
        bridge.signal(signal.SIGTERM)
        assert bridge.wait() == 0

        stored = store.received_at()
        acknowledged = [event for event in events if event.acknowledged]
        assert {event.sid for event in acknowledged} <= set(stored)
        expected = expected_states(events, stored)
        failures = []
        for phone, state in expected.items():
            for record in records[phone]:
                got = (project.value(record, "sms_opt_out"),
                       project.value(record, "sms_opted_out___1"))
                want = (state.field_value(TIMEZONE), state.checkbox())
                imported = project.imports_per_record[record]
                if got != want or imported > state.changes:
                    failures.append(f"record {record} ({roles.get(phone, 'one-shot')}):"
                                    f" REDCap {got}, expected {want}; imported {imported}x"
                                    f" for {state.changes} changes; history {state.history}")
        assert not failures, "\n".join(failures)
        untouched = set(all_records) - {r for phone in expected for r in records[phone]}
        assert all(project.imports_per_record[record] == 0 for record in untouched)
        assert set(project.record_ids()) == all_records
        statuses = store.status_counts()
        assert set(statuses) <= {"applied", "superseded", "help"}, statuses
        assert not sim.banned

    # The run really crashed in flight: jobs were left running and recovered on restart.
    logs = bridge.logs()
    assert logs.count("listening on") == KILLS + 1
    if aimed:
        assert "jobs left in progress by a previous run" in logs
    assert len(acknowledged) > 100
    assert sum(1 for event in sent[PHONES] if event.sid in stored) > 10
