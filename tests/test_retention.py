"""Data kept: old message bodies are purged (from the files too), the history stays; mode 0600."""

from __future__ import annotations

import dataclasses
import json
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.inbound import parse_message
from bridge.retention import purge_bodies
from bridge.service import Runtime
from bridge.sim import RedcapSimulator
from bridge.store import Store, utcnow
from tests.conftest import (
    PARTICIPANT,
    Bridge,
    classic_project,
    make_config,
    project_config,
    twilio_params,
)
from tests.opsutil import bridge_yaml, project_entry, run_cli

OLD_BODY = "thanks, see you on thursday (zebra-quartz-417)"
NEW_BODY = "ok, heron-violet-233"


def receive(bridge: Bridge, body: str, days_ago: float, sender: str = PARTICIPANT) -> None:
    message = parse_message(twilio_params(body, sender))
    bridge.intake.receive(message, received_at=utcnow() - timedelta(days=days_ago))


def file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal"))
                    if p.exists())


@pytest.fixture
def bridge(tmp_path: Path, sim: RedcapSimulator) -> Bridge:
    config = make_config(tmp_path, [project_config(
        sim, sim.add_project(classic_project({"1": "555-867-5309"})))])
    config = dataclasses.replace(config, projects=(dataclasses.replace(
        config.projects[0], notify=_notify()),))
    return Bridge(config)


def _notify():  # help notifications carry the body in their payload
    from bridge.config import NotifyConfig
    return NotifyConfig(emails=("team@example.edu",), on=frozenset({"help", "stop"}))


def test_old_bodies_are_purged_and_the_history_stays(bridge: Bridge) -> None:
    receive(bridge, OLD_BODY, days_ago=91, sender="+16175550100")
    receive(bridge, "HELP", days_ago=95, sender="+12025550143")
    receive(bridge, "STOP", days_ago=91)
    receive(bridge, NEW_BODY, days_ago=89)
    bridge.drain()
    assert bridge.job_statuses() == ["help", "applied"]
    conn = bridge.store.read()
    jobs_before = [tuple(row) for row in conn.execute("SELECT * FROM jobs ORDER BY id")]
    state_before = [tuple(row) for row in conn.execute("SELECT * FROM consent_state")]
    assert OLD_BODY.encode() in file_bytes(bridge.store.path)

    result = purge_bodies(bridge.store, keep_days=90)

    assert (result.messages, result.notifications) == (3, 1)
    bodies = [row[0] for row in conn.execute("SELECT body FROM messages ORDER BY received_at")]
    assert bodies == [None, None, None, NEW_BODY]
    assert [tuple(row) for row in conn.execute("SELECT * FROM jobs ORDER BY id")] == jobs_before
    assert [tuple(row) for row in conn.execute("SELECT * FROM consent_state")] == state_before
    payloads = [json.loads(row[0]) for row in conn.execute(
        "SELECT payload FROM notifications WHERE kind='help'")]
    assert payloads and all("body" not in payload for payload in payloads)
    assert payloads[0]["phone"] == "+12025550143"  # the rest of the notification stays
    # gone from the files on disk, not only from query results
    raw = file_bytes(bridge.store.path)
    assert OLD_BODY.encode() not in raw
    assert NEW_BODY.encode() in raw
    assert purge_bodies(bridge.store, keep_days=90).messages == 0


def test_purge_in_small_batches(bridge: Bridge) -> None:
    for index in range(7):
        receive(bridge, f"reply {index}", days_ago=100, sender=f"+1202555010{index}")
    result = purge_bodies(bridge.store, keep_days=90, batch=3)
    assert result.messages == 7
    assert bridge.store.read().execute(
        "SELECT COUNT(*) FROM messages WHERE body IS NOT NULL").fetchone()[0] == 0


def test_serve_purges_on_schedule(tmp_path: Path, sim: RedcapSimulator) -> None:
    config = make_config(tmp_path, [project_config(sim, sim.add_project(classic_project()))])
    config = dataclasses.replace(config, storage=dataclasses.replace(config.storage,
                                                                     keep_bodies_days=1))
    bridge = Bridge(config)
    receive(bridge, OLD_BODY, days_ago=2)
    bridge.store.close()
    runtime = Runtime.build(config)
    runtime.start_background()
    try:
        assert runtime.scheduler.get_job("purge") is not None
        deadline = time.monotonic() + 10
        body = OLD_BODY
        while body is not None and time.monotonic() < deadline:
            body = runtime.store.read().execute("SELECT body FROM messages").fetchone()[0]
            time.sleep(0.05)
        assert body is None
    finally:
        runtime.shutdown()


def test_purge_command(tmp_path: Path, sim: RedcapSimulator, bridge: Bridge,
                       capsys: pytest.CaptureFixture[str]) -> None:
    receive(bridge, OLD_BODY, days_ago=100)
    config = bridge_yaml(tmp_path, [project_entry(sim, "A" * 32)])
    assert run_cli(["purge", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("purged the text of 1 messages and 0 notifications")
    assert bridge.store.read().execute("SELECT body FROM messages").fetchone()[0] is None


def test_store_file_is_private(tmp_path: Path) -> None:
    store = Store(tmp_path / "sub" / "bridge.db")
    store.close()
    assert stat.S_IMODE((tmp_path / "sub" / "bridge.db").stat().st_mode) == 0o600
