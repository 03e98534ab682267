"""Twilio (``check --twilio``): credentials, and where each number and service sends texts.

Read-only calls through twilio's own ``Client``: the account itself, the configured numbers
(IncomingPhoneNumbers, and the TwiML app when one handles SMS), and the configured Messaging
Services with their numbers. A number inside a configured Messaging Service follows the
service's incoming-message webhook unless the service defers to the numbers'
(``use_inbound_webhook_on_number``). Only services named in the configuration are looked at,
so a number in some other service is reported with its own webhook.

A webhook that is not this bridge is a warning, not a failure: the number may deliberately
stay with REDCap while the bridge is fed another way (Event Streams, or forwarding set up
later). Wrong credentials, or a number or service no configured account owns, fail.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.rest.api.v2010.account.incoming_phone_number import IncomingPhoneNumberInstance

from bridge.check.project import plural
from bridge.check.report import CheckResult, Status
from bridge.config import Config

SECTION = "twilio"
TIMEOUT_SECONDS = 15.0
_T = TypeVar("_T")


class _CallFailed(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _call(fn: Callable[[], _T]) -> _T:
    """Run one Twilio request; every failure becomes ``_CallFailed`` with a readable message."""
    try:
        return fn()
    except TwilioRestException as exc:
        code = f" (error {exc.code})" if exc.code else ""
        raise _CallFailed(f"HTTP {exc.status}: {exc.msg}{code}", exc.status) from exc
    except requests.RequestException as exc:
        raise _CallFailed(f"cannot reach Twilio's API: {type(exc).__name__}") from exc
    except TwilioException as exc:
        raise _CallFailed(f"Twilio client error: {exc}") from exc


@dataclass(frozen=True)
class _Service:
    sid: str
    name: str
    inbound_url: str | None
    uses_number_webhooks: bool
    numbers: frozenset[str]


def check_twilio(config: Config, http_client: HttpClient | None = None) -> list[CheckResult]:
    results: list[CheckResult] = []

    def add(name: str, status: Status, summary: str, hint: str = "", **details: object) -> None:
        results.append(CheckResult(SECTION, name, status, summary, hint, details))

    http = http_client or TwilioHttpClient(timeout=TIMEOUT_SECONDS)
    expected = f"{config.server.public_url}/twilio/sms" if config.server.public_url else None
    clients: list[Client] = []
    for account in config.twilio_accounts:
        client = Client(account.account_sid, account.auth_token, http_client=http)
        try:
            fetched = _call(client.api.v2010.accounts(account.account_sid).fetch)
        except _CallFailed as exc:
            hint = ("copy the account's primary auth token again (Twilio console, Account Info);"
                    " a subaccount has its own token") if exc.status == 401 else \
                "check that this machine can reach api.twilio.com over HTTPS"
            verdict = "credentials not accepted" if exc.status is not None else "not checked"
            add("twilio.account", Status.FAIL,
                f"account {account.account_sid}: {verdict}: {exc.message}", hint)
            continue
        if fetched.status != "active":
            add("twilio.account", Status.FAIL,
                f"account {account.account_sid} ({fetched.friendly_name}) is {fetched.status}",
                "a suspended or closed account receives no messages; see the Twilio console")
            continue
        add("twilio.account", Status.OK,
            f"account {account.account_sid} ({fetched.friendly_name}): credentials accepted")
        clients.append(client)
    if not clients:
        return results

    services: dict[str, _Service] = {}
    for sid in dict.fromkeys(s for p in config.projects for s in p.messaging_service_sids):
        service = _find_service(clients, sid)
        if isinstance(service, str):
            add("twilio.service", Status.FAIL, f"Messaging Service {sid}: {service}",
                "check messaging_service_sids, and that the account owning the service is"
                " listed under twilio.accounts with its own token")
            continue
        services[sid] = service
        if service.uses_number_webhooks:
            add("twilio.service", Status.OK,
                f"Messaging Service {sid} ({service.name}) uses each number's own webhook"
                f" ({plural(len(service.numbers), 'number')})", sid=sid)
        else:
            _webhook(add, "twilio.service", f"Messaging Service {sid} ({service.name})",
                     service.inbound_url, expected, sid=sid)

    for number in dict.fromkeys(n for p in config.projects for n in p.numbers):
        found = _find_number(clients, number)
        if isinstance(found, str):
            add("twilio.number", Status.FAIL, f"{number}: {found}",
                "check the number in the project's twilio.numbers, and that the account owning"
                " it is listed under twilio.accounts with its own token")
            continue
        client, instance = found
        via = next((s for s in services.values()
                    if number in s.numbers and not s.uses_number_webhooks), None)
        if via is not None:
            _webhook(add, "twilio.number", f"{number} (in Messaging Service {via.sid})",
                     via.inbound_url, expected, number=number)
            continue
        if instance.sms_application_sid:
            try:
                app = _call(client.api.v2010.accounts(instance.account_sid)
                            .applications(instance.sms_application_sid).fetch)
            except _CallFailed as exc:
                add("twilio.number", Status.FAIL,
                    f"{number}: its TwiML app {instance.sms_application_sid} cannot be read:"
                    f" {exc.message}")
                continue
            _webhook(add, "twilio.number", f"{number} (TwiML app {app.sid})", app.sms_url,
                     expected, number=number)
            continue
        _webhook(add, "twilio.number", number, instance.sms_url, expected, number=number)
    return results


def _find_service(clients: list[Client], sid: str) -> _Service | str:
    """The service from whichever account owns it, or why it could not be found."""
    for client in clients:
        try:
            service = _call(client.messaging.v1.services(sid).fetch)
        except _CallFailed as exc:
            if exc.status == 404:
                continue
            return f"cannot be read: {exc.message}"
        try:
            numbers = _call(client.messaging.v1.services(sid).phone_numbers.list)
        except _CallFailed as exc:
            return f"its numbers cannot be listed: {exc.message}"
        return _Service(sid=sid, name=service.friendly_name or "", inbound_url=(
            service.inbound_request_url or None),
            uses_number_webhooks=bool(service.use_inbound_webhook_on_number),
            numbers=frozenset(n.phone_number for n in numbers))
    return "not found in any configured account"


def _find_number(clients: list[Client],
                 number: str) -> tuple[Client, IncomingPhoneNumberInstance] | str:
    for client in clients:
        try:
            found = _call(functools.partial(client.incoming_phone_numbers.list,
                                            phone_number=number, limit=20))
        except _CallFailed as exc:
            return f"cannot be looked up: {exc.message}"
        for instance in found:
            if instance.phone_number == number:
                return client, instance
    return "not a phone number of any configured account"


def _webhook(add: Callable[..., None], name: str, what: str, url: str | None,
             expected: str | None, **details: object) -> None:
    if not url:
        add(name, Status.WARN, f"{what}: incoming messages go to no webhook",
            f"set its incoming-message webhook to {expected or 'the bridge'} (POST)", url=None,
            **details)
        return
    shown = url.split("#", 1)[0]
    if expected is None:
        add(name, Status.WARN, f"{what} posts incoming messages to {shown}; server.public_url"
            " is not set, so check cannot tell whether that is this bridge",
            "set server.public_url to the base URL Twilio calls", url=shown, **details)
    elif same_url(url, expected):
        add(name, Status.OK, f"{what} posts incoming messages to this bridge ({shown})",
            url=shown, **details)
    else:
        add(name, Status.WARN, f"{what} posts incoming messages to {shown}, not this bridge",
            f"point its incoming-message webhook at {expected} (POST); if REDCap must keep"
            " receiving survey replies, set the project's forward.url to REDCap's survey"
            " endpoint", url=shown, **details)


def same_url(a: str, b: str) -> bool:
    """Equal as Twilio would call them: fragment (connection overrides) and default port aside."""
    first, second = urlsplit(a.split("#", 1)[0]), urlsplit(b.split("#", 1)[0])

    def key(parts: SplitResult) -> tuple[str, str, int | None, str, str]:
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
        return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/") or "/", \
            parts.query

    return key(first) == key(second)
