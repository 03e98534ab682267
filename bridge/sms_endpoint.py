"""``POST /twilio/sms`` as a plain WSGI application: the hot path of a text blast.

Every inbound text comes through here, thousands a minute when a study's reminder is answered
with STOP. Measured (bench/README.md), Flask's request context, routing, form object and
response object cost about as much CPU per webhook as everything the bridge itself does, so
this one route is answered by a small WSGI callable in front of the Flask app. Every other
route (Event Streams, health, metrics, admin) stays in Flask, which this passes them to.

The status codes are deliberate: 403 for anything not provably from Twilio (nothing stored),
400 for a signed but malformed message, 405 for another method, 413 for an oversized body,
503 when the store cannot take the event (so Twilio's connection-override retries, if
configured, try again) or anything unexpected happens, and 200 with empty TwiML otherwise,
including duplicates and unrouted messages. A project with ``forward`` gets its target's
answer instead (``bridge.forward``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from bridge import metrics
from bridge.config import Config
from bridge.forward import PASSED_HEADERS, Forwarder, ForwardRequest, Relay
from bridge.inbound import (
    EMPTY_TWIML,
    TWIML_CONTENT_TYPE,
    Form,
    MalformedMessage,
    SignatureError,
    parse_message,
    signed_url,
    verify_signature,
)
from bridge.intake import Intake
from bridge.store import StoreError

logger = logging.getLogger(__name__)

PATH = "/twilio/sms"
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_TWIML = EMPTY_TWIML.encode()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class SmsEndpoint:
    """Answers ``/twilio/sms``; hands every other path to ``fallback`` (the Flask app)."""

    def __init__(self, config: Config, intake: Intake, forwarder: Forwarder,
                 fallback: WSGIApp) -> None:
        self.config = config
        self.intake = intake
        self.forwarder = forwarder
        self.fallback = fallback

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.fallback(environ, start_response)
        try:
            answer = self.answer(environ)
        except Exception:
            # Deliberately 503, not an unhandled 500: nothing was acknowledged, so Twilio (with
            # connection overrides) may retry, and the operator finds the traceback in the log.
            logger.exception("unexpected error handling %s %s", environ.get("REQUEST_METHOD"),
                             PATH)
            answer = Answer(503, b"temporarily unavailable\n")
        start_response(f"{answer.status} {HTTPStatus(answer.status).phrase}", [
            ("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body))),
            *answer.headers])
        return [answer.body]

    def answer(self, environ: dict[str, Any]) -> Answer:
        if environ.get("REQUEST_METHOD") != "POST":
            metrics.WEBHOOKS.labels(endpoint="sms", outcome="http_405").inc()
            return Answer(405, b"Method Not Allowed\n", headers=(("Allow", "POST"),))
        length = _content_length(environ)
        if length is None:
            return self._refuse(environ, 400, "bad Content-Length")
        if length > self.config.server.max_body_bytes:
            return self._refuse(environ, 413, "request body too large")
        form = Form.parse(environ["wsgi.input"].read(length) if length else b"",
                          environ.get("CONTENT_TYPE"))
        token = self.config.auth_token(form.get("AccountSid", ""))
        try:
            verify_signature(signed_url(environ, self.config.server.public_url), form,
                             environ.get("HTTP_X_TWILIO_SIGNATURE"), token)
        except SignatureError as exc:
            return self._refuse(environ, 403, str(exc))
        try:
            message = parse_message(form)
        except MalformedMessage as exc:
            return self._refuse(environ, 400, str(exc))
        try:
            result = self.intake.receive(message)
        except StoreError:
            logger.exception("inbound %s: could not be stored", message.message_sid)
            return self._refuse(environ, 503, "the event could not be stored; try again")
        outcome = "duplicate" if result.duplicate else "accepted" if result.routed else "unrouted"
        metrics.WEBHOOKS.labels(endpoint="sms", outcome=outcome).inc()
        if self.forwarder.enabled and result.routed:
            relay = self.forwarder.relay((d.project for d in result.decisions),
                                         _forward_request(environ, form, message.message_sid,
                                                          token or ""))
            return _relayed(relay)
        return Answer(200, _TWIML, TWIML_CONTENT_TYPE)

    @staticmethod
    def _refuse(environ: Mapping[str, Any], status: int, reason: str) -> Answer:
        note_refusal("sms", environ, status, reason)
        return Answer(status, (reason + "\n").encode())


def note_refusal(endpoint: str, environ: Mapping[str, Any], status: int, reason: str) -> None:
    """Count and log a refused Twilio request (both webhook routes, one line shape)."""
    metrics.WEBHOOKS.labels(endpoint=endpoint, outcome=f"http_{status}").inc()
    logger.warning("refused %s %s from %s: %d %s", environ.get("REQUEST_METHOD"),
                   environ.get("PATH_INFO"), environ.get("REMOTE_ADDR"), status, reason)


def _content_length(environ: Mapping[str, Any]) -> int | None:
    """The declared body length: 0 when absent, None when not a number."""
    raw = environ.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        return None
    return length if length >= 0 else None


def _relayed(relay: Relay) -> Answer:
    return Answer(200, relay.body, relay.content_type,
                  tuple(("Set-Cookie", cookie) for cookie in relay.set_cookies))


def _forward_request(environ: Mapping[str, Any], form: Form, message_sid: str,
                     token: str) -> ForwardRequest:
    """The parts of this Twilio request that a forward target gets."""
    headers = []
    for name in PASSED_HEADERS:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        if value is not None:
            headers.append((name, value))
    return ForwardRequest(message_sid=message_sid, fields=tuple(form.pairs), auth_token=token,
                          cookie=environ.get("HTTP_COOKIE"), headers=tuple(headers))
