"""The signature check as a pure function: every value of a repeated name is signed."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict

from bridge.inbound import SignatureError, sign, verify_signature
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
