"""A fake of the read-only Twilio REST endpoints ``check --twilio`` uses, on loopback HTTP.

twilio's real ``Client`` talks to it: ``LoopbackHttpClient`` is its stock ``TwilioHttpClient``
with api.twilio.com and messaging.twilio.com rewritten to this server, so basic auth, paging
and error parsing all run as they would against Twilio. Response shapes follow Twilio's API
reference (v2010 list pages keyed by resource name, v1 pages with ``meta.key``; errors as
``{"code", "message", "more_info", "status"}``).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import Flask, Response, jsonify, request
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from werkzeug.serving import make_server


@dataclass
class FakeNumber:
    phone_number: str
    sms_url: str | None = None
    sms_application_sid: str | None = None
    sid: str = "PN" + "0" * 32


@dataclass
class FakeService:
    sid: str
    inbound_request_url: str | None = None
    use_inbound_webhook_on_number: bool = False
    numbers: list[str] = field(default_factory=list)
    friendly_name: str = "Study texts"


@dataclass
class FakeAccount:
    sid: str
    token: str
    status: str = "active"
    numbers: list[FakeNumber] = field(default_factory=list)
    services: list[FakeService] = field(default_factory=list)
    applications: dict[str, str] = field(default_factory=dict)  # AP sid -> sms_url


class FakeTwilio:
    def __init__(self) -> None:
        self.accounts: dict[str, FakeAccount] = {}
        self.requests: list[str] = []
        self.base_url = ""

    def add_account(self, account: FakeAccount) -> FakeAccount:
        self.accounts[account.sid] = account
        return account

    def app(self) -> Flask:
        app = Flask("fake-twilio")

        def error(status: int, code: int, message: str) -> tuple[Response, int]:
            return jsonify(code=code, message=message, status=status,
                           more_info=f"https://www.twilio.com/docs/errors/{code}"), status

        def account_for_request() -> FakeAccount | None:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            account = self.accounts.get(user)
            return account if account is not None and account.token == password else None

        @app.before_request
        def authenticate() -> tuple[Response, int] | None:
            self.requests.append(request.full_path)
            if account_for_request() is None:
                return error(401, 20003, "Authenticate")
            return None

        @app.get("/api/2010-04-01/Accounts/<sid>.json")
        def account(sid: str) -> Response | tuple[Response, int]:
            me = account_for_request()
            if me is None or sid != me.sid:
                return error(404, 20404, "The requested resource was not found")
            return jsonify(sid=me.sid, friendly_name="Research IT", status=me.status,
                           type="Full", owner_account_sid=me.sid)

        @app.get("/api/2010-04-01/Accounts/<sid>/IncomingPhoneNumbers.json")
        def numbers(sid: str) -> Response | tuple[Response, int]:
            me = account_for_request()
            if me is None or sid != me.sid:
                return error(403, 20403, "Forbidden")
            wanted = request.args.get("PhoneNumber")
            found = [n for n in me.numbers if wanted in (None, n.phone_number)]
            uri = f"/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json"
            return jsonify(
                incoming_phone_numbers=[{
                    "sid": n.sid, "account_sid": me.sid, "phone_number": n.phone_number,
                    "sms_url": n.sms_url, "sms_method": "POST",
                    "sms_application_sid": n.sms_application_sid, "friendly_name": "study line",
                } for n in found],
                end=len(found) - 1, first_page_uri=uri, next_page_uri=None, page=0,
                page_size=50, previous_page_uri=None, start=0, uri=uri)

        @app.get("/api/2010-04-01/Accounts/<sid>/Applications/<app_sid>.json")
        def application(sid: str, app_sid: str) -> Response | tuple[Response, int]:
            me = account_for_request()
            if me is None or sid != me.sid or app_sid not in me.applications:
                return error(404, 20404, "The requested resource was not found")
            return jsonify(sid=app_sid, account_sid=sid, sms_url=me.applications[app_sid],
                           sms_method="POST", friendly_name="survey app")

        def service_of(sid: str) -> FakeService | None:
            me = account_for_request()
            return next((s for s in me.services if s.sid == sid), None) if me else None

        @app.get("/messaging/v1/Services/<sid>")
        def service(sid: str) -> Response | tuple[Response, int]:
            found = service_of(sid)
            if found is None:
                return error(404, 20404, "The requested resource was not found")
            return jsonify(sid=found.sid, friendly_name=found.friendly_name,
                           inbound_request_url=found.inbound_request_url, inbound_method="POST",
                           use_inbound_webhook_on_number=found.use_inbound_webhook_on_number)

        @app.get("/messaging/v1/Services/<sid>/PhoneNumbers")
        def service_numbers(sid: str) -> Response | tuple[Response, int]:
            found = service_of(sid)
            if found is None:
                return error(404, 20404, "The requested resource was not found")
            url = f"https://messaging.twilio.com/v1/Services/{sid}/PhoneNumbers"
            return jsonify(
                phone_numbers=[{"sid": "PN" + "1" * 32, "service_sid": sid, "phone_number": n,
                                "country_code": "US"} for n in found.numbers],
                meta={"page": 0, "page_size": 50, "first_page_url": url,
                      "previous_page_url": None, "url": url, "next_page_url": None,
                      "key": "phone_numbers"})

        return app


class LoopbackHttpClient(TwilioHttpClient):
    """twilio's HTTP client, sending Twilio's API hosts to the fake on loopback."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=5)
        self.base_url = base_url

    def request(self, method: str, url: str, *args: object, **kwargs: object) -> TwilioResponse:
        for host, prefix in (("https://api.twilio.com", "/api"),
                             ("https://messaging.twilio.com", "/messaging")):
            if url.startswith(host):
                url = self.base_url + prefix + url[len(host):]
        return super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]


@contextmanager
def serve(fake: FakeTwilio) -> Iterator[LoopbackHttpClient]:
    server = make_server("127.0.0.1", 0, fake.app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield LoopbackHttpClient(fake.base_url)
    finally:
        server.shutdown()
        thread.join()
