"""The simulator as a server: the IP ban, injected faults, latency, the call log, threads.

These are the conditions the bridge's retry and rate-budget code must survive, so each is
checked over real HTTP from the client's side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from bridge.sim import Fault, RedcapSimulator, SimProject, make_metadata

FIELDS = [("mobile", "contact", "text", ""), ("sms_opt_out", "contact", "text", "")]
BAN = "Your IP address (127.0.0.1) has been banned due to suspected abuse."


def new_project() -> SimProject:
    project = SimProject(title="Heart study", metadata=make_metadata("record_id", FIELDS))
    project.add_record("1", {"mobile": "5558675309"})
    return project


class Client:
    """Posts to one simulator with one token, like the bridge's REDCap client would."""

    def __init__(self, simulator: RedcapSimulator, token: str) -> None:
        self.url = simulator.api_url
        self.token = token
        self.session = requests.Session()

    def post(self, timeout: float = 10, **params: str) -> requests.Response:
        data = {"token": self.token, "format": "json", **params}
        return self.session.post(self.url, data=data, timeout=timeout)

    def version(self, timeout: float = 10) -> requests.Response:
        return self.post(timeout=timeout, content="version")

    def import_rows(self, rows: list[dict[str, Any]], timeout: float = 10) -> requests.Response:
        return self.post(timeout=timeout, content="record", action="import", data=json.dumps(rows))


@pytest.fixture
def simulator() -> Iterator[RedcapSimulator]:
    with RedcapSimulator(rate_limit_per_minute=30) as simulator:
        yield simulator


@pytest.fixture
def project() -> SimProject:
    return new_project()


@pytest.fixture
def client(simulator: RedcapSimulator, project: SimProject) -> Client:
    return Client(simulator, simulator.add_project(project))


# -- the IP ban ------------------------------------------------------------------------


def test_going_over_the_rate_limit_bans_until_unbanned(
    simulator: RedcapSimulator, client: Client
) -> None:
    for _ in range(25):
        assert client.version().status_code == 200
    for _ in range(5):  # failed requests count too
        assert client.post(content="nonsense").status_code == 400
    assert not simulator.banned
    response = client.version()
    assert response.status_code == 429
    assert response.text == BAN
    assert response.headers["Content-Type"].startswith("text/plain")
    assert simulator.banned
    bad_token = requests.post(simulator.api_url, data={"token": "x"}, timeout=10)
    assert (bad_token.status_code, bad_token.text) == (429, BAN)
    assert [call.status for call in simulator.calls[-2:]] == [429, 429]
    simulator.unban()
    assert not simulator.banned
    assert client.version().status_code == 200


def test_the_window_slides(project: SimProject) -> None:
    with RedcapSimulator(rate_limit_per_minute=3, rate_window_seconds=0.5) as simulator:
        client = Client(simulator, simulator.add_project(project))
        assert [client.version().status_code for _ in range(3)] == [200] * 3
        time.sleep(0.6)
        assert [client.version().status_code for _ in range(4)] == [200] * 3 + [429]


# -- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 500, 502, 429])
def test_status_faults_answer_with_an_error_and_do_nothing(
    simulator: RedcapSimulator, client: Client, project: SimProject, status: int
) -> None:
    simulator.inject(Fault.status(status), times=2)
    for _ in range(2):
        response = client.import_rows([{"record_id": "1", "sms_opt_out": "x"}])
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert "error" in response.json()
    assert project.value("1", "sms_opt_out") == ""
    assert client.import_rows([{"record_id": "1", "sms_opt_out": "x"}]).status_code == 200
    assert project.value("1", "sms_opt_out") == "x"


def test_reset_drops_the_connection(simulator: RedcapSimulator, client: Client) -> None:
    simulator.inject(Fault.reset(), times=2)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            client.version()
    assert client.version().status_code == 200
    assert [call.status for call in simulator.calls] == [0, 0, 200]


def test_slow_answer_lets_the_client_time_out_after_the_import_was_applied(
    simulator: RedcapSimulator, client: Client, project: SimProject
) -> None:
    simulator.inject(Fault.slow(2.0))
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        client.import_rows([{"record_id": "1", "sms_opt_out": "applied"}], timeout=0.3)
    assert time.monotonic() - started < 1.5
    # As with a real slow server, the client cannot know the import went through.
    assert project.value("1", "sms_opt_out") == "applied"
    fresh = Client(simulator, client.token)
    started = time.monotonic()
    assert fresh.version().status_code == 200
    assert time.monotonic() - started < 0.5


def test_clear_faults(simulator: RedcapSimulator, client: Client) -> None:
    simulator.inject(Fault.status(503), times=5)
    simulator.clear_faults()
    assert client.version().status_code == 200


def test_faults_apply_in_the_order_injected(simulator: RedcapSimulator, client: Client) -> None:
    simulator.inject(Fault.status(500))
    simulator.inject(Fault.status(503))
    assert [client.version().status_code for _ in range(3)] == [500, 503, 200]


