"""Flask app factory and routes. Routes only parse, call a service function, map errors.

Status codes at the Twilio edge are deliberate: 403 for anything not provably from Twilio
(nothing stored), 400 for a signed but malformed message, 413 for an oversized body, 503 when
the store cannot take the event (so Twilio's connection-override retries, if configured, try
again), 200 with empty TwiML otherwise, including duplicates and unrouted messages. A project
with ``forward`` gets its target's answer instead (``bridge.forward``). ``POST /twilio/events``
takes Event Streams deliveries with the same codes (``bridge.events``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from werkzeug.exceptions import HTTPException

from bridge import events, history, metrics
from bridge.admin import admin_blueprint
from bridge.config import Config
from bridge.forward import PASSED_HEADERS, Forwarder, ForwardRequest, Relay
from bridge.inbound import (
    EMPTY_TWIML,
    TWIML_CONTENT_TYPE,
    MalformedMessage,
    SignatureError,
    parse_message,
    verify_signature,
)
from bridge.intake import Intake
from bridge.store import OPEN_STATUSES, Store, StoreError

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], str | None]  # None when ready, else the reason


def create_app(config: Config, store: Store, intake: Intake,
               readiness: ReadinessCheck | None = None,
               forwarder: Forwarder | None = None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = config.server.max_body_bytes
    forwarder = forwarder or Forwarder(config.projects, server_threads=config.server.threads)
    app.extensions["bridge"] = {"config": config, "store": store, "intake": intake,
                                "forwarder": forwarder}

    @app.post("/twilio/sms")
    def twilio_sms() -> Response:
        if (request.content_length or 0) > config.server.max_body_bytes:
            return _refuse("sms", 413, "request body too large")
        params = request.form
        token = config.auth_token(params.get("AccountSid", ""))
        try:
            verify_signature(twilio_url(config.server.public_url), params,
                             request.headers.get("X-Twilio-Signature"), token)
        except SignatureError as exc:
            return _refuse("sms", 403, str(exc))
        try:
            message = parse_message(params.to_dict())
        except MalformedMessage as exc:
            return _refuse("sms", 400, str(exc))
        try:
            result = intake.receive(message)
        except StoreError:
            logger.exception("inbound %s: could not be stored", message.message_sid)
            return _refuse("sms", 503, "the event could not be stored; try again")
        outcome = "duplicate" if result.duplicate else "accepted" if result.routed else "unrouted"
        metrics.WEBHOOKS.labels(endpoint="sms", outcome=outcome).inc()
        if forwarder.enabled and result.routed:
            return relayed(forwarder.relay((d.project for d in result.decisions),
                                           _forward_request(message.message_sid, token or "")))
        return twiml()

    @app.post("/twilio/events")
    def twilio_events() -> Response:
        request.max_content_length = events.MAX_BODY_BYTES
        try:
            outcomes = events.receive_events(config, intake, twilio_url(config.server.public_url),
                                             request.get_data(),
                                             request.headers.get("X-Twilio-Signature"))
        except SignatureError as exc:
            return _refuse("events", 403, str(exc))
        except events.MalformedEvents as exc:
            return _refuse("events", 400, str(exc))
        except StoreError:
            logger.exception("event stream delivery could not be stored")
            return _refuse("events", 503, "the events could not be stored; try again")
        for outcome in outcomes:
            metrics.WEBHOOKS.labels(endpoint="events", outcome=outcome).inc()
        return Response("ok\n", mimetype="text/plain")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/readyz")
    def readyz() -> Response:
        reason = None
        try:
            store.check_writable()
        except StoreError as exc:
            reason = f"store not writable: {exc}"
        if reason is None and readiness is not None:
            reason = readiness()
        if reason:
            return Response(f"not ready: {reason}\n", status=503, mimetype="text/plain")
        return Response("ready\n", mimetype="text/plain")

    store_gauges = CollectorRegistry(auto_describe=False)
    store_gauges.register(metrics.StoreCollector(
        lambda: history.queue_state(store), [project.name for project in config.projects],
        history.JOB_STATUSES, OPEN_STATUSES))

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(metrics.exposition(store_gauges), content_type=CONTENT_TYPE_LATEST)

    if config.admin is not None:
        app.register_blueprint(admin_blueprint(config, store, config.admin.token))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if request.path.startswith("/twilio/"):
            metrics.WEBHOOKS.labels(endpoint=request.path.rsplit("/", 1)[-1],
                                    outcome=f"http_{exc.code}").inc()
        return Response(f"{exc.name}\n", status=exc.code or 500, mimetype="text/plain")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # Deliberately 503, not an unhandled 500: nothing was acknowledged, so Twilio (with
        # connection overrides) may retry, and the operator finds the traceback in the log.
        logger.exception("unexpected error handling %s %s", request.method, request.path)
        return Response("temporarily unavailable\n", status=503, mimetype="text/plain")

    return app


def twiml(body: str = EMPTY_TWIML) -> Response:
    return Response(body, status=200, content_type=TWIML_CONTENT_TYPE)


def relayed(relay: Relay) -> Response:
    response = Response(relay.body, status=200, content_type=relay.content_type)
    for cookie in relay.set_cookies:
        response.headers.add("Set-Cookie", cookie)
    return response


def _forward_request(message_sid: str, token: str) -> ForwardRequest:
    """The parts of this Twilio request that a forward target gets."""
    return ForwardRequest(
        message_sid=message_sid,
        fields=tuple(request.form.items(multi=True)),
        auth_token=token,
        cookie=request.headers.get("Cookie"),
        headers=tuple((name, request.headers[name]) for name in PASSED_HEADERS
                      if name in request.headers),
    )


def twilio_url(public_url: str | None) -> str:
    """The URL Twilio signed: the configured public base, or what this request came in on.

    The raw request URI is used when the WSGI server passes it on (exactly what Twilio sent,
    query string included); a path prefix stripped by a proxy belongs in ``public_url``.
    """
    environ = request.environ
    raw = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not raw:
        raw = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        if environ.get("QUERY_STRING"):
            raw += "?" + environ["QUERY_STRING"]
    if public_url:
        return public_url.rstrip("/") + raw
    return f"{request.scheme}://{request.host}{raw}"


def _refuse(endpoint: str, status: int, reason: str) -> Response:
    metrics.WEBHOOKS.labels(endpoint=endpoint, outcome=f"http_{status}").inc()
    logger.warning("refused %s %s from %s: %d %s", request.method, request.path,
                   request.remote_addr, status, reason)
    return Response(reason + "\n", status=status, mimetype="text/plain")
