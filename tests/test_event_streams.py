"""POST /twilio/events: Event Streams deliveries, signed as Twilio signs JSON webhooks.

Twilio calls the sink URL with ``?bodySHA256=<hex sha256 of the body>`` and signs that URL
(no body parameters) with the account's auth token; ``sign_events`` does the same.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable

import pytest
from twilio.request_validator import RequestValidator
from werkzeug.test import TestResponse

from bridge.config import ForwardConfig
from bridge.events import INBOUND_EVENT
from bridge.sim import RedcapSimulator
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BRIDGE_NUMBER,
    PARTICIPANT,
    PUBLIC_URL,
    SERVICE_SID,
    SUBACCOUNT_SID,
    SUBACCOUNT_TOKEN,
    Bridge,
    classic_project,
    project_config,
    twilio_params,
)
from tests.survey_endpoint import SurveyEndpoint

EVENTS_URL = PUBLIC_URL + "/twilio/events"


def inbound_event(body: str, sender: str = PARTICIPANT, *, sid: str | None = None,
                  account: str | None = ACCOUNT_SID, timestamp: str = "2025-03-02T14:05:07.000Z",
                  **extra: object) -> dict:
    """An inbound-message event as Twilio's docs show it (Messaging.InboundMessageV1/6)."""
    message_sid = sid or "SM" + uuid.uuid4().hex
    data: dict = {
        "messageSid": message_sid, "timestamp": timestamp, "accountSid": account,
        "eventName": INBOUND_EVENT, "from": sender, "to": BRIDGE_NUMBER, "numMedia": 0,
        "body": body, "toCountry": "US", "toState": "CA", "toCity": "", "toZip": "",
        "fromCountry": "US", "fromState": "", "fromCity": "", "fromZip": "",
        "messagingServiceSid": SERVICE_SID, "numSegments": 1, "recipients": [],
    }
    if account is None:
        del data["accountSid"]
    data.update(extra)
    return {
        "specversion": "1.0", "type": INBOUND_EVENT,
        "source": f"/2010-04-01/Accounts/{account or ACCOUNT_SID}/Messages/{message_sid}.json",
        "id": "EZ" + uuid.uuid4().hex, "dataschema":
        "https://events-schemas.twilio.com/Messaging.InboundMessageV1/6",
        "datacontenttype": "application/json", "time": timestamp, "data": data,
    }


def delivered_event() -> dict:
    return {
        "specversion": "1.0", "type": "com.twilio.messaging.message.delivered",
        "source": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/SM{uuid.uuid4().hex}.json",
        "id": "EZ" + uuid.uuid4().hex, "time": "2025-03-02T14:05:09.000Z",
        "dataschema": "https://events-schemas.twilio.com/Messaging.MessageStatus/7",
        "datacontenttype": "application/json",
        "data": {"messageSid": "SM" + uuid.uuid4().hex, "accountSid": ACCOUNT_SID,
                 "messageStatus": "DELIVERED", "to": PARTICIPANT, "from": BRIDGE_NUMBER},
    }


def sink_test_event() -> dict:
    """The event Twilio sends when a sink is tested: no account in data or source."""
    return {"specversion": "1.0", "type": "com.twilio.eventstreams.test-event",
            "source": "Sink", "id": ACCOUNT_SID, "time": "2025-03-02T14:00:00.000Z",
            "dataschema": "https://events-schemas.twilio.com/EventStreams.TestSink/1",
            "datacontenttype": "application/json", "data": {"test_id": str(uuid.uuid4())}}


def sign_events(body: bytes, token: str = AUTH_TOKEN) -> tuple[str, str]:
    """The path Twilio calls and the signature it sends for a JSON body."""
    path = "/twilio/events?bodySHA256=" + hashlib.sha256(body).hexdigest()
    return path, RequestValidator(token).compute_signature(PUBLIC_URL + path, {})


