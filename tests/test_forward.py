"""Forwarding to REDCap's survey endpoint, against a loopback server standing in for it.

The stand-in checks what REDCap would see: a signature valid for its own URL, the participant's
cookie, the exact fields. Twilio's side is the Flask test client (no cookie jar of its own, so
the Cookie header is exactly what the test sends, as Twilio would).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import REGISTRY
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from bridge.config import ForwardConfig, ServerConfig
from bridge.forward import Forwarder, rewrite_set_cookie
from bridge.inbound import EMPTY_TWIML, sign
from bridge.sim import RedcapSimulator
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BRIDGE_NUMBER,
    PUBLIC_URL,
    SUBACCOUNT_SID,
    SUBACCOUNT_TOKEN,
    WEBHOOK_URL,
    Bridge,
    classic_project,
    make_config,
    project_config,
    twilio_params,
)
from tests.process import BridgeProcess, free_port, write_config
from tests.survey_endpoint import SURVEY_TWIML, SurveyEndpoint


@pytest.fixture
def endpoint() -> Iterator[SurveyEndpoint]:
    server = SurveyEndpoint()
    yield server
    server.close()


@pytest.fixture
def forwarding(sim: RedcapSimulator, make_bridge: Callable[..., Bridge],
               endpoint: SurveyEndpoint) -> Callable[..., Bridge]:
    """A bridge whose one project forwards to ``path`` on the stand-in."""
    token = sim.add_project(classic_project({"1": "(555) 867-5309"}))

    def build(path: str = "/surveys/", timeout: float = 5.0, url: str | None = None) -> Bridge:
        target = ForwardConfig(url or endpoint.url(path), timeout_seconds=timeout)
        return make_bridge([project_config(sim, token, forward=target)])

    return build


def post(bridge: Bridge, params: dict[str, str], *, headers: dict[str, str] | None = None,
         token: str = AUTH_TOKEN) -> TestResponse:
    client = bridge.app.test_client(use_cookies=False)
    sent = {"X-Twilio-Signature": sign(WEBHOOK_URL, params, token), **(headers or {})}
    return client.post("/twilio/sms", data=params, headers=sent, base_url=PUBLIC_URL)


def forwards(result: str) -> float:
    return REGISTRY.get_sample_value("bridge_forwards_total", {"result": result}) or 0.0


def stored(bridge: Bridge) -> int:
    return bridge.store.read().execute("SELECT COUNT(*) FROM messages").fetchone()[0]


def test_target_gets_the_exact_fields_a_signature_for_its_own_url_and_the_cookie(
        forwarding: Callable[..., Bridge], endpoint: SurveyEndpoint) -> None:
    bridge = forwarding()
    params = twilio_params("Seven hours", opt_out_type=None)
    params["AddOns"] = '{"status":"successful","results":{}}'
    params["Body"] = "Seven  hours & a nap = ok? ünïcode ✓"
    response = post(bridge, params, headers={
        "Cookie": "PHPSESSID=abc123; survey_q=1", "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": "idem-1"})

    assert response.status_code == 200
    [received] = endpoint.received
    assert received.path == "/surveys/"
    assert received.fields == list(params.items())
    signature = received.headers["X-Twilio-Signature"]
    validator = RequestValidator(AUTH_TOKEN)
    assert validator.validate(received.url, MultiDict(received.fields), signature)
    assert not validator.validate(WEBHOOK_URL, MultiDict(received.fields), signature)
    assert received.headers["Cookie"] == "PHPSESSID=abc123; survey_q=1"
    assert received.headers["User-Agent"] == "TwilioProxy/1.1"
    assert received.headers["I-Twilio-Idempotency-Token"] == "idem-1"
    assert received.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_twilio_gets_the_targets_twiml_and_cookies_scoped_to_the_bridge(
        forwarding: Callable[..., Bridge], endpoint: SurveyEndpoint) -> None:
    bridge = forwarding()
    before = forwards("ok")
    response = post(bridge, twilio_params("7"))
    assert response.status_code == 200
    assert response.get_data(as_text=True) == SURVEY_TWIML
    assert response.content_type == "text/xml; charset=utf-8"
    assert response.headers.getlist("Set-Cookie") == [
        "PHPSESSID=r3dc4p; HttpOnly; Path=/",
        "survey_q=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/",
        "visit=1; Path=/",
    ]
    assert forwards("ok") == before + 1


def test_forward_happens_after_the_message_is_stored(
        forwarding: Callable[..., Bridge], endpoint: SurveyEndpoint) -> None:
    bridge = forwarding()
    params = twilio_params("STOP")
    endpoint.on_request = lambda: bool(bridge.store.jobs_for_message(params["MessageSid"]))
    assert post(bridge, params).status_code == 200
    assert [r.stored_first for r in endpoint.received] == [True]


def test_subaccount_message_is_signed_with_the_subaccount_token(
        forwarding: Callable[..., Bridge], endpoint: SurveyEndpoint) -> None:
    bridge = forwarding()
    params = twilio_params("STOP", account=SUBACCOUNT_SID)
    assert post(bridge, params, token=SUBACCOUNT_TOKEN).status_code == 200
    [received] = endpoint.received
    assert RequestValidator(SUBACCOUNT_TOKEN).validate(
        received.url, MultiDict(received.fields), received.headers["X-Twilio-Signature"])


def test_slow_target_gets_an_empty_answer_in_time_and_the_stop_is_kept(
        forwarding: Callable[..., Bridge], endpoint: SurveyEndpoint) -> None:
    bridge = forwarding("/slow/", timeout=0.5)
    before = forwards("timeout")
    started = time.monotonic()
    response = post(bridge, twilio_params("STOP"))
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.get_data(as_text=True) == EMPTY_TWIML
    assert response.headers.getlist("Set-Cookie") == []
    assert 0.5 <= elapsed < 1.5  # the stand-in takes 2 s; the margin absorbs a loaded host
    assert bridge.job_statuses() == ["pending"]
    assert forwards("timeout") == before + 1


@pytest.mark.parametrize(("path", "result"), [
    ("/error/", "http_error"),
    ("/redirect/", "http_error"),
    ("/big/", "too_large"),
    (None, "connection_error"),
])
def test_failing_target_gets_an_empty_answer_and_is_counted(
        forwarding: Callable[..., Bridge], endpoint: SurveyEndpoint, path: str | None,
        result: str) -> None:
    url = endpoint.url(path) if path else f"http://127.0.0.1:{free_port()}/surveys/"
    bridge = forwarding(url=url)
    before = forwards(result)
    response = post(bridge, twilio_params("STOP"))
    assert response.status_code == 200
    assert response.get_data(as_text=True) == EMPTY_TWIML
    assert response.content_type.startswith("text/xml")
    assert response.headers.getlist("Set-Cookie") == []
    assert bridge.job_statuses() == ["pending"]
    assert forwards(result) == before + 1
    assert [r.path for r in endpoint.received] == ([path] if path else [])  # no redirect hop


def test_non_xml_answer_is_not_sent_to_the_participant_but_its_cookie_is_kept(
        forwarding: Callable[..., Bridge], endpoint: SurveyEndpoint) -> None:
    bridge = forwarding("/plain/")
    before = forwards("not_twiml")
    response = post(bridge, twilio_params("7"))
    assert response.get_data(as_text=True) == EMPTY_TWIML
    assert response.content_type.startswith("text/xml")
    assert response.headers.getlist("Set-Cookie") == ["PHPSESSID=r3dc4p; HttpOnly; Path=/"]
    assert forwards("not_twiml") == before + 1


def test_a_twilio_retry_is_forwarded_again_but_stored_once(
        forwarding: Callable[..., Bridge], endpoint: SurveyEndpoint) -> None:
    bridge = forwarding()
    params = twilio_params("STOP")
    for _ in range(2):
        assert post(bridge, params).get_data(as_text=True) == SURVEY_TWIML
    assert len(endpoint.received) == 2
    assert stored(bridge) == 1
    assert bridge.job_statuses() == ["pending"]


def test_cookies_never_pass_from_one_participant_to_another(
        forwarding: Callable[..., Bridge], endpoint: SurveyEndpoint) -> None:
    bridge = forwarding()
    post(bridge, twilio_params("7", "+15558675309"), headers={"Cookie": "PHPSESSID=alice"})
    post(bridge, twilio_params("8", "+12025550143"))
    assert endpoint.received[0].headers["Cookie"] == "PHPSESSID=alice"
    assert "Cookie" not in endpoint.received[1].headers


def test_unrouted_and_unsigned_messages_are_not_forwarded(
        forwarding: Callable[..., Bridge], endpoint: SurveyEndpoint) -> None:
    bridge = forwarding()
    assert post(bridge, twilio_params("STOP", to="+12025550199", service=None)
                ).get_data(as_text=True) == EMPTY_TWIML
    response = bridge.client.post("/twilio/sms", data=twilio_params("STOP"),
                                  headers={"X-Twilio-Signature": "bm9wZQ=="},
                                  base_url=PUBLIC_URL)
    assert response.status_code == 403
    assert endpoint.received == []


def test_two_projects_with_the_same_url_forward_once(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge],
        endpoint: SurveyEndpoint) -> None:
    target = ForwardConfig(endpoint.url("/surveys/"), 5.0)
    projects = [project_config(sim, sim.add_project(classic_project()), name=name,
                               forward=target) for name in ("heart-study", "sleep-study")]
    bridge = make_bridge(projects)
    assert post(bridge, twilio_params("STOP")).get_data(as_text=True) == SURVEY_TWIML
    assert len(endpoint.received) == 1
    assert sorted(bridge.job_statuses()) == ["pending", "pending"]


def test_two_urls_each_get_the_message_and_the_first_projects_answer_goes_back(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge],
        endpoint: SurveyEndpoint) -> None:
    first = project_config(sim, sim.add_project(classic_project()), name="b-first",
                           forward=ForwardConfig(endpoint.url("/other/"), 5.0))
    second = project_config(sim, sim.add_project(classic_project()), name="a-second",
                            forward=ForwardConfig(endpoint.url("/surveys/"), 5.0))
    bridge = make_bridge([first, second])
    response = post(bridge, twilio_params("7"), headers={"Cookie": "PHPSESSID=abc"})
    assert response.get_data(as_text=True) == SURVEY_TWIML.replace("2", "9")
    deadline = time.monotonic() + 5
    while len(endpoint.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(r.path for r in endpoint.received) == ["/other/", "/surveys/"]
    assert all(r.headers["Cookie"] == "PHPSESSID=abc" for r in endpoint.received)


def test_only_projects_with_forward_are_forwarded(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge],
        endpoint: SurveyEndpoint) -> None:
    plain = project_config(sim, sim.add_project(classic_project()), name="plain",
                           numbers=("+12025550100",), messaging_service_sids=())
    forwarded = project_config(sim, sim.add_project(classic_project()), name="forwarded",
                               forward=ForwardConfig(endpoint.url("/surveys/"), 5.0))
    bridge = make_bridge([plain, forwarded])
    post(bridge, twilio_params("STOP", to="+12025550100", service=None))
    assert endpoint.received == []
    assert post(bridge, twilio_params("7")).get_data(as_text=True) == SURVEY_TWIML
    assert len(endpoint.received) == 1


def test_without_forward_targets_the_forwarder_is_idle(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge([project_config(sim, sim.add_project(classic_project()))])
    forwarder: Forwarder = bridge.app.extensions["bridge"]["forwarder"]
    assert not forwarder.enabled
    threads = threading.active_count()
    assert post(bridge, twilio_params("STOP")).get_data(as_text=True) == EMPTY_TWIML
    assert threading.active_count() == threads


def test_close_waits_for_a_secondary_forward_and_records_its_outcome(
        sim: RedcapSimulator, make_bridge: Callable[..., Bridge],
        endpoint: SurveyEndpoint) -> None:
    """At shutdown, a forward nobody waits for is finished and counted, not dropped."""
    endpoint.slow_seconds = 0.5
    first = project_config(sim, sim.add_project(classic_project()), name="b-first",
                           forward=ForwardConfig(endpoint.url("/surveys/"), 5.0))
    second = project_config(sim, sim.add_project(classic_project()), name="a-second",
                            forward=ForwardConfig(endpoint.url("/slow/"), 5.0))
    bridge = make_bridge([first, second])
    forwarder: Forwarder = bridge.app.extensions["bridge"]["forwarder"]
    ok = forwards("ok")
    before = set(threading.enumerate())  # other tests' bridges may have pools of their own
    assert post(bridge, twilio_params("7")).get_data(as_text=True) == SURVEY_TWIML
    assert forwards("ok") == ok + 1  # the first project's answer; the slow one still runs
    pool = [t for t in threading.enumerate() if t not in before and t.name.startswith("forward")]
    assert pool
    forwarder.close()
    assert forwards("ok") == ok + 2
    assert not any(t.is_alive() for t in pool)


def test_a_hung_target_cannot_hold_the_threads_new_messages_need(
        tmp_path: Path, sim: RedcapSimulator, endpoint: SurveyEndpoint) -> None:
    target = ForwardConfig(endpoint.url("/slow/"), timeout_seconds=1.0)
    config = make_config(tmp_path, [project_config(sim, sim.add_project(classic_project()),
                                                   forward=target)])
    bridge = Bridge(dataclasses.replace(config, server=ServerConfig(public_url=PUBLIC_URL,
                                                                    threads=2)))
    try:
        assert bridge.app.extensions["bridge"]["forwarder"].limit == 1
        before = forwards("busy")
        first: list[TestResponse] = []
        waiting = threading.Thread(target=lambda: first.append(post(bridge, twilio_params("7"))))
        waiting.start()
        deadline = time.monotonic() + 5
        while not endpoint.received and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        second = post(bridge, twilio_params("STOP", "+12025550143"))
        assert time.monotonic() - started < 0.5
        assert second.get_data(as_text=True) == EMPTY_TWIML
        assert forwards("busy") == before + 1
        waiting.join(5)
        assert first[0].get_data(as_text=True) == EMPTY_TWIML  # timed out meanwhile
        assert len(endpoint.received) == 1
        assert stored(bridge) == 2
        assert bridge.job_statuses() == ["pending"]
    finally:
        bridge.store.close()


@pytest.mark.parametrize(("header", "expected"), [
    ("a=1", "a=1; Path=/"),
    ("a=1; Domain=.example.edu; Path=/redcap/; Secure; HttpOnly; SameSite=Lax",
     "a=1; Secure; HttpOnly; SameSite=Lax; Path=/"),
    ("a=x=y; path=/p; DOMAIN=h", "a=x=y; Path=/"),
])
def test_set_cookie_is_rescoped_to_the_bridge(header: str, expected: str) -> None:
    assert rewrite_set_cookie(header) == expected


def test_forwarding_through_a_real_bridge_process(tmp_path: Path, sim: RedcapSimulator,
                                                  endpoint: SurveyEndpoint) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "bridge.yaml", port=port,
        accounts=[{"account_sid": ACCOUNT_SID, "auth_token": "${TWILIO_AUTH_TOKEN}"}],
        projects=[{
            "name": "heart-study", "twilio": {"numbers": [BRIDGE_NUMBER]},
            "redcap": {"url": sim.api_url, "token": sim.add_project(classic_project())},
            "phone_field": "mobile", "opt_out_field": "sms_opt_out",
            "forward": {"url": endpoint.url("/surveys/"), "timeout_seconds": 5},
        }])
    with BridgeProcess(config, port, env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN}) as bridge:
        url = bridge.url + "/twilio/sms"
        params = twilio_params("7")
        response = requests.post(url, data=params, timeout=10, headers={
            "X-Twilio-Signature": sign(url, params, AUTH_TOKEN), "Cookie": "PHPSESSID=abc"})
        assert response.status_code == 200
        assert response.text == SURVEY_TWIML
        assert response.raw.headers.getlist("Set-Cookie") == [
            "PHPSESSID=r3dc4p; HttpOnly; Path=/",
            "survey_q=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/",
            "visit=1; Path=/",
        ]
        [received] = endpoint.received
        assert received.headers["Cookie"] == "PHPSESSID=abc"
        assert RequestValidator(AUTH_TOKEN).validate(
            received.url, MultiDict(received.fields), received.headers["X-Twilio-Signature"])
        assert "PHPSESSID" not in bridge.logs()
        assert bridge.stop() == 0