def test_latency_delays_every_answer(simulator: RedcapSimulator, client: Client) -> None:
    simulator.latency_seconds = 0.2
    started = time.monotonic()
    assert client.version().status_code == 200
    assert client.post(content="nonsense").status_code == 400
    assert time.monotonic() - started >= 0.4
    simulator.latency_seconds = 0.0
    started = time.monotonic()
    client.version()
    assert time.monotonic() - started < 0.2


# -- the call log ----------------------------------------------------------------------


def test_calls_record_what_was_asked_and_answered(
    simulator: RedcapSimulator, client: Client
) -> None:
    client.post(content="record", fields="record_id")
    client.import_rows([{"record_id": "1"}, {"record_id": "2"}, {"record_id": "2"}])
    client.import_rows([{"record_id": "1", "nope": "1"}])
    requests.post(simulator.api_url, data={"token": "A" * 32, "content": "metadata"}, timeout=10)
    calls = simulator.calls
    assert [(c.content, c.action, c.token_ok, c.status, c.records) for c in calls] == [
        ("record", "export", True, 200, 1),
        ("record", "import", True, 200, 2),
        ("record", "import", True, 400, 0),
        ("metadata", "export", False, 403, 0),
    ]
    assert calls == sorted(calls, key=lambda call: call.time)
    assert simulator.calls_by_content() == {"record": 3, "metadata": 1}


def test_max_calls_in_window(simulator: RedcapSimulator, client: Client) -> None:
    assert simulator.max_calls_in_window() == 0
    for _ in range(6):
        client.version()
    time.sleep(0.3)
    for _ in range(2):
        client.version()
    assert simulator.max_calls_in_window(60.0) == 8
    assert simulator.max_calls_in_window(0.25) == 6


def test_imports_per_record(client: Client, project: SimProject) -> None:
    client.import_rows([{"record_id": "1"}, {"record_id": "1", "mobile": "x"}])
    client.import_rows([{"record_id": "1"}, {"record_id": "5"}])
    assert project.imports_per_record == {"1": 2, "5": 1}


# -- tokens, threads, life cycle -------------------------------------------------------


def test_tokens(simulator: RedcapSimulator, project: SimProject) -> None:
    explicit = "0123456789ABCDEF0123456789ABCDEF"
    assert simulator.add_project(project, token=explicit) == explicit
    second = simulator.add_project(project)
    assert len(second) == 32 and second == second.upper() and second != explicit
    for token in (explicit, second):
        assert Client(simulator, token).post(content="record").json()[0]["record_id"] == "1"
    with pytest.raises(ValueError, match="in use"):
        simulator.add_project(new_project(), token=explicit)
    with pytest.raises(ValueError, match="32"):
        simulator.add_project(new_project(), token="0123456789abcdef0123456789abcdef")


def test_concurrent_clients(project: SimProject) -> None:
    with RedcapSimulator(rate_limit_per_minute=None) as simulator:
        token = simulator.add_project(project)

        def work(worker: int) -> list[int]:
            client = Client(simulator, token)
            statuses = []
            for n in range(20):
                rows = [{"record_id": f"{worker}-{n}", "mobile": str(n)}]
                statuses.append(client.import_rows(rows).status_code)
                statuses.append(client.post(content="record", fields="record_id").status_code)
            return statuses

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(work, range(8)))
    assert all(status == 200 for statuses in results for status in statuses)
    assert len(project.record_ids()) == 1 + 8 * 20
    assert sum(project.imports_per_record.values()) == 8 * 20


def test_stop_closes_kept_alive_connections(project: SimProject) -> None:
    simulator = RedcapSimulator()
    simulator.add_project(project)
    with simulator:
        session = requests.Session()
        assert session.post(simulator.api_url, data={"token": "x"}, timeout=5).status_code == 403
    with pytest.raises(requests.ConnectionError):
        session.post(simulator.api_url, data={"content": "version"}, timeout=5)
    simulator.stop()  # a second stop is harmless


def test_stop_logs_no_warning(project: SimProject, caplog: pytest.LogCaptureFixture) -> None:
    # The demo shows its log output to newcomers: a clean stop must not look like a fault.
    with RedcapSimulator() as simulator:
        simulator.add_project(project)
        requests.post(simulator.api_url, data={"token": "x"}, timeout=5)
    assert [r.getMessage() for r in caplog.records if r.levelname != "DEBUG"] == []


def test_large_export_is_fast() -> None:
    project = SimProject(title="Big", metadata=make_metadata("record_id", FIELDS))
    for n in range(1, 100_001):
        project.add_record(str(n), {"mobile": f"555{n:07d}"})
    with RedcapSimulator() as simulator:
        client = Client(simulator, simulator.add_project(project))
        started = time.monotonic()
        response = client.session.post(
            client.url,
            data={"token": client.token, "format": "json", "content": "record"}
            | {"fields[0]": "record_id", "fields[1]": "mobile"},
            timeout=10,
        )
        rows = response.json()
        elapsed = time.monotonic() - started
    assert len(rows) == 100_000
    assert rows[-1] == {"record_id": "100000", "mobile": "5550100000"}
    assert elapsed < 2.0