def deliver(bridge: Bridge, payload: object, *, token: str = AUTH_TOKEN,
            signature: str | None = None, path: str | None = None,
            body: bytes | None = None) -> TestResponse:
    raw = body if body is not None else json.dumps(payload).encode()
    signed_path, signed = sign_events(raw, token)
    headers = {} if signature == "" else {"X-Twilio-Signature": signature or signed}
    return bridge.client.post(path or signed_path, data=raw, headers=headers,
                              content_type="application/json", base_url=PUBLIC_URL)


@pytest.fixture
def bridge(sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> Bridge:
    token = sim.add_project(classic_project({"1": "(555) 867-5309"}))
    return make_bridge([project_config(sim, token)])


def messages(bridge: Bridge) -> list[dict]:
    rows = bridge.store.read().execute("SELECT * FROM messages ORDER BY id").fetchall()
    return [dict(row) for row in rows]


def test_signed_inbound_stop_becomes_a_job_at_twilios_time(bridge: Bridge) -> None:
    event = inbound_event("STOP")
    response = deliver(bridge, event)
    assert response.status_code == 200
    [message] = messages(bridge)
    assert message["message_sid"] == event["data"]["messageSid"]
    assert message["source"] == "events"
    assert message["from_phone"] == PARTICIPANT
    [job] = bridge.store.jobs_for_message(message["message_sid"])
    assert (job["action"], job["status"]) == ("stop", "pending")
    assert job["event_at"].startswith("2025-03-02T14:05:07")


def test_batch_takes_inbound_events_and_ignores_other_types(bridge: Bridge) -> None:
    batch = [inbound_event("STOP"), delivered_event(), inbound_event("hello", "+12025550143"),
             sink_test_event()]
    assert deliver(bridge, batch).status_code == 200
    assert [m["body"] for m in messages(bridge)] == ["STOP", "hello"]
    assert bridge.job_statuses() == ["pending"]


@pytest.mark.parametrize("webhook_first", [True, False])
def test_same_message_by_webhook_and_events_is_applied_once(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge], webhook_first: bool) -> None:
    project = classic_project({"1": "(555) 867-5309"})
    bridge = make_bridge([project_config(sim, sim.add_project(project))])
    params = twilio_params("STOP")
    event = inbound_event("STOP", sid=params["MessageSid"])
    if webhook_first:
        bridge.text("STOP", sid=params["MessageSid"])
        assert deliver(bridge, event).status_code == 200
    else:
        assert deliver(bridge, event).status_code == 200
        bridge.text("STOP", sid=params["MessageSid"])
    assert len(messages(bridge)) == 1
    assert messages(bridge)[0]["source"] == ("webhook" if webhook_first else "events")
    bridge.drain()
    assert bridge.job_statuses() == ["applied"]
    assert project.value("1", "sms_opted_out___1") == "1"
    assert sum(1 for call in sim.calls if call.action == "import") == 1


def test_redelivered_event_is_applied_once(bridge: Bridge) -> None:
    event = inbound_event("STOP")
    for _ in range(3):
        assert deliver(bridge, [event]).status_code == 200
    assert bridge.job_statuses() == ["pending"]


def test_account_is_taken_from_source_when_data_lacks_it(bridge: Bridge) -> None:
    assert deliver(bridge, inbound_event("STOP", account=None)).status_code == 200
    assert messages(bridge)[0]["account_sid"] == ACCOUNT_SID


def test_subaccount_events_are_checked_with_the_subaccount_token(bridge: Bridge) -> None:
    event = inbound_event("STOP", account=SUBACCOUNT_SID)
    assert deliver(bridge, event, token=AUTH_TOKEN).status_code == 403
    assert deliver(bridge, event, token=SUBACCOUNT_TOKEN).status_code == 200
    assert bridge.job_statuses() == ["pending"]


def test_sink_test_event_is_accepted_with_any_configured_token(bridge: Bridge) -> None:
    assert deliver(bridge, sink_test_event(), token=SUBACCOUNT_TOKEN).status_code == 200
    assert deliver(bridge, sink_test_event(), token="f" * 32).status_code == 403
    assert messages(bridge) == []


