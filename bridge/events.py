"""Twilio Event Streams intake: inbound messages without taking over the number's webhook.

A Twilio Event Streams *webhook sink* subscribed to inbound-message events lets REDCap keep the
number's "A message comes in" URL while the bridge still sees every message. Events feed the
same intake as the webhook (``Intake.receive(..., source="events")``), and the store's dedupe by
MessageSid applies a message that arrives both ways once.

What Twilio documents, and where:

* Payload: CloudEvents 1.0 JSON, type ``com.twilio.messaging.inbound-message.received``,
  schema ``Messaging.InboundMessageV1``: ``{"specversion": "1.0", "type": …, "source": …,
  "id": "EZ…", "dataschema": …, "time": …, "data": {"messageSid", "accountSid", "from", "to",
  "body", "messagingServiceSid", "numMedia", "numSegments", "timestamp", "eventName",
  "toCountry", …}}`` — https://www.twilio.com/docs/events/event-types/messaging/inbound-message
* A webhook sink posts one event per request, or a JSON array of events when the sink was
  created with ``batch_events: true`` (batches carry up to 64 kB of data) —
  https://www.twilio.com/docs/events/event-streams/sink-resource
* Delivery is at least once and may be out of order; failed deliveries are retried for up to
  four hours; a sink must answer within 5 seconds; connection overrides are not supported —
  https://www.twilio.com/docs/events and https://www.twilio.com/docs/events/webhook-quickstart
* Signing: the quickstart says to validate ``X-Twilio-Signature`` as for other webhooks
  (https://www.twilio.com/docs/usage/webhooks/webhooks-security). For JSON bodies Twilio adds
  a ``bodySHA256`` query parameter (hex SHA-256 of the raw body) to the URL it calls and signs
  that full URL with no body parameters, HMAC-SHA1 with the account's auth token (Twilio error
  57012, https://www.twilio.com/docs/api/errors/57012). twilio-python's
  ``RequestValidator.validate(url, raw_body, signature)`` checks both the hash and the HMAC.
  Twilio's Event Streams pages do not spell the scheme out themselves; its "How to validate
  Twilio Event Streams webhooks" tutorials (PHP, Go, Java) use exactly this body validation,
  and n8n's Twilio trigger implements it for Event Streams (n8n-io/n8n#29259). Pinned by
  tests/test_event_streams.py; were Twilio to sign differently, every delivery would get a 403
  and Twilio's debugger would report the failing sink at once — nothing is silently accepted.
* ``data.accountSid`` is missing in some reported deliveries; ``source`` then still names the
  account (``/2010-04-01/Accounts/AC…/Messages/SM….json``). ``optOutType`` is not in the
  documented example; it is honoured if present (unverified).

Decisions:

* **Which token.** The signature covers the whole body, so one token signed it. The bridge tries
  the tokens of the configured accounts that the events name (``data.accountSid``, else the
  account in ``source``); a body naming only accounts it has no token for is refused (403), as
  the webhook refuses an unknown ``AccountSid``. A body naming no account at all (Twilio's sink
  test event) is tried against every configured token. Once a signature checks out the whole
  body is Twilio's, so every inbound event in it is taken, whichever account it names (a
  parent account's sink may carry its subaccounts' messages).
* **Status codes.** 403: unsigned, not signed as a JSON webhook (no ``bodySHA256``), or a
  signature that does not match. 400: a body that is not JSON, or neither an event nor a list
  of them. 503: the store could not take the events; Event Streams retries, and dedupe makes
  the retry safe. 200 otherwise — including events of other types (ignored, so a sink that
  also carries them does not retry forever) and inbound events lacking what a message needs
  (logged and counted as malformed: a retry could never fix them).
* **Event time.** A job's event time is ``data.timestamp`` (when Twilio received the message),
  else the CloudEvent ``time``, never later than now: retried deliveries can arrive hours late,
  and the worker orders a phone's opt-outs and opt-ins by event time.
* Events are never forwarded: with Event Streams, REDCap keeps its own webhook.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from twilio.request_validator import RequestValidator

from bridge.config import Config
from bridge.inbound import MalformedMessage, SignatureError, parse_message
from bridge.intake import Intake

logger = logging.getLogger(__name__)

INBOUND_EVENT = "com.twilio.messaging.inbound-message.received"
# Batches carry up to 64 kB of event data; the CloudEvents envelopes come on top of that.
MAX_BODY_BYTES = 1024 * 1024

_SOURCE_ACCOUNT = re.compile(r"/Accounts/(AC[0-9a-fA-F]{32})(?:/|$)")
_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
# The message fields of an inbound event, by the form names the webhook uses for them.
_FIELDS = {"messageSid": "MessageSid", "accountSid": "AccountSid", "from": "From", "to": "To",
           "body": "Body", "messagingServiceSid": "MessagingServiceSid",
           "optOutType": "OptOutType", "numMedia": "NumMedia", "numSegments": "NumSegments"}


class MalformedEvents(ValueError):
    """The body is signed (or not yet checked) but is not a CloudEvent or a list of them."""


def receive_events(config: Config, intake: Intake, url: str, raw: bytes,
                   signature: str | None) -> list[str]:
    """Verify, parse and take in one sink delivery; return each event's outcome.

    Outcomes: accepted, duplicate, unrouted, ignored (another event type), malformed.
    Raises SignatureError, MalformedEvents, or StoreError (nothing after it was stored).
    """
    if not signature:
        raise SignatureError("missing X-Twilio-Signature header")
    if "bodySHA256" not in parse_qs(urlsplit(url).query):
        raise SignatureError("the URL has no bodySHA256 parameter: not a signed JSON request")
    events = parse_events(raw)
    verify_events(url, raw.decode("utf-8"), signature, config, events)
    return [_receive_one(intake, event) for event in events]


def parse_events(raw: bytes) -> list[object]:
    """The events of a delivery: one CloudEvent object, or a JSON array of them."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedEvents(f"the body is not JSON: {exc}") from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    raise MalformedEvents("expected a CloudEvent object or a JSON array of them")


