"""Shared pieces of the fault tests: a Twilio-like sender, the expected consent state, store
reads, and servers in front of REDCap (one that redirects, one with an institution's TLS).

The expected state is computed from the event sequence alone, independently of the bridge's
code: a fold over one phone's opt-out and opt-in events in arrival order. It is the reference
the crash, outage and ordering tests hold the bridge to.
"""

from __future__ import annotations

import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import requests

from bridge.inbound import sign
from tests.conftest import AUTH_TOKEN, twilio_params

# Messages with an unambiguous meaning in the default English keyword set, and what each asks of
# REDCap: "stop" and "start" change consent; None (help, chit-chat) leaves REDCap alone.
# (body, OptOutType, action)
MESSAGES: dict[str | None, tuple[tuple[str, str | None], ...]] = {
    "stop": (("STOP", None), ("stop", None), ("Stop.", None), ("UNSUBSCRIBE", None),
             ("quit", None), ("Stop", "STOP")),
    "start": (("START", None), ("Yes", None), ("UNSTOP", None), ("start", "START")),
    None: (("HELP", None), ("info", None), ("thanks, see you tuesday", None)),
}

STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"  # the simulator's opt-out field is datetime_seconds_ymd


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


@dataclass
class Event:
    """One inbound SMS as Twilio would post it, and what happened to its delivery."""

    phone: str
    action: str | None
    params: dict[str, str]
    acknowledged: bool = False  # Twilio got a 200
    attempts: int = 0

    @property
    def sid(self) -> str:
        return self.params["MessageSid"]

    @classmethod
    def make(cls, phone: str, action: str | None, body: str, opt_out_type: str | None,
             **kwargs: object) -> Event:
        return cls(phone, action, twilio_params(body, phone, opt_out_type=opt_out_type,
                                                **kwargs))  # type: ignore[arg-type]


class TwilioSender:
    """Posts signed webhooks the way Twilio does, including its retries.

    A retry is the identical request (same ``MessageSid``, same body, same signature), as
    Twilio sends with connection overrides ``#rc=N&rp=all`` on the webhook URL. Without them
    Twilio does not retry after a 5xx or a timeout: ``retries=0`` plays that.
    """

    def __init__(self, url: str, token: str = AUTH_TOKEN, timeout: float = 5.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    def deliver(self, event: Event, *, retries: int = 0, pause: float = 0.1,
                give_up_at: float | None = None) -> bool:
        signature = sign(self.url, event.params, self.token)
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(pause)
            if give_up_at is not None and attempt and time.monotonic() > give_up_at:
                break
            event.attempts += 1
            try:
                response = requests.post(self.url, data=event.params, timeout=self.timeout,
                                         headers={"X-Twilio-Signature": signature})
            except requests.RequestException:
                continue
            if response.status_code == 200:
                event.acknowledged = True
                return True
        return False


@dataclass
class ConsentFold:
    """The consent state of one phone after a sequence of events, and how often it changed.

    ``since`` is the arrival time of the STOP that began the current opt-out: a repeated STOP
    is not a new opt-out and keeps the first time, but a STOP after a START is a new one.
    ``changes`` counts the events that changed the state REDCap shows (checkbox or time).
    """

    opted_out: bool = False
    since: str | None = None
    changes: int = 0
    history: list[tuple[str, str]] = field(default_factory=list)

    def apply(self, action: str, event_at: str) -> None:
        self.history.append((action, event_at))
        if action == "stop" and not self.opted_out:
            self.opted_out, self.since = True, event_at
            self.changes += 1
        elif action == "start" and self.opted_out:
            self.opted_out, self.since = False, None
            self.changes += 1

    def field_value(self, timezone: str) -> str:
        if not self.opted_out or self.since is None:
            return ""
        moment = datetime.fromisoformat(self.since).astimezone(ZoneInfo(timezone))
        return moment.strftime(STAMP_FORMAT)

    def checkbox(self) -> str:
        return "1" if self.opted_out else "0"


def fold(events: Iterable[tuple[str, str]]) -> ConsentFold:
    """Fold (action, event_at) pairs, in arrival order, into the expected consent state."""
    state = ConsentFold()
    for action, event_at in events:
        state.apply(action, event_at)
    return state


class StoreReader:
    """Read-only look into a bridge's SQLite store from outside the bridge process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, tuple(args)).fetchall()
        finally:
            conn.close()

    def stored_sids(self) -> set[str]:
        return {row[0] for row in self._query("SELECT message_sid FROM messages")}

    def received_at(self) -> dict[str, str]:
        return {row[0]: row[1] for row in
                self._query("SELECT message_sid, received_at FROM messages")}

    def jobs(self) -> list[sqlite3.Row]:
        return self._query(
            "SELECT jobs.*, messages.message_sid FROM jobs"
            " JOIN messages ON messages.id = jobs.message_id ORDER BY jobs.id")

    def status_counts(self) -> dict[str, int]:
        return {row[0]: row[1] for row in
                self._query("SELECT status, COUNT(*) FROM jobs GROUP BY status")}

    def open_jobs(self) -> int:
        return int(self._query(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running')")[0][0])

    def indexes_built(self) -> int:
        """Projects whose phone index has been built and saved."""
        return int(self._query("SELECT COUNT(*) FROM index_meta")[0][0])

    def integrity(self) -> str:
        return str(self._query("PRAGMA integrity_check")[0][0])


def expected_states(events: Iterable[Event], received_at: dict[str, str],
                    ) -> dict[str, ConsentFold]:
    """The expected state per phone from the events the bridge stored, in arrival order.

    Only stored events count: an event Twilio never got a 200 for may or may not have been
    stored (the process can die between the commit and the answer). Arrival order is the
    order of ``received_at``, which for one phone's events sent one after another is the
    order they were sent in.
    """
    per_phone: dict[str, list[tuple[str, str]]] = {}
    for event in events:
        if event.sid in received_at:
            per_phone.setdefault(event.phone, [])
            if event.action in ("stop", "start"):
                per_phone[event.phone].append((event.action, received_at[event.sid]))
    return {phone: fold(sorted(items, key=lambda item: item[1]))
            for phone, items in per_phone.items()}


class LoopbackServer:
    """An HTTP server on 127.0.0.1, in a thread, answering POSTs with ``answer``."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler, bytes], None],
                 tls: ssl.SSLContext | None = None) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.requests += 1
                answer(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_port}/api/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Redirector(LoopbackServer):
    """Answers every request with a redirect to ``target``."""

    def __init__(self, status: int, target: str) -> None:
        def redirect(handler: BaseHTTPRequestHandler, _body: bytes) -> None:
            handler.send_response(status)
            handler.send_header("Location", target)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        super().__init__(redirect)


class TlsFront(LoopbackServer):
    """HTTPS in front of the simulator, with a certificate no public CA signed: a REDCap whose
    certificate comes from its institution's own CA (``CERT``, for 127.0.0.1)."""

    CERT = Path(__file__).resolve().parent / "data" / "smtp-localhost.crt"

    def __init__(self, api_url: str) -> None:
        def relay(handler: BaseHTTPRequestHandler, body: bytes) -> None:
            answer = requests.post(api_url, data=body, timeout=10, headers={
                "Content-Type": handler.headers.get("Content-Type", "")})
            handler.send_response(answer.status_code)
            handler.send_header("Content-Type", answer.headers.get("Content-Type", ""))
            handler.send_header("Content-Length", str(len(answer.content)))
            handler.end_headers()
            handler.wfile.write(answer.content)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.CERT, self.CERT.with_suffix(".key"))
        super().__init__(relay, tls=context)