def test_opt_out_type_in_the_event_is_honoured(bridge: Bridge) -> None:
    deliver(bridge, inbound_event("Arrêtez svp", optOutType="STOP"))
    assert bridge.job_statuses() == ["pending"]
    assert messages(bridge)[0]["opt_out_type"] == "STOP"


@pytest.mark.parametrize("case", [
    "missing", "garbage", "other token", "unknown account", "no bodySHA256", "body changed",
    "wrong URL"])
def test_anything_not_provably_from_twilio_is_403_and_stores_nothing(bridge: Bridge,
                                                                     case: str) -> None:
    event = inbound_event("STOP")
    raw = json.dumps(event).encode()
    path, signature = sign_events(raw)
    kwargs: dict = {}
    if case == "missing":
        kwargs = {"signature": ""}
    elif case == "garbage":
        kwargs = {"signature": "bm90IGEgc2lnbmF0dXJl"}
    elif case == "other token":
        kwargs = {"token": "f" * 32}
    elif case == "unknown account":
        event = inbound_event("STOP", account="AC" + "9" * 32)
    elif case == "no bodySHA256":
        kwargs = {"path": "/twilio/events", "signature":
                  RequestValidator(AUTH_TOKEN).compute_signature(EVENTS_URL, {})}
    elif case == "body changed":
        kwargs = {"path": path, "signature": signature,
                  "body": raw.replace(b'"STOP"', b'"START"')}
    elif case == "wrong URL":
        kwargs = {"path": path + "&x=1", "signature": signature}
    response = deliver(bridge, event, **kwargs)
    assert response.status_code == 403, response.get_data(as_text=True)
    assert messages(bridge) == []


@pytest.mark.parametrize("body", [b"{not json", b"42", b'"STOP"', b"\xff\xfe{}"])
def test_a_body_that_is_not_events_is_400(bridge: Bridge, body: bytes) -> None:
    assert deliver(bridge, None, body=body).status_code == 400


def test_malformed_inbound_event_is_skipped_without_losing_the_rest(bridge: Bridge) -> None:
    broken = inbound_event("STOP")
    del broken["data"]["messageSid"]
    no_data = inbound_event("STOP")
    del no_data["data"]
    batch = [broken, no_data, "not an event", inbound_event("STOP")]
    assert deliver(bridge, batch).status_code == 200
    assert bridge.job_statuses() == ["pending"]


def test_store_failure_is_503_so_event_streams_retries(bridge: Bridge) -> None:
    bridge.store.read().execute("DROP TABLE jobs")
    assert deliver(bridge, inbound_event("STOP")).status_code == 503


def test_a_full_batch_larger_than_the_webhook_limit_is_taken(bridge: Bridge) -> None:
    batch = [inbound_event("STOP", f"+1202555{n:04d}") for n in range(120)]
    raw = json.dumps(batch).encode()
    assert len(raw) > bridge.config.server.max_body_bytes
    assert deliver(bridge, batch).status_code == 200
    assert len(messages(bridge)) == 120


def test_a_future_timestamp_is_clamped_to_now(bridge: Bridge) -> None:
    deliver(bridge, inbound_event("STOP", timestamp="2999-01-01T00:00:00.000Z"))
    [job] = bridge.store.read().execute("SELECT event_at FROM jobs").fetchall()
    assert not job["event_at"].startswith("2999")


def test_events_are_never_forwarded(sim: RedcapSimulator,
                                    make_bridge: Callable[..., Bridge]) -> None:
    endpoint = SurveyEndpoint()
    try:
        target = ForwardConfig(endpoint.url("/surveys/"), 5.0)
        bridge = make_bridge([project_config(sim, sim.add_project(classic_project()),
                                             forward=target)])
        assert deliver(bridge, inbound_event("hello")).status_code == 200
        bridge.text("hello again")
        assert [r.path for r in endpoint.received] == ["/surveys/"]  # the webhook's only
    finally:
        endpoint.close()
