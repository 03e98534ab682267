"""The Twilio edge: every status code of POST /twilio/sms, and what gets stored."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from bridge.inbound import EMPTY_TWIML, sign
from bridge.sim import RedcapSimulator
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_URL,
    SUBACCOUNT_SID,
    SUBACCOUNT_TOKEN,
    WEBHOOK_URL,
    Bridge,
    classic_project,
    project_config,
    replace,
    twilio_params,
)


@pytest.fixture
def bridge(sim: RedcapSimulator, make_bridge: Callable[..., Bridge]) -> Bridge:
    token = sim.add_project(classic_project({"1": "(555) 867-5309"}))
    return make_bridge([project_config(sim, token)])


def stored_messages(bridge: Bridge) -> int:
    return bridge.store.read().execute("SELECT COUNT(*) FROM messages").fetchone()[0]


def test_signed_stop_is_stored_and_answered_with_empty_twiml(bridge: Bridge) -> None:
    response = bridge.text("STOP")
    assert response.status_code == 200
    assert response.content_type.startswith("text/xml")
    assert response.get_data(as_text=True) == EMPTY_TWIML
    assert bridge.job_statuses() == ["pending"]


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl", None])
def test_missing_or_wrong_signature_is_403_and_stores_nothing(bridge: Bridge,
                                                              signature: str | None) -> None:
    params = twilio_params("STOP")
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    response = bridge.client.post("/twilio/sms", data=params, headers=headers,
                                  base_url=PUBLIC_URL)
    assert response.status_code == 403
    assert stored_messages(bridge) == 0


def test_signature_for_another_token_is_403(bridge: Bridge) -> None:
    assert bridge.post(twilio_params("STOP"), token="f" * 32).status_code == 403
    assert stored_messages(bridge) == 0


@pytest.mark.parametrize("field", ["Body", "From", "To", "OptOutType"])
def test_any_altered_value_breaks_the_signature(bridge: Bridge, field: str) -> None:
    params = twilio_params("hello", opt_out_type="HELP")
    signature = sign(WEBHOOK_URL, params, AUTH_TOKEN)
    params[field] = params[field] + " "
    assert bridge.post(params, signature=signature).status_code == 403


def test_signature_checked_against_public_url_not_the_internal_one(bridge: Bridge) -> None:
    params = twilio_params("STOP")
    internal = sign("http://127.0.0.1:8080/twilio/sms", params, AUTH_TOKEN)
    assert bridge.post(params, signature=internal).status_code == 403
    assert bridge.post(params, url=WEBHOOK_URL).status_code == 200


def test_query_string_is_part_of_the_signed_url(bridge: Bridge) -> None:
    params = twilio_params("STOP")
    signature = sign(WEBHOOK_URL + "?study=heart", params, AUTH_TOKEN)
    response = bridge.client.post("/twilio/sms?study=heart", data=params, base_url=PUBLIC_URL,
                                  headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    dropped = bridge.client.post("/twilio/sms", data=twilio_params("STOP"), base_url=PUBLIC_URL,
                                 headers={"X-Twilio-Signature": signature})
    assert dropped.status_code == 403


def test_subaccount_requests_are_checked_with_the_subaccount_token(bridge: Bridge) -> None:
    params = twilio_params("STOP", account=SUBACCOUNT_SID)
    assert bridge.post(params, token=AUTH_TOKEN).status_code == 403
    assert bridge.post(params, token=SUBACCOUNT_TOKEN).status_code == 200


def test_unknown_account_is_refused_even_when_correctly_signed(bridge: Bridge) -> None:
    stranger = "AC" + "9" * 32
    params = twilio_params("STOP", account=stranger)
    assert bridge.post(params, token="9" * 32).status_code == 403
    assert stored_messages(bridge) == 0


@pytest.mark.parametrize("missing", ["From", "MessageSid"])
def test_signed_but_malformed_is_400(bridge: Bridge, missing: str) -> None:
    params = twilio_params("STOP")
    del params[missing]
    if missing == "MessageSid":
        del params["SmsSid"], params["SmsMessageSid"]
    assert bridge.post(params).status_code == 400
    assert stored_messages(bridge) == 0


def test_oversized_body_is_413_before_parsing(bridge: Bridge) -> None:
    params = twilio_params("x" * 100_000)
    assert bridge.post(params).status_code == 413
    assert stored_messages(bridge) == 0


def test_extra_unknown_parameters_are_accepted(bridge: Bridge) -> None:
    params = twilio_params("STOP")
    params["SomethingTwilioAddedLater"] = "value"
    params["MediaUrl0"] = "https://api.twilio.com/media/1"
    assert bridge.post(params).status_code == 200


def test_repeated_message_sid_is_200_and_creates_no_new_job(bridge: Bridge) -> None:
    params = twilio_params("STOP")
    for _ in range(3):
        assert bridge.post(params).status_code == 200
    assert bridge.job_statuses() == ["pending"]
    assert stored_messages(bridge) == 1


def test_unrouted_message_is_recorded_and_answered_200(bridge: Bridge) -> None:
    params = twilio_params("STOP", to="+12025550123", service=None)
    assert bridge.post(params).status_code == 200
    assert bridge.job_statuses() == []
    row = bridge.store.read().execute("SELECT routed, intent FROM messages").fetchone()
    assert (row["routed"], row["intent"]) == (0, "stop")


def test_ordinary_reply_is_recorded_without_a_job(bridge: Bridge) -> None:
    bridge.text("See you Tuesday")
    assert bridge.job_statuses() == []
    assert stored_messages(bridge) == 1


def test_help_is_recorded_as_help_without_redcap_work(bridge: Bridge) -> None:
    bridge.text("HELP")
    assert bridge.job_statuses() == ["help"]


def test_opt_out_type_wins_over_the_body(bridge: Bridge) -> None:
    bridge.text("please", opt_out_type="STOP")
    bridge.text("stop", opt_out_type="START")
    rows = bridge.store.read().execute("SELECT action FROM jobs ORDER BY id").fetchall()
    assert [row["action"] for row in rows] == ["stop", "start"]


def test_routing_by_number_and_by_messaging_service(sim: RedcapSimulator,
                                                    make_bridge: Callable[..., Bridge]) -> None:
    token = sim.add_project(classic_project())
    by_number = project_config(sim, token, name="a", messaging_service_sids=())
    by_service = project_config(sim, token, name="b", numbers=())
    elsewhere = replace(by_number, name="c", numbers=("+12025550199",))
    bridge = make_bridge([by_number, by_service, elsewhere])
    bridge.text("STOP")
    rows = bridge.store.read().execute("SELECT project FROM jobs ORDER BY project").fetchall()
    assert [row["project"] for row in rows] == ["a", "b"]


def test_get_is_405_and_healthz_is_200(bridge: Bridge) -> None:
    response = bridge.client.get("/twilio/sms")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert bridge.client.get("/healthz").status_code == 200


def test_a_body_that_is_not_a_form_is_403_and_stores_nothing(bridge: Bridge) -> None:
    params = twilio_params("STOP")
    response = bridge.client.post(
        "/twilio/sms", json=params, base_url=PUBLIC_URL,
        headers={"X-Twilio-Signature": sign(WEBHOOK_URL, params, AUTH_TOKEN)})
    assert response.status_code == 403
    assert stored_messages(bridge) == 0


def test_a_bad_content_length_is_400(bridge: Bridge) -> None:
    answers: list[str] = []
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/twilio/sms", "CONTENT_LENGTH": "ten",
               "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "https",
               "HTTP_HOST": "bridge.example.edu"}
    body = b"".join(bridge.app.wsgi_app(environ, lambda status, headers: answers.append(status)))
    assert answers == ["400 Bad Request"]
    assert body == b"bad Content-Length\n"


def test_an_unexpected_error_is_503_with_the_traceback_in_the_log(
        bridge: Bridge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(_message: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(bridge.intake, "receive", broken)
    response = bridge.post(twilio_params("STOP"))
    assert response.status_code == 503
    assert response.get_data(as_text=True) == "temporarily unavailable\n"
    assert "RuntimeError: a bug" in caplog.text


def test_store_failure_is_503_not_500(bridge: Bridge) -> None:
    bridge.store.read().execute("DROP TABLE jobs")
    response = bridge.post(twilio_params("STOP"))
    assert response.status_code == 503
    assert stored_messages(bridge) == 0


def test_account_sid_used_for_the_right_token(bridge: Bridge) -> None:
    # The main account's signature over a body claiming the subaccount is refused.
    params = twilio_params("STOP", account=SUBACCOUNT_SID)
    assert bridge.post(params, token=AUTH_TOKEN).status_code == 403
    params = twilio_params("STOP", account=ACCOUNT_SID)
    assert bridge.post(params, token=SUBACCOUNT_TOKEN).status_code == 403
