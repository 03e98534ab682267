"""Disk trouble: the store cannot be written (disk full, file system gone read-only).

Guarantee: while the store cannot be written the webhook answers 503 (nothing acknowledged,
so Twilio may retry, if the webhook URL carries ``#rc=3&rp=all``), ``/readyz`` fails, and
nothing is half-written; when the disk recovers the bridge carries on by itself, without a
restart, and a retried delivery is stored and applied.

How the fault is made: the running bridge's file-size limit (``RLIMIT_FSIZE``) is lowered to 0
with ``prlimit``, so every ``write()`` it makes to a file fails with EFBIG, exactly as writes
fail on a full disk (ENOSPC) or a file system remounted read-only after an error (EROFS).
SQLite reports a failed write of its WAL at commit as ``SQLITE_IOERR_WRITE`` (for ENOSPC,
``SQLITE_FULL``) and rolls the transaction back: the store's real error path. It needs no
root, unlike a tiny tmpfs or ``chattr +i``, and ``chmod`` does not stop root. The bridge's
log goes through a pipe, so it survives.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

from bridge.inbound import sign
from bridge.sim import RedcapSimulator, SimProject
from tests.conftest import AUTH_TOKEN, PARTICIPANT, classic_project, twilio_params
from tests.faults import StoreReader, wait_for
from tests.process import BridgeProcess, free_port
from tests.test_serve import serve_config

OTHER = "+12025550143"


@contextmanager
def writes_failing(pid: int) -> Iterator[None]:
    """Every file write of process ``pid`` fails (EFBIG) until the block ends."""
    process = psutil.Process(pid)
    limits = process.rlimit(psutil.RLIMIT_FSIZE)
    process.rlimit(psutil.RLIMIT_FSIZE, (0, limits[1]))
    try:
        yield
    finally:
        process.rlimit(psutil.RLIMIT_FSIZE, limits)


def imports(sim: RedcapSimulator) -> int:
    return sum(call.action == "import" for call in sim.calls)


def post(url: str, params: dict[str, str]) -> int:
    signature = sign(url, params, AUTH_TOKEN)
    return requests.post(url, data=params, headers={"X-Twilio-Signature": signature},
                         timeout=10).status_code


@contextmanager
def serving(tmp_path: Path, sim: RedcapSimulator, records: dict[str, str],
            ) -> Iterator[tuple[BridgeProcess, SimProject, StoreReader]]:
    """The bridge serving a project with these records; its log goes through a pipe."""
    project = classic_project(records)
    token = sim.add_project(project)
    port = free_port()
    config = serve_config(tmp_path, sim, token, port)
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
    with BridgeProcess(config, port, env=env, pipe_logs=True) as bridge:
        assert bridge.proc is not None
        yield bridge, project, StoreReader(tmp_path / "bridge.db")


def test_unwritable_store_answers_503_fails_readyz_and_recovers_without_a_restart(
        tmp_path: Path, sim: RedcapSimulator) -> None:
    with serving(tmp_path, sim, {"1": PARTICIPANT, "2": OTHER}) as (bridge, project, store):
        assert bridge.proc is not None
        url = bridge.url + "/twilio/sms"
        assert post(url, twilio_params("STOP")) == 200
        assert wait_for(lambda: project.value("1", "sms_opted_out___1") == "1")

        # The worker's import of a START has reached REDCap, which answers a second later,
        # when the disk goes.
        sim.latency_seconds = 1.0
        assert post(url, twilio_params("START")) == 200
        assert wait_for(lambda: imports(sim) == 2, step=0.01)
        refused = twilio_params("STOP", OTHER)
        with writes_failing(bridge.proc.pid):
            failed_at = time.monotonic()
            assert post(url, refused) == 503
            ready = requests.get(bridge.url + "/readyz", timeout=10)
            assert ready.status_code == 503
            assert "store not writable" in ready.text
            assert requests.get(bridge.url + "/healthz", timeout=10).status_code == 200
            # REDCap applied the START, but the worker cannot record that it did.
            assert project.value("1", "sms_opted_out___1") == "0"
            time.sleep(1.5)
            assert store.status_counts().get("running") == 1
            assert [call for call in sim.calls if call.time > failed_at] == []
        sim.latency_seconds = 0.0

        # The disk is back: ready again, and the orphaned job is finished without a restart.
        assert wait_for(lambda: requests.get(bridge.url + "/readyz", timeout=10)
                        .status_code == 200)
        assert wait_for(lambda: store.open_jobs() == 0), store.status_counts()
        assert refused["MessageSid"] not in store.stored_sids()
        # Twilio's retry (same MessageSid, same signature) is now taken and applied.
        assert post(url, refused) == 200
        assert wait_for(lambda: project.value("2", "sms_opted_out___1") == "1")
        assert bridge.stop() == 0

    assert store.integrity() == "ok"
    assert store.status_counts() == {"applied": 3}
    jobs_per_message = [row["message_sid"] for row in store.jobs()]
    assert sorted(jobs_per_message) == sorted(store.stored_sids())
    assert project.imports_per_record == {"1": 2, "2": 1}  # STOP, START once each
    logs = bridge.logs()
    assert "could not be stored" in logs
    assert "could not record the outcome of 1 jobs (disk I/O error)" in logs
    assert "disk I/O error" in logs  # the cause, not a follow-on error
    assert "jobs left in progress" not in logs


def test_no_redcap_request_is_sent_while_its_budget_token_cannot_be_recorded(
        tmp_path: Path, sim: RedcapSimulator) -> None:
    """The request budget is kept in the store; a token it cannot record is not spent."""
    with serving(tmp_path, sim, {"1": PARTICIPANT}) as (bridge, project, store):
        assert bridge.proc is not None
        url = bridge.url + "/twilio/sms"
        assert wait_for(lambda: store.indexes_built() == 1)
        # The disk goes while the worker reads the record back before its import.
        sim.latency_seconds = 1.0
        exports = len(sim.calls)
        assert post(url, twilio_params("STOP")) == 200
        assert wait_for(lambda: len(sim.calls) > exports and sim.calls[-1].action == "export",
                        step=0.01)
        with writes_failing(bridge.proc.pid):
            time.sleep(2.5)
            assert imports(sim) == 0
            assert project.value("1", "sms_opted_out___1") == "0"
        sim.latency_seconds = 0.0
        assert wait_for(lambda: project.value("1", "sms_opted_out___1") == "1")
        assert wait_for(lambda: store.open_jobs() == 0), store.status_counts()
        assert bridge.stop() == 0
    assert project.imports_per_record == {"1": 1}


def test_an_unusable_store_path_stops_start_up_with_a_clear_message(
        tmp_path: Path, sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    port = free_port()
    config = serve_config(tmp_path, sim, token, port)
    (tmp_path / "bridge.db").mkdir()  # something that is not a database file is in the way
    bridge = BridgeProcess(config, port, env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                                              "REDCAP_TOKEN": token})
    try:
        bridge.start(timeout=10)
    except RuntimeError as exc:
        message = str(exc)
    else:
        bridge.stop()
        raise AssertionError("started on an unusable store")
    assert "exited with 1" in message
    assert f"cannot open store {tmp_path / 'bridge.db'}" in message
    assert "Traceback" not in message
    assert os.path.isdir(tmp_path / "bridge.db")
