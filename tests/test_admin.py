"""The admin API: bearer token, JSON and CSV, errors; off (404) when no token is configured."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bridge.config import AdminConfig
from bridge.sim import RedcapSimulator
from tests.conftest import PARTICIPANT, Bridge, classic_project, make_config, project_config
from tests.opsutil import bridge_yaml, project_entry
from tests.process import BridgeProcess, free_port

ADMIN_TOKEN = "s3cret-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def bridge(tmp_path: Path, sim: RedcapSimulator) -> Iterator[Bridge]:
    project = classic_project({"1": "555-867-5309"})
    config = make_config(tmp_path, [project_config(sim, sim.add_project(project))])
    bridge = Bridge(dataclasses.replace(config, admin=AdminConfig(ADMIN_TOKEN)))
    bridge.text("STOP")
    bridge.text("HELP", "+12025550143")
    bridge.drain()
    yield bridge
    bridge.store.close()


PATHS = ["/admin/status", "/admin/events", "/admin/events?format=csv",
         f"/admin/consent/{PARTICIPANT}"]
BAD_HEADERS = [
    {}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"}, {"Authorization": "Bearer"},
    {"Authorization": ADMIN_TOKEN},
]


def test_without_the_right_token_401(bridge: Bridge) -> None:
    for path in PATHS:
        for headers in BAD_HEADERS:
            response = bridge.client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer realm="bridge-admin"')
            assert ('error="invalid_token"' in challenge) == bool(headers)
            assert response.get_json() == {"error": "a valid bearer token is required"}
            assert "+1555" not in response.get_data(as_text=True)
        assert bridge.client.get(path, headers=AUTH).status_code == 200


def test_admin_api_is_off_without_a_token(tmp_path: Path, sim: RedcapSimulator) -> None:
    config = make_config(tmp_path, [project_config(sim, sim.add_project(classic_project()))])
    bridge = Bridge(config)
    try:
        for path in ("/admin/status", "/admin/events", f"/admin/consent/{PARTICIPANT}"):
            assert bridge.client.get(path, headers=AUTH).status_code == 404
    finally:
        bridge.store.close()


def test_status(bridge: Bridge) -> None:
    response = bridge.client.get("/admin/status", headers=AUTH)
    assert response.status_code == 200
    [status] = response.get_json()["projects"]
    assert status["project"] == "heart-study"
    assert status["opted_out"] == 1
    assert status["jobs"] == {"applied": 1, "help": 1}
    assert status["pending"] == 0 and status["failed"] == 0


def test_events_json_masks_unless_asked(bridge: Bridge) -> None:
    events = bridge.client.get("/admin/events", headers=AUTH).get_json()["events"]
    assert [(e["event"], e["outcome"], e["phone"]) for e in events] == [
        ("stop", "applied", "+1555***5309"), ("help", "help", "+1202***0143")]
    shown = bridge.client.get("/admin/events?show_phone=true&status=applied",
                              headers=AUTH).get_json()["events"]
    assert [e["phone"] for e in shown] == [PARTICIPANT]


def test_events_csv_by_format_or_accept_header(bridge: Bridge) -> None:
    for response in (
        bridge.client.get("/admin/events?format=csv", headers=AUTH),
        bridge.client.get("/admin/events", headers={**AUTH, "Accept": "text/csv"}),
    ):
        assert response.status_code == 200
        assert response.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert [row["outcome"] for row in rows] == ["applied", "help"]


def test_a_long_history_streams_whole_and_in_order(bridge: Bridge) -> None:
    """More events than one read batch: every one arrives, oldest first, from a streamed
    answer (a long history is never built in memory at once)."""
    senders = [f"+1312555{n:04d}" for n in range(1200)]
    for sender in senders:
        bridge.text("STOP", sender)
    for query in ("", "?format=csv"):
        response = bridge.client.get(f"/admin/events{query}", headers=AUTH, buffered=False)
        assert response.status_code == 200
        chunks = list(response.response)  # what the server is handed, piece by piece
        assert len(chunks) > len(senders)  # an event at a time, never one body of them all
        text = b"".join(chunks).decode()
        events = (list(csv.DictReader(io.StringIO(text))) if query
                  else json.loads(text)["events"])
        assert len(events) == 2 + len(senders)
        assert [int(e["id"]) for e in events] == sorted(int(e["id"]) for e in events)
        assert [e["time"] for e in events] == sorted(e["time"] for e in events)
        assert {e["phone"] for e in events[2:]} == {"+1312***" + s[-4:] for s in senders}
    newest = bridge.client.get("/admin/events?limit=600&show_phone=1",
                               headers=AUTH).get_json()["events"]
    assert [e["phone"] for e in newest] == senders[-600:]


def test_events_filters(bridge: Bridge) -> None:
    def outcomes(query: str) -> list[str]:
        response = bridge.client.get(f"/admin/events?{query}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [event["outcome"] for event in response.get_json()["events"]]

    assert outcomes("project=heart-study") == ["applied", "help"]
    assert outcomes("phone=%28202%29+555-0143") == ["help"]
    assert outcomes("since=2999-01-01") == []
    assert outcomes("status=help") == ["help"]
    assert outcomes("limit=1") == ["help"]


@pytest.mark.parametrize(("query", "status", "message"), [
    ("project=nope", 404, "unknown project 'nope'"),
    ("since=soon", 400, "not a date: 'soon'"),
    ("phone=abc", 400, "not a phone number: 'abc'"),
    ("status=done", 400, "unknown status 'done'"),
    ("format=xml", 400, "unknown format 'xml'"),
    ("limit=0", 400, "limit must be a whole number above 0"),
])
def test_events_errors(bridge: Bridge, query: str, status: int, message: str) -> None:
    response = bridge.client.get(f"/admin/events?{query}", headers=AUTH)
    assert response.status_code == status
    assert message in response.get_json()["error"]


def test_consent(bridge: Bridge) -> None:
    response = bridge.client.get("/admin/consent/(555) 867-5309", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert body["phone"] == PARTICIPANT
    assert [(s["project"], s["state"], s["records"]) for s in body["states"]] == [
        ("heart-study", "opted out", ["1"])]
    assert [e["outcome"] for e in body["history"]] == ["applied"]
    unknown = bridge.client.get("/admin/consent/+16175550100", headers=AUTH).get_json()
    assert unknown == {"phone": "+16175550100", "states": [], "history": []}
    assert bridge.client.get("/admin/consent/12", headers=AUTH).status_code == 400
    assert bridge.client.get(f"/admin/consent/{PARTICIPANT}?project=nope",
                             headers=AUTH).status_code == 404


def test_admin_api_in_a_real_process(tmp_path: Path, sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    port = free_port()
    config = bridge_yaml(tmp_path, [project_entry(sim, token)], port=port,
                         extra={"admin": {"token": "${BRIDGE_ADMIN_TOKEN}"}})
    with BridgeProcess(config, port, env={"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}) as process:
        assert requests.get(process.url + "/admin/status", timeout=5).status_code == 401
        wrong = requests.get(process.url + "/admin/status", timeout=5,
                             headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        response = requests.get(process.url + "/admin/status", headers=AUTH, timeout=5)
        assert response.status_code == 200
        assert response.json()["projects"][0]["project"] == "heart-study"
        empty = requests.get(process.url + "/admin/events?format=csv", headers=AUTH, timeout=5)
        assert empty.text.splitlines() == [
            "id,time,project,phone,event,records,outcome,attempts,last_error,completed_at,"
            "message_sid"]
    assert ADMIN_TOKEN not in process.logs()