def verify_events(url: str, body: str, signature: str, config: Config,
                  events: Iterable[object]) -> None:
    """Raise SignatureError unless a configured account's token signed ``url`` and ``body``."""
    named = {account for event in events if (account := account_of(event))}
    if named:
        tokens = [token for sid in sorted(named) if (token := config.auth_token(sid))]
        if not tokens:
            raise SignatureError("no auth token is configured for the accounts in these events")
    else:
        tokens = [account.auth_token for account in config.twilio_accounts]
    if not any(RequestValidator(token).validate(url, body, signature) for token in tokens):
        raise SignatureError("X-Twilio-Signature does not match")


def account_of(event: object) -> str | None:
    """The account an event names: ``data.accountSid``, else the one in ``source``."""
    if not isinstance(event, dict):
        return None
    data = event.get("data")
    sid = data.get("accountSid") if isinstance(data, dict) else None
    if isinstance(sid, str) and _ACCOUNT_SID.fullmatch(sid):
        return sid
    source = event.get("source")
    match = _SOURCE_ACCOUNT.search(source) if isinstance(source, str) else None
    return match.group(1) if match else None


def event_time(event: dict, now: datetime) -> datetime:
    """When Twilio received the message (never later than ``now``)."""
    data = event.get("data")
    for value in (data.get("timestamp") if isinstance(data, dict) else None, event.get("time")):
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                continue
            if moment.tzinfo is not None:
                return min(moment, now)
    return now


def _receive_one(intake: Intake, event: object) -> str:
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        logger.warning("event stream: an entry that is not a CloudEvent was skipped")
        return "malformed"
    if event["type"] != INBOUND_EVENT:
        logger.debug("event stream: %s event ignored", event["type"])
        return "ignored"
    data = event.get("data")
    if not isinstance(data, dict):
        logger.warning("event stream: inbound event %s without data was skipped",
                       event.get("id"))
        return "malformed"
    params = {form: _text(data[key]) for key, form in _FIELDS.items() if data.get(key) is not None}
    params.setdefault("AccountSid", account_of(event) or "")
    try:
        message = parse_message(params)
    except MalformedMessage as exc:
        logger.warning("event stream: inbound event %s skipped: %s", event.get("id"), exc)
        return "malformed"
    result = intake.receive(message, source="events", received_at=event_time(event, intake.clock()))
    return "duplicate" if result.duplicate else "accepted" if result.routed else "unrouted"


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)
