"""Twilio's side of the edge: signature check, form -> ``InboundMessage``, TwiML answers.

Pure functions, no Flask: the web layer hands in the URL, the form and the header, and maps
the named exceptions to status codes.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlparse

from twilio.request_validator import RequestValidator, add_port, remove_port
from werkzeug.wsgi import get_host

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
TWIML_CONTENT_TYPE = "text/xml; charset=utf-8"

_MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
MAX_BODY_CHARS = 1600 * 4  # Twilio caps bodies at 1600 characters; leave room, cap storage


class SignatureError(Exception):
    """The request is not provably from Twilio (missing, wrong, or unknown-account signature)."""


class MalformedMessage(ValueError):
    """The request is signed but lacks what an inbound message must have."""


@dataclass(frozen=True)
class InboundMessage:
    message_sid: str
    account_sid: str
    from_number: str  # as Twilio sent it (E.164 for SMS; may be e.g. "whatsapp:+1...")
    to_number: str
    body: str
    messaging_service_sid: str = ""
    opt_out_type: str = ""
    params: Mapping[str, str] = field(default_factory=dict, repr=False)


def verify_signature(url: str, params: Mapping[str, str], signature: str | None,
                     auth_token: str | None) -> None:
    """Raise SignatureError unless ``signature`` is Twilio's HMAC of ``url`` + ``params``.

    ``auth_token`` is the token of the account named in the request's ``AccountSid``
    (subaccounts sign with their own token); None means no such account is configured,
    which is refused like a bad signature.
    """
    if not signature:
        raise SignatureError("missing X-Twilio-Signature header")
    if not auth_token:
        # Named, so the operator knows which (sub)account to add; only when it has the shape
        # of a SID, since the field is the sender's to write and this reaches the log.
        account = params.get("AccountSid", "")
        raise SignatureError("no auth token is configured for "
                             + (f"AccountSid {account}" if _ACCOUNT_SID.match(account)
                                else "this AccountSid"))
    if "#" in url:
        url = url.split("#", 1)[0]  # fragments are not part of the signed URL
    # twilio's ``validate`` computes the signature of both URLs Twilio may have signed (with
    # and without the port) before comparing. The same two with its own ``compute_signature``,
    # compared in constant time, but the URL as configured first and the other only when it
    # does not match: half the cost of the check for every genuine webhook.
    validator = RequestValidator(auth_token)
    form = Form.of(params)
    expected = signature.encode("utf-8", "replace")
    parsed = urlparse(url)
    for candidate in dict.fromkeys((url, remove_port(parsed), add_port(parsed))):
        computed = validator.compute_signature(candidate, form)
        if hmac.compare_digest(computed.encode(), expected):
            return
    raise SignatureError("X-Twilio-Signature does not match")


class Form(Mapping[str, str]):
    """A posted ``application/x-www-form-urlencoded`` body: the first value of each name,
    every value with ``getlist``, and the pairs in the order they were posted. It is also the
    form as twilio's validator reads it: ``getall`` gives every value of a name (handed a
    plain dict, the validator falls back through two exceptions per parameter).

    The webhook's own parser (``urllib.parse``, as werkzeug decodes: UTF-8, undecodable
    bytes replaced), so the hot path needs no request object.
    """

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self._first = dict(reversed(pairs))  # the first value of each name wins
        if len(self._first) == len(pairs):  # no repeated name: Twilio's usual form
            self._all = {name: [value] for name, value in pairs}
        else:
            self._all = {}
            for name, value in pairs:
                self._all.setdefault(name, []).append(value)
        # What twilio's validator calls for each name: a bound dict method, no Python frame.
        self.getall = self._all.__getitem__

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Form:
        """``params`` as a Form: a dict, or a multi-dict (every value kept, via ``getlist``)."""
        if isinstance(params, Form):
            return params
        getlist = getattr(params, "getlist", None)
        if getlist is None:
            return cls(list(params.items()))
        return cls([(name, value) for name in params for value in getlist(name)])

    @classmethod
    def parse(cls, body: bytes, content_type: str | None) -> Form:
        """The form in ``body``; empty unless the content type says it is one."""
        mimetype = (content_type or "").split(";", 1)[0].strip().lower()
        if mimetype != "application/x-www-form-urlencoded" or not body:
            return cls([])
        return cls(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    def __getitem__(self, name: str) -> str:
        return self._first[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def getlist(self, name: str) -> list[str]:
        return self._all.get(name, [])


def signed_url(environ: dict[str, Any], public_url: str | None) -> str:
    """The URL Twilio signed: the configured public base, or what this request came in on.

    The raw request URI is used when the WSGI server passes it on (exactly what Twilio sent,
    query string included); a path prefix stripped by a proxy belongs in ``public_url``.
    """
    raw = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not raw:
        raw = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        if environ.get("QUERY_STRING"):
            raw += "?" + environ["QUERY_STRING"]
    if public_url:
        return public_url.rstrip("/") + raw
    return f"{environ.get('wsgi.url_scheme', 'http')}://{get_host(environ)}{raw}"


def sign(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """Compute the signature Twilio would send for ``url`` and ``params``."""
    return RequestValidator(auth_token).compute_signature(url, params)


def parse_message(params: Mapping[str, str]) -> InboundMessage:
    """Build an InboundMessage from Twilio's form fields; extra fields are kept, never refused."""
    sid = params.get("MessageSid") or params.get("SmsMessageSid") or params.get("SmsSid") or ""
    if not _MESSAGE_SID.match(sid):
        raise MalformedMessage("MessageSid is missing or malformed")
    account = params.get("AccountSid", "")
    if not _ACCOUNT_SID.match(account):
        raise MalformedMessage("AccountSid is missing or malformed")
    sender = (params.get("From") or "").strip()
    if not sender:
        raise MalformedMessage("From is missing")
    return InboundMessage(
        message_sid=sid,
        account_sid=account,
        from_number=sender,
        to_number=(params.get("To") or "").strip(),
        body=(params.get("Body") or "")[:MAX_BODY_CHARS],
        messaging_service_sid=(params.get("MessagingServiceSid") or "").strip(),
        opt_out_type=(params.get("OptOutType") or "").strip().upper(),
        params=dict(params),
    )
