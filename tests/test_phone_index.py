"""The phone index at scale: one export per build, incremental refresh, refresh on a miss."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.budget import RequestBudget
from bridge.config import RedcapTarget
from bridge.phone_index import PhoneIndex
from bridge.redcap import RedcapClient, RedcapError, _iter_json_rows
from bridge.sim import Fault, RedcapSimulator, SimProject, generate_project, make_metadata
from bridge.store import Store
from tests.conftest import Bridge, make_config, project_config, replace

MONTH_AGO = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=30)


def exports(sim: RedcapSimulator) -> list[int]:
    """Records returned by each record export, in order."""
    return [c.records for c in sim.calls if c.content == "record" and c.action == "export"]


def test_an_index_of_a_large_project_costs_one_export(sim: RedcapSimulator,
                                                      tmp_path: Path) -> None:
    project, numbers = generate_project(20_000, shared_fraction=0.05, seed=4,
                                        modified=MONTH_AGO)
    token = sim.add_project(project)
    config = project_config(sim, token, timezone="UTC")
    client = RedcapClient(sim.api_url, token, RequestBudget(600))
    info = client.project_info()
    store = Store(tmp_path / "bridge.db")
    before = len(sim.calls)
    index = PhoneIndex(config, store)
    assert index.refresh(client, info, full=True) == 20_000
    assert len(sim.calls) == before + 1
    assert exports(sim) == [20_000]
    sizes = Counter(len(index.lookup(number)) for number in numbers)
    assert sizes == {1: len(numbers) - 952, 2: 952}  # 20,000 records on 19,048 numbers
    # A restart loads the persisted index: same answers, no REDCap call.
    reloaded = PhoneIndex(config, store)
    reloaded.load()
    assert len(sim.calls) == before + 1
    assert all(reloaded.lookup(n) == index.lookup(n) for n in numbers[::97])
    assert reloaded.refreshed_at == index.refreshed_at
    store.close()


def test_scheduled_refresh_reads_only_what_changed(sim: RedcapSimulator,
                                                   make_bridge: Callable[..., Bridge]) -> None:
    project, numbers = generate_project(2000, seed=5, modified=MONTH_AGO)
    bridge = make_bridge([project_config(sim, sim.add_project(project), timezone="UTC")],
                         index_refresh_minutes=0.0)
    bridge.text("START", numbers[0])  # nothing to clear: builds the index, writes nothing
    bridge.drain()
    index = bridge.worker.projects["heart-study"].index
    assert exports(sim)[0] == 2000
    record = "17"
    old_number = next(n for n in numbers if index.lookup(n) == (record,))
    project.add_record(record, {"mobile": "(312) 555-0199"})  # a participant's new phone
    bridge.worker.refresh_indexes()
    assert exports(sim)[-1] == 1  # dateRangeBegin: only the changed record, not 2000
    assert index.lookup("+13125550199") == (record,)
    assert index.lookup(old_number) == ()


def test_many_misses_in_one_batch_cost_one_refresh(sim: RedcapSimulator,
                                                   make_bridge: Callable[..., Bridge]) -> None:
    project, numbers = generate_project(2000, seed=6, modified=MONTH_AGO)
    bridge = make_bridge([project_config(sim, sim.add_project(project), timezone="UTC")])
    bridge.text("START", numbers[0])
    bridge.drain()  # the index is built
    before = len(exports(sim))
    project.add_record("2001", {"mobile": "312-555-0123"})  # enrolled after the build
    for line in range(30):
        bridge.text("STOP", f"+1415556{line:04d}")  # on no record
    bridge.text("STOP", "+13125550123")
    bridge.drain()
    # one incremental refresh for all 31 misses, then the read-back of the one match
    assert exports(sim)[before:] == [1, 1]
    assert project.value("2001", "sms_opt_out") != ""
    assert Counter(bridge.job_statuses()) == {"applied": 2, "unmatched": 30}
    # Misses older than the index's last refresh cause no further export.
    bridge.store.read().execute("UPDATE jobs SET status='pending' WHERE status='unmatched'")
    bridge.drain()
    assert len(exports(sim)) == before + 2


@pytest.mark.parametrize(("text", "rows"), [
    ("[]", []),
    (' \n[ ]\n', []),
    ('[{"record_id":"1","mobile":"5558675309"}]', [{"record_id": "1", "mobile": "5558675309"}]),
    ('[ {"a":"1"} ,\n {"a":"2"} ]\n', [{"a": "1"}, {"a": "2"}]),
])
def test_streamed_export_rows(text: str, rows: list[dict[str, str]]) -> None:
    assert list(_iter_json_rows(text, "record export")) == rows


@pytest.mark.parametrize("text", [
    "", "{}", '{"error":"x"}', "[", '[{"a":"1"}', '[{"a":"1"},]', '[{"a":"1"} {"a":"2"}]',
    '["a"]', '[{"a":"1"}] trailing', "<html>",
])
def test_malformed_export_is_a_transient_error(text: str) -> None:
    with pytest.raises(RedcapError) as caught:
        list(_iter_json_rows(text, "record export"))
    assert not caught.value.permanent


def test_numbers_in_repeating_instances_all_lead_to_their_record(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = SimProject(title="t", metadata=make_metadata("record_id", [
        ("sms_opt_out", "consent", "text", "datetime_seconds_ymd"),
        ("mobile", "phones", "text", "")]), repeating_forms=["phones"])
    project.add_record("1", {"sms_opt_out": ""})
    project.add_record("1", {"mobile": "555-867-5309"}, repeat_instrument="phones", instance=1)
    project.add_record("1", {"mobile": "(202) 555-0143"}, repeat_instrument="phones",
                       instance=2)
    project.add_record("2", {"sms_opt_out": ""})
    project.add_record("2", {"mobile": "202.555.0143"}, repeat_instrument="phones", instance=1)
    bridge = make_bridge([project_config(sim, sim.add_project(project),
                                         opt_out_checkbox=None)])
    bridge.text("STOP", "+12025550143")
    bridge.drain()
    index = bridge.worker.projects["heart-study"].index
    assert index.lookup("+15558675309") == ("1",)
    assert index.lookup("+12025550143") == ("1", "2")
    assert project.value("1", "sms_opt_out") != ""
    assert project.value("2", "sms_opt_out") != ""


def test_the_index_is_ready_before_the_first_message(sim: RedcapSimulator,
                                                      make_bridge: Callable[..., Bridge]) -> None:
    project, numbers = generate_project(2000, seed=7, modified=MONTH_AGO)
    bridge = make_bridge([project_config(sim, sim.add_project(project), timezone="UTC")])
    bridge.worker.tick()  # the first scheduled pass after start, no message yet
    assert exports(sim) == [2000]
    bridge.worker.tick()
    assert exports(sim) == [2000]  # fresh: nothing more
    bridge.text("STOP", numbers[3])
    bridge.drain()
    assert len(exports(sim)) == 2 and exports(sim)[1] <= 2  # the read-back only
    # A restart loads it from the store: no export at all.
    bridge = bridge.restart()
    bridge.worker.tick()
    assert len(exports(sim)) == 2


def test_a_failed_build_at_start_is_left_to_the_first_job(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project, numbers = generate_project(200, seed=8)
    bridge = make_bridge([project_config(sim, sim.add_project(project), timezone="UTC")])
    sim.inject(Fault.status(503))
    for _ in range(3):
        bridge.worker.tick()
    assert len(sim.calls) == 1  # tried once, not on every tick
    bridge.text("STOP", numbers[0])
    bridge.drain()
    assert exports(sim)[0] == 200
    assert bridge.job_statuses() == ["applied"]


def test_an_index_read_from_another_redcap_project_is_read_afresh(sim: RedcapSimulator,
                                                                   tmp_path: Path) -> None:
    """A project entry pointed from a test project to the live one, and restarted: the saved
    index belongs to the test project, whose record IDs the live one also has."""
    trial, trial_numbers = generate_project(20, seed=11, modified=MONTH_AGO)
    live, live_numbers = generate_project(20, seed=12, modified=MONTH_AGO)
    assert set(trial.record_ids()) == set(live.record_ids())
    assert not set(trial_numbers) & set(live_numbers)
    trial_token, live_token = sim.add_project(trial), sim.add_project(live)
    first = Bridge(make_config(tmp_path, [project_config(sim, trial_token, timezone="UTC")]))
    first.text("START", trial_numbers[0])  # nothing to clear; builds and saves the index
    first.drain()
    first.store.close()

    moved = Bridge(make_config(tmp_path, [project_config(sim, live_token, timezone="UTC")]))
    moved.text("STOP", trial_numbers[0])  # on a trial record only
    moved.drain()
    assert moved.job_statuses() == ["applied", "unmatched"]
    assert all(live.value(record, "sms_opt_out") == "" for record in live.record_ids())
    moved.text("STOP", live_numbers[0])
    moved.drain()
    assert moved.job_statuses()[-1] == "applied"
    assert any(live.value(record, "sms_opt_out") for record in live.record_ids())
    moved.store.close()


@pytest.mark.parametrize("change", [{"phone_field": "first_name"}, {"default_region": "GB"},
                                    {"redcap": None}])
def test_a_saved_index_is_kept_only_for_the_project_as_configured(
        sim: RedcapSimulator, tmp_path: Path, change: dict[str, object]) -> None:
    project, _ = generate_project(30, seed=13, modified=MONTH_AGO)
    token = sim.add_project(project)
    config = project_config(sim, token, timezone="UTC")
    client = RedcapClient(sim.api_url, token, RequestBudget(600))
    store = Store(tmp_path / "bridge.db")
    PhoneIndex(config, store).refresh(client, client.project_info(), full=True)
    same = PhoneIndex(config, store)
    same.load()
    assert len(same) == 30 and same.refreshed_at is not None
    if change == {"redcap": None}:  # the same URL, another project's token
        change = {"redcap": RedcapTarget(sim.api_url, "F" * 32)}
    other = PhoneIndex(replace(config, **change), store)
    other.load()
    assert len(other) == 0 and other.refreshed_at is None and other.loaded
    store.close()
