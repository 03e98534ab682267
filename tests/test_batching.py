"""Batching and the request budget against the simulator: chunk sizes, outages, backlogs."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY

from bridge.budget import BudgetRegistry
from bridge.sim import Fault, RedcapSimulator
from bridge.sync import Worker
from tests.conftest import Bridge, classic_project, project_config, replace

WAIT = "bridge_redcap_budget_wait_seconds_total"


def import_sizes(sim: RedcapSimulator) -> list[int]:
    return [c.records for c in sim.calls if c.content == "record" and c.action == "import"]


def test_imports_carry_at_most_batch_size_records(sim: RedcapSimulator,
                                                  make_bridge: Callable[..., Bridge]) -> None:
    shared = "(312) 555-0100"  # on three records: more than a batch, so it goes alone
    phones = {"1": "202-555-0101", "2": "202-555-0102", "3": "202-555-0103",
              "4": "202-555-0104", "5": shared, "6": shared, "7": shared}
    project = classic_project(phones)
    bridge = make_bridge([project_config(sim, sim.add_project(project))], batch_size=2)
    for sender in ("+12025550101", "+12025550102", "+12025550103", "+13125550100",
                   "+12025550104"):
        bridge.text("STOP", sender)
    bridge.drain()
    assert import_sizes(sim) == [2, 1, 3, 1]
    assert all(project.value(r, "sms_opt_out") != "" for r in phones)
    assert bridge.job_statuses() == ["applied"] * 5


def test_one_import_for_a_whole_batch(sim: RedcapSimulator,
                                      make_bridge: Callable[..., Bridge]) -> None:
    phones = {str(n): f"202-555-{n:04d}" for n in range(1, 41)}
    project = classic_project(phones)
    bridge = make_bridge([project_config(sim, sim.add_project(project))], batch_size=500)
    for n in range(1, 41):
        bridge.text("STOP", f"+1202555{n:04d}")
    bridge.drain()
    assert import_sizes(sim) == [40]
    # the index build, then one read-back and one import for all 40 jobs
    assert sim.calls_by_content() == {"project": 1, "metadata": 1, "record": 3}


def test_the_budget_holds_through_an_outage_and_the_backlog_after_it(
        make_bridge: Callable[..., Bridge]) -> None:
    """Two projects on one REDCap host, a backlog, failures retried at once: the shared
    budget (here 10 per 1-second window, a minute shortened) is never exceeded, so the
    simulator, banning past 10 per second, never bans the bridge."""
    with RedcapSimulator(rate_limit_per_minute=10, rate_window_seconds=1.0) as sim:
        configs = []
        projects = []
        for name, area in (("heart-study", "202"), ("sleep-study", "312")):
            project = classic_project({str(n): f"{area}-555-{n:04d}" for n in range(1, 21)})
            projects.append(project)
            configs.append(replace(project_config(sim, sim.add_project(project)), name=name,
                                   numbers=(f"+1{area}5550000",), messaging_service_sids=()))
        bridge = make_bridge(configs, batch_size=5, request_timeout_seconds=0.3)
        worker = Worker(bridge.config, bridge.store, budgets=BudgetRegistry(10, 1.0))
        for area in ("202", "312"):
            for n in range(1, 21):
                bridge.text("STOP", f"+1{area}555{n:04d}", to=f"+1{area}5550000",
                            service=None)
        sim.inject(Fault.status(503), times=8)
        sim.inject(Fault.reset(), times=3)
        sim.inject(Fault.slow(0.5), times=2)  # REDCap slow: the client gives up, retries
        sim.inject(Fault.status(500), times=4)
        host = {"host": sim.api_url.split("/")[2]}
        waited_before = REGISTRY.get_sample_value(WAIT, host) or 0.0
        worker.drain()
        assert not sim.banned
        # the time spent waiting for tokens shows on /metrics
        assert (REGISTRY.get_sample_value(WAIT, host) or 0.0) - waited_before >= 1.0
        assert sim.max_calls_in_window(1.0) <= 10
        assert len(sim.calls) > 3 * 10  # several windows full: the budget paced them
        assert bridge.job_statuses() == ["applied"] * 40
        assert all(p.value(str(n), "sms_opt_out") != "" for p in projects
                   for n in range(1, 21))
