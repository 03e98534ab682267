"""The signature check as a pure function: every value of a repeated name is signed."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from bridge.inbound import Form, SignatureError, sign, signed_url, verify_signature
from tests.conftest import AUTH_TOKEN, WEBHOOK_URL, twilio_params


def test_a_plain_mapping_and_a_flask_form_verify_alike() -> None:
    params = twilio_params("STOP")
    signature = sign(WEBHOOK_URL, params, AUTH_TOKEN)
    verify_signature(WEBHOOK_URL, params, signature, AUTH_TOKEN)
    verify_signature(WEBHOOK_URL, MultiDict(params), signature, AUTH_TOKEN)


def test_every_value_of_a_repeated_parameter_is_checked() -> None:
    form = MultiDict([*twilio_params("STOP").items(), ("MediaUrl", "a"), ("MediaUrl", "b")])
    signature = sign(WEBHOOK_URL, form, AUTH_TOKEN)
    verify_signature(WEBHOOK_URL, form, signature, AUTH_TOKEN)
    altered = form.copy()
    altered.setlist("MediaUrl", ["a", "c"])
    with pytest.raises(SignatureError):
        verify_signature(WEBHOOK_URL, altered, signature, AUTH_TOKEN)
    with pytest.raises(SignatureError):
        verify_signature(WEBHOOK_URL, form.to_dict(), signature, AUTH_TOKEN)  # one value only


def test_the_webhook_form_parser_keeps_every_value_and_verifies_like_a_flask_form() -> None:
    pairs = [*twilio_params("Café, STOP").items(), ("MediaUrl", "a"), ("MediaUrl", "b")]
    body = urlencode(pairs).encode()
    form = Form.parse(body, "application/x-www-form-urlencoded; charset=utf-8")
    assert form.pairs == pairs
    assert form["Body"] == "Café, STOP"
    assert form.getlist("MediaUrl") == ["a", "b"]
    signature = sign(WEBHOOK_URL, MultiDict(pairs), AUTH_TOKEN)
    verify_signature(WEBHOOK_URL, form, signature, AUTH_TOKEN)


def test_a_body_that_is_not_a_form_reads_as_an_empty_one() -> None:
    assert len(Form.parse(b'{"Body": "STOP"}', "application/json")) == 0
    assert len(Form.parse(b"", "application/x-www-form-urlencoded")) == 0
    assert Form.parse(b"Body=%FF%FE", "application/x-www-form-urlencoded")["Body"] == "\ufffd\ufffd"


@pytest.mark.parametrize(("configured", "signed"), [
    ("https://bridge.example.edu/twilio/sms", "https://bridge.example.edu:443/twilio/sms"),
    ("https://bridge.example.edu:443/twilio/sms", "https://bridge.example.edu/twilio/sms"),
    ("http://127.0.0.1:8080/twilio/sms", "http://127.0.0.1:8080/twilio/sms"),
])
def test_twilio_may_sign_the_url_with_or_without_its_port(configured: str, signed: str) -> None:
    params = twilio_params("STOP")
    verify_signature(configured, params, sign(signed, params, AUTH_TOKEN), AUTH_TOKEN)
    assert RequestValidator(AUTH_TOKEN).validate(configured, params,
                                                 sign(signed, params, AUTH_TOKEN))


def test_a_signature_for_another_url_or_port_is_refused() -> None:
    params = twilio_params("STOP")
    for signed in ("https://bridge.example.edu:8443/twilio/sms",
                   "https://other.example.edu/twilio/sms",
                   "http://bridge.example.edu/twilio/sms"):
        with pytest.raises(SignatureError):
            verify_signature(WEBHOOK_URL, params, sign(signed, params, AUTH_TOKEN), AUTH_TOKEN)


@pytest.mark.parametrize("header", ["", "not base64 at all", "é" * 28])
def test_a_malformed_signature_header_is_refused_not_an_error(header: str) -> None:
    with pytest.raises(SignatureError):
        verify_signature(WEBHOOK_URL, twilio_params("STOP"), header, AUTH_TOKEN)


def test_the_signed_url_is_the_public_one_or_what_the_request_came_in_on() -> None:
    environ = {"wsgi.url_scheme": "http", "HTTP_HOST": "10.0.0.5:8080",
               "SCRIPT_NAME": "", "PATH_INFO": "/twilio/sms", "QUERY_STRING": "a=1"}
    assert signed_url(environ, None) == "http://10.0.0.5:8080/twilio/sms?a=1"
    assert signed_url(environ, "https://bridge.example.edu/") == (
        "https://bridge.example.edu/twilio/sms?a=1")
    raw = {**environ, "REQUEST_URI": "/twilio/sms?a=%31"}
    assert signed_url(raw, "https://bridge.example.edu") == (
        "https://bridge.example.edu/twilio/sms?a=%31")
