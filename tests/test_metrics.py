"""``GET /metrics``: Prometheus text with the traffic counters and the store gauges."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from bridge.inbound import sign
from bridge.sim import RedcapSimulator
from tests.conftest import (
    AUTH_TOKEN,
    Bridge,
    classic_project,
    project_config,
    twilio_params,
)
from tests.opsutil import bridge_yaml, project_entry
from tests.process import BridgeProcess, free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(text: str) -> Samples:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_scrape_after_traffic(sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    project = classic_project({"1": "555-867-5309"})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    before = scrape(bridge.client.get("/metrics").get_data(as_text=True))

    bridge.text("STOP")
    bridge.post(twilio_params("STOP"), signature="forged")
    bridge.drain()
    bridge.text("START", "+12025550143")  # left waiting

    response = bridge.client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    after = scrape(response.get_data(as_text=True))

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("bridge_webhooks_total", endpoint="sms", outcome="accepted") == 2
    assert delta("bridge_webhooks_total", endpoint="sms", outcome="http_403") == 1
    assert delta("bridge_redcap_requests_total", content="record", result="200") >= 2
    assert delta("bridge_redcap_request_seconds_count", content="record") >= 2
    assert delta("bridge_job_outcomes_total", project="heart-study", outcome="applied") == 1
    # store gauges: exact, from the store
    assert value(after, "bridge_store_up") == 1
    assert value(after, "bridge_jobs", project="heart-study", state="applied") == 1
    assert value(after, "bridge_jobs", project="heart-study", state="pending") == 1
    assert ("bridge_jobs", (("project", "heart-study"), ("state", "failed"))) in after
    assert value(after, "bridge_queue_depth", project="heart-study") == 1
    assert 0 < value(after, "bridge_oldest_pending_age_seconds", project="heart-study") < 30
    for result in ("sent", "failed"):
        assert ("bridge_emails_total", (("result", result),)) in after


def test_empty_store_has_every_series_at_zero(sim: RedcapSimulator,
                                              make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge([project_config(sim, sim.add_project(classic_project()))])
    samples = scrape(bridge.client.get("/metrics").get_data(as_text=True))
    assert value(samples, "bridge_queue_depth", project="heart-study") == 0
    assert value(samples, "bridge_oldest_pending_age_seconds", project="heart-study") == 0
    states = {dict(labels)["state"] for name, labels in samples if name == "bridge_jobs"}
    assert states == {"pending", "running", "applied", "unmatched", "failed", "superseded",
                      "help", "review"}


def test_scrape_a_real_process(tmp_path: Path, sim: RedcapSimulator) -> None:
    project = classic_project({"1": "555-867-5309"})
    port = free_port()
    config = bridge_yaml(tmp_path, [project_entry(sim, sim.add_project(project))], port=port,
                         extra={"sync": {"poll_seconds": 0.1}})
    with BridgeProcess(config, port) as process:
        url = "https://bridge.example.edu/twilio/sms"  # public_url: what Twilio signed
        params = twilio_params("STOP")
        response = requests.post(process.url + "/twilio/sms", data=params, timeout=5,
                                 headers={"X-Twilio-Signature": sign(url, params, AUTH_TOKEN)})
        assert response.status_code == 200
        samples: Samples = {}
        for _ in range(200):
            samples = scrape(requests.get(process.url + "/metrics", timeout=5).text)
            if value(samples, "bridge_jobs", project="heart-study", state="applied") == 1:
                break
            time.sleep(0.05)
        assert value(samples, "bridge_jobs", project="heart-study", state="applied") == 1
        assert value(samples, "bridge_webhooks_total", endpoint="sms", outcome="accepted") == 1
        assert value(samples, "bridge_queue_depth", project="heart-study") == 0
