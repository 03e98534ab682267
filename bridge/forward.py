"""Forwarding: hand every inbound message on to REDCap's survey endpoint, relay its answer.

A Twilio number (or Messaging Service) has one inbound URL. When REDCap's Twilio integration
is on, REDCap wants that URL for its two-way SMS surveys (``<REDCap base>/surveys/``). When the
bridge takes it instead, a project's ``forward`` setting makes the bridge a transparent proxy:
after the message is stored durably (the opt-out is safe whatever happens next), it is posted on
to the target and the target's TwiML goes back to Twilio.

Decisions:

* **Same request, re-signed.** The target gets exactly the form fields Twilio posted, in order,
  with ``X-Twilio-Signature`` recomputed for the target URL (as ``requests`` will send it) with
  the auth token of the message's own account. The participant's ``Cookie`` header, Twilio's
  ``User-Agent`` and ``I-Twilio-Idempotency-Token`` are passed through; nothing else.
* **Cookies go both ways, never between participants.** REDCap's SMS surveys keep their place
  in Twilio's per-conversation cookies. The target's ``Set-Cookie`` headers come back to Twilio
  with ``Domain`` removed and ``Path=/``, as a reverse proxy rewrites them (nginx's
  ``proxy_cookie_domain``/``proxy_cookie_path``): Twilio stores cookies for the URL it called,
  the bridge's, not REDCap's. The HTTP session keeps no cookie jar, so one participant's cookies
  can never be sent with another's message.
* **What goes back to Twilio.** A 2xx answer with a ``text/xml`` or ``application/xml`` body is
  relayed as is (status 200, the target's body and content type, its cookies). A 2xx answer
  without XML (empty, or HTML, or text/plain, which Twilio would send to the participant as an
  SMS) becomes an empty TwiML answer, still with the target's cookies: the target did process
  the message. Anything else — a redirect (never followed: a redirected POST turns into a GET
  and loses the message), 4xx, 5xx, a connection failure, an answer slower than the project's
  ``timeout_seconds``, an answer larger than 64 KiB — is a failed forward: logged, counted in
  ``bridge_forwards_total{result=…}``, and Twilio gets an empty TwiML answer in time.
* **A hard deadline.** ``timeout_seconds`` (below 15, checked when loading) is the total time
  Twilio waits for the forward, not a per-socket timeout: the request runs in a worker thread
  and the webhook answers when the deadline passes, whatever the target is doing.
* **Load shedding.** Forwards in flight are capped per URL so that together they can hold at
  most half of the server's threads (``server.threads``). When a target hangs, further messages
  are still stored at once and answered with an empty TwiML (``result="busy"``) instead of
  queueing for a thread until Twilio abandons them — unstored, opt-outs included. Raise
  ``server.threads`` for busy numbers with a slow REDCap.
* **Several projects.** A message routed to several projects is forwarded once per distinct
  URL, concurrently. The answer relayed to Twilio (TwiML and cookies) is the one from the URL
  of the first routed project in configuration order; the other targets get the same request
  (same ``Cookie``) and their answers are only logged and counted. Each URL uses the timeout of
  the first project that names it.
* **Retries are forwarded again.** Every signed webhook request that was stored — including one
  whose MessageSid the store already had — is forwarded. Twilio retries only when it got no
  answer, so the first forward may never have reached REDCap; had REDCap kept the webhook, it
  would have received the retry too. The idempotency token lets the target tell retries apart.
  (A message first seen through Event Streams is also a "duplicate" when its webhook arrives,
  and REDCap must still get it.) Messages routed to no project are not forwarded.
* Cookies, bodies and tokens are never logged; URLs are logged without user info or query.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from bridge import metrics
from bridge.config import ForwardConfig, ProjectConfig
from bridge.inbound import EMPTY_TWIML, TWIML_CONTENT_TYPE

logger = logging.getLogger(__name__)

# Request headers passed through to the target besides Cookie (which is handled on its own).
PASSED_HEADERS = ("User-Agent", "I-Twilio-Idempotency-Token")
MAX_RESPONSE_BYTES = 64 * 1024  # far above any TwiML reply to an SMS
_XML_TYPES = frozenset({"text/xml", "application/xml"})
_CHUNK = 8192


class ForwardError(Exception):
    """A forward failed. ``result`` is the metric label: timeout, connection_error, …"""

    def __init__(self, result: str, message: str) -> None:
        super().__init__(message)
        self.result = result
        self.message = message


@dataclass(frozen=True)
class ForwardRequest:
    """What Twilio sent, as much of it as the target gets."""

    message_sid: str
    fields: tuple[tuple[str, str], ...]  # the form, in the order Twilio posted it
    auth_token: str = field(repr=False)
    cookie: str | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Relay:
    """The answer for Twilio: an empty TwiML unless a target gave one worth relaying."""

    body: bytes = EMPTY_TWIML.encode()
    content_type: str = TWIML_CONTENT_TYPE
    set_cookies: tuple[str, ...] = field(default=(), repr=False)
    result: str = "none"  # the metric label of the forward this came from


class Forwarder:
    """Forwards messages of the projects that have ``forward`` set; idle for the others.

    ``enabled`` is False when no project forwards, so the webhook does no extra work at all.
    At most ``limit`` forwards per URL are in flight, so that together they hold at most half
    of the server's ``server_threads``: a hung target must never leave new messages waiting for
    a thread until Twilio gives up on them, unstored. A forward beyond the limit is not made
    (counted as ``busy``; Twilio gets an empty answer at once).
    """

    def __init__(self, projects: Sequence[ProjectConfig], *, server_threads: int = 8) -> None:
        self._targets = {p.name: p.forward for p in projects if p.forward is not None}
        self._order = {p.name: index for index, p in enumerate(projects)}
        urls = {target.url for target in self._targets.values()}
        self.limit = max(1, server_threads // (2 * max(1, len(urls))))
        self._slots = {url: threading.BoundedSemaphore(self.limit) for url in urls}
        self._max_workers = max(1, self.limit * len(urls))
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def enabled(self) -> bool:
        return bool(self._targets)

    def targets(self, projects: Iterable[str]) -> list[ForwardConfig]:
        """The distinct forward URLs of these projects, first project (config order) first."""
        chosen: dict[str, ForwardConfig] = {}
        for name in sorted(projects, key=lambda n: self._order.get(n, len(self._order))):
            target = self._targets.get(name)
            if target is not None:
                chosen.setdefault(target.url, target)
        return list(chosen.values())

    def relay(self, projects: Iterable[str], request: ForwardRequest) -> Relay:
        """Forward to every distinct target; return what Twilio should get. Never raises."""
        targets = self.targets(projects)
        if not targets:
            return Relay()
        started = time.monotonic()
        futures = [(target, self._submit(target, request, started)) for target in targets]
        for target, future in futures[1:]:
            if future is not None:
                future.add_done_callback(functools.partial(self._settle, target, request))
        primary, future = futures[0]
        if future is None:
            return Relay(result="busy")
        try:
            relay = future.result(timeout=max(0.0, started + primary.timeout_seconds
                                              - time.monotonic()))
        except FutureTimeout:
            error = ForwardError("timeout", f"no answer within {primary.timeout_seconds:g} s")
            self._record(primary, request, error)
            return Relay(result=error.result)
        except ForwardError as exc:
            self._record(primary, request, exc)
            return Relay(result=exc.result)
        except Exception as exc:
            # The message is stored already: a bug here must still let Twilio get its answer.
            logger.exception("forward %s to %s: unexpected error", request.message_sid,
                             loggable_url(primary.url))
            self._record(primary, request, ForwardError("error", type(exc).__name__))
            return Relay(result="error")
        self._record(primary, request, relay)
        return relay

    def close(self) -> None:
        """Let the forwards in flight finish, each within its timeout, and stop the threads.

        Called as the server stops, so that a secondary forward's outcome is logged and
        counted before the process says it stopped, rather than the interpreter joining the
        pool's threads unannounced at exit.
        """
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    # -- internals ---------------------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._max_workers,
                                                    thread_name_prefix="forward")
            return self._executor

    def _session(self) -> requests.Session:
        """One session per worker thread (connection reuse), never holding cookies."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            self._local.session = session
        return session

    def _submit(self, target: ForwardConfig, request: ForwardRequest,
                started: float) -> Future | None:
        """Start a forward in a worker thread, or record it as ``busy`` (None)."""
        slot = self._slots[target.url]
        if not slot.acquire(blocking=False):
            self._record(target, request, ForwardError(
                "busy", f"{self.limit} forwards to this URL are still waiting for it"))
            return None
        try:
            return self._pool().submit(self._post, target, request,
                                       started + target.timeout_seconds, slot)
        except BaseException:
            slot.release()
            raise

    def _post(self, target: ForwardConfig, request: ForwardRequest, deadline: float,
              slot: threading.BoundedSemaphore) -> Relay:
        try:
            return post(self._session(), target.url, request, deadline)
        finally:
            slot.release()

    def _settle(self, target: ForwardConfig, request: ForwardRequest, future: Future) -> None:
        """Record the outcome of a secondary forward, whose answer nobody waits for."""
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self._record(target, request, future.result())
        elif isinstance(error, ForwardError):
            self._record(target, request, error)
        else:
            logger.error("forward %s to %s: unexpected error", request.message_sid,
                         loggable_url(target.url), exc_info=error)
            self._record(target, request, ForwardError("error", type(error).__name__))

    @staticmethod
    def _record(target: ForwardConfig, request: ForwardRequest,
                outcome: Relay | ForwardError) -> None:
        metrics.FORWARDS.labels(result=outcome.result).inc()
        where = loggable_url(target.url)
        if isinstance(outcome, ForwardError):
            logger.warning("forward %s to %s failed (%s): %s; Twilio gets an empty answer",
                           request.message_sid, where, outcome.result, outcome.message)
        elif outcome.result != "ok":
            logger.warning("forward %s to %s: the answer was not TwiML; Twilio gets an empty"
                           " answer", request.message_sid, where)
        else:
            logger.info("forward %s to %s: ok", request.message_sid, where)


