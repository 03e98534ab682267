"""Admin HTTP API under ``/admin/``: the history and status, for dashboards and scripts.

Registered only when ``admin.token`` is configured; without it every ``/admin/`` URL is 404.
Every request needs ``Authorization: Bearer <token>``, compared in constant time; anything
else is 401 with ``WWW-Authenticate: Bearer``. Routes parse the query, call
``bridge.history`` and map its errors: 400 for a bad filter, 404 for an unknown project.

Answers carry full phone numbers where the caller asked by number (``/admin/consent/<phone>``)
and masked ones in listings unless ``show_phone=true``, as on the command line.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterable, Iterator

from flask import Blueprint, Response, jsonify, request

from bridge.config import Config
from bridge.history import (
    BadFilter,
    EventFilter,
    HistoryError,
    HistoryEvent,
    UnknownProject,
    check_project,
    consent_lookup,
    default_region,
    events_csv,
    iter_events,
    parse_phone,
    parse_since,
    parse_status,
    status_summary,
)
from bridge.store import Store

logger = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes")


def admin_blueprint(config: Config, store: Store, token: str) -> Blueprint:
    admin = Blueprint("admin", __name__, url_prefix="/admin")
    expected = token.encode()

    @admin.before_request
    def authenticate() -> Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
            return None
        # The route pattern, not the path: /admin/consent/<phone> carries a phone number.
        route = request.url_rule.rule if request.url_rule else request.blueprint
        logger.warning("admin: refused %s %s from %s: %s", request.method, route,
                       request.remote_addr, "no bearer token" if not header else "wrong token")
        response = jsonify(error="a valid bearer token is required")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="bridge-admin"' + (
            ', error="invalid_token"' if header else "")
        return response

    @admin.errorhandler(BadFilter)
    def bad_filter(exc: HistoryError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 400

    @admin.errorhandler(UnknownProject)
    def unknown_project(exc: HistoryError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 404

    @admin.get("/status")
    def status() -> Response:
        return jsonify(projects=[item.as_dict() for item in status_summary(config, store)])

    @admin.get("/events")
    def events() -> Response:
        args = request.args
        project = check_project(args.get("project") or None, config, store)
        where = EventFilter(
            project=project,
            phone=_phone(args.get("phone"), project),
            since=parse_since(args["since"]) if args.get("since") else None,
            status=parse_status(args["status"]) if args.get("status") else None,
            limit=_limit(args.get("limit")),
        )
        show_phone = args.get("show_phone", "").lower() in _TRUE
        csv_wanted = _wants_csv()
        # Streamed: a long history is never held in memory at once (bridge.history).
        found = iter_events(store, where)
        if csv_wanted:
            return Response(events_csv(found, show_phone), mimetype="text/csv",
                            headers={"Content-Disposition": "attachment; filename=events.csv"})
        return Response(_json_events(found, show_phone), mimetype="application/json")

    @admin.get("/consent/<path:phone>")
    def consent(phone: str) -> Response:
        project = check_project(request.args.get("project") or None, config, store)
        lookup = consent_lookup(store, _phone(phone, project) or "", project)
        return jsonify(lookup.as_dict(show_phone=True))

    def _phone(text: str | None, project: str | None) -> str | None:
        if not text:
            return None
        region = request.args.get("region") or default_region(config, project)
        return parse_phone(text, region.upper())

    return admin


def _wants_csv() -> bool:
    fmt = request.args.get("format", "").lower()
    if fmt:
        if fmt not in ("json", "csv"):
            raise BadFilter(f"unknown format {fmt!r}; expected json or csv")
        return fmt == "csv"
    return request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv"


def _json_events(events: Iterable[HistoryEvent], show_phone: bool) -> Iterator[str]:
    """``{"events": [...]}``, an event at a time."""
    separator = ""
    yield '{"events":['
    for event in events:
        yield separator + json.dumps(event.as_dict(show_phone), separators=(",", ":"))
        separator = ","
    yield "]}\n"


def _limit(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise BadFilter(f"limit must be a whole number above 0, got {text!r}")
    return int(text)
