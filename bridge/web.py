"""Flask app factory and routes. Routes only parse, call a service function, map errors.

``POST /twilio/sms``, the route every inbound text takes, is answered in front of Flask by
``bridge.sms_endpoint`` (Flask's per-request cost was half the webhook's). ``POST
/twilio/events`` takes Event Streams deliveries with the same status codes: 403 for anything
not provably from Twilio (nothing stored), 400 for a signed but malformed delivery, 503 when
the store cannot take it, never an unhandled 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from werkzeug.exceptions import HTTPException

from bridge import events, history, metrics
from bridge.admin import admin_blueprint
from bridge.config import Config
from bridge.forward import Forwarder
from bridge.inbound import SignatureError, signed_url
from bridge.intake import Intake
from bridge.sms_endpoint import SmsEndpoint, note_refusal
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

    @app.post("/twilio/events")
    def twilio_events() -> Response:
        request.max_content_length = events.MAX_BODY_BYTES
        try:
            url = signed_url(request.environ, config.server.public_url)
            outcomes = events.receive_events(config, intake, url, request.get_data(),
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

    app.wsgi_app = SmsEndpoint(config, intake, forwarder, app.wsgi_app)  # type: ignore[method-assign]
    return app


def _refuse(endpoint: str, status: int, reason: str) -> Response:
    note_refusal(endpoint, request.environ, status, reason)
    return Response(reason + "\n", status=status, mimetype="text/plain")