def post(session: requests.Session, url: str, request: ForwardRequest,
         deadline: float) -> Relay:
    """POST one forward and turn the answer into a Relay, or raise ForwardError."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ForwardError("timeout", "no time left before the deadline")
    headers = {name: value for name, value in request.headers}
    if request.cookie:
        headers["Cookie"] = request.cookie
    prepared = session.prepare_request(
        requests.Request("POST", url, data=list(request.fields), headers=headers))
    prepared.headers["X-Twilio-Signature"] = RequestValidator(
        request.auth_token).compute_signature(prepared.url, MultiDict(request.fields))
    try:
        response = session.send(prepared, timeout=(remaining, remaining),
                                allow_redirects=False, stream=True)
    except requests.Timeout as exc:
        raise ForwardError("timeout", f"no answer within {remaining:.3g} s") from exc
    except requests.ConnectionError as exc:
        raise ForwardError("connection_error", f"cannot connect ({type(exc).__name__})") \
            from exc
    except requests.RequestException as exc:
        raise ForwardError("error", type(exc).__name__) from exc
    with response:
        if not 200 <= response.status_code < 300:
            raise ForwardError("http_error", f"HTTP {response.status_code}")
        body = _read(response, deadline)
        cookies = tuple(rewrite_set_cookie(value)
                        for value in response.raw.headers.getlist("Set-Cookie"))
        content_type = response.headers.get("Content-Type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type in _XML_TYPES and body.strip():
            return Relay(body=body, content_type=content_type, set_cookies=cookies, result="ok")
        return Relay(set_cookies=cookies, result="not_twiml")


def _read(response: requests.Response, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ForwardError("too_large", f"answer larger than {MAX_RESPONSE_BYTES} bytes")
            if time.monotonic() > deadline:
                raise ForwardError("timeout", "the answer was still arriving at the deadline")
            chunks.append(chunk)
    except requests.RequestException as exc:
        raise ForwardError("connection_error", f"answer cut short ({type(exc).__name__})") \
            from exc
    return b"".join(chunks)


def rewrite_set_cookie(value: str) -> str:
    """Scope a target's cookie to the bridge: drop ``Domain``, set ``Path=/``."""
    name_value, *attributes = (part.strip() for part in value.split(";"))
    kept = [attr for attr in attributes
            if attr and attr.split("=", 1)[0].strip().lower() not in ("domain", "path")]
    return "; ".join([name_value, *kept, "Path=/"])


def loggable_url(url: str) -> str:
    """The URL without user info, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
