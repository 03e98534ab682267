"""The simulator as a running server: tokens, the call log, injected faults and the IP ban.

Tests start one on a random loopback port and talk to it with real HTTP, so the bridge's
client code (timeouts, retries, connection reuse) is exercised as it will be against REDCap.
It is served by waitress, which keeps connections alive (as Apache in front of REDCap does)
and so answers thousands of requests a second; werkzeug's server closes every connection.
All state is guarded by one lock because requests are handled on a pool of threads.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Literal

from waitress import wasyncore
from waitress.server import TcpWSGIServer, create_server

from bridge.sim.api import TEXT_TYPE, ApiRequest, Reply, answer, error_reply
from bridge.sim.app import create_app
from bridge.sim.model import SimProject

BAN_MESSAGE = "Your IP address ({ip}) has been banned due to suspected abuse."
_TOKEN = re.compile(r"[0-9A-F]{32}")


@dataclass(frozen=True)
class Fault:
    """A misbehaviour to inject into the next request(s).

    ``status``: answer with that HTTP status and a REDCap-style JSON error, doing nothing.
    ``reset``: close the connection without any answer. ``slow``: carry the request out at
    once but hold the answer back for ``seconds``, so a client timeout fires although the
    import was applied — as with a real server that is slow to respond.
    """

    kind: Literal["status", "reset", "slow"]
    code: int = 0
    seconds: float = 0.0

    @classmethod
    def status(cls, code: int) -> Fault:
        if not 100 <= code <= 599:
            raise ValueError(f"not an HTTP status: {code}")
        return cls("status", code=code)

    @classmethod
    def reset(cls) -> Fault:
        return cls("reset")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls("slow", seconds=seconds)


@dataclass(frozen=True)
class Call:
    """One request as the simulator saw it.

    ``time`` is ``time.monotonic()`` at arrival. ``status`` is 0 when the connection was
    dropped. ``records`` is the number of distinct records exported or imported (0 for a
    failed call). ``action`` is "export" when the request named none, as REDCap assumes.
    """

    time: float
    content: str
    action: str
    token_ok: bool
    status: int
    records: int


class RedcapSimulator:
    """A REDCap API endpoint on loopback serving any number of ``SimProject``s by token.

    Like REDCap it bans a client IP for good once it sends more than
    ``rate_limit_per_minute`` requests in any sliding minute (every request counts, failed
    ones too); ``unban()`` plays the administrator. ``None`` turns the limit off. The ban's
    answer is plain text, as the reference gives it, so a client must not assume that every
    error body is JSON.
    ``latency_seconds`` delays every answer and may be changed while running.
    """

    def __init__(
        self,
        rate_limit_per_minute: int | None = 600,
        latency_seconds: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 16,
        rate_window_seconds: float = 60.0,
    ) -> None:
        self.rate_limit_per_minute = rate_limit_per_minute
        # REDCap counts per minute; a shorter window lets a test watch it slide.
        self.rate_window_seconds = rate_window_seconds
        self.latency_seconds = latency_seconds
        self._host = host
        self._port = port
        # Requests answered at once; delayed answers (latency, slow faults) each hold one.
        self._threads = threads
        self._lock = threading.Lock()
        self._projects: dict[str, SimProject] = {}
        self._calls: list[Call] = []
        self._faults: deque[Fault] = deque()
        self._windows: dict[str, deque[float]] = {}
        self._banned: set[str] = set()
        self._server: TcpWSGIServer | None = None
        self._thread: threading.Thread | None = None
        # Set on stop so that delayed answers stop waiting.
        self._stopping = threading.Event()
        self.base_url = ""

    # -- set-up -------------------------------------------------------------------------

    def add_project(self, project: SimProject, token: str | None = None) -> str:
        """Give ``project`` an API token (a fresh one unless given) and return it."""
        token = token or secrets.token_hex(16).upper()
        if not _TOKEN.fullmatch(token):
            raise ValueError("a REDCap token is 32 upper-case hexadecimal characters")
        with self._lock:
            if token in self._projects:
                raise ValueError("token already in use")
            self._projects[token] = project
        return token

    def start(self) -> str:
        """Serve on a background thread; return the base URL ``http://127.0.0.1:PORT``."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        # Our own socket map, so the loop in _serve can run and empty it.
        sockets: dict[int, wasyncore.dispatcher] = {}
        server = create_server(
            create_app(self.handle),
            map=sockets,
            host=self._host,
            port=self._port,
            threads=self._threads,
            asyncore_use_poll=True,
        )
        assert isinstance(server, TcpWSGIServer)  # one host and port: never a multi-socket one
        self._server = server
        self._thread = threading.Thread(
            target=self._serve, args=(server, sockets), name="redcap-simulator", daemon=True
        )
        self._thread.start()
        self.base_url = f"http://{self._host}:{server.effective_port}"
        return self.base_url

    def _serve(self, server: TcpWSGIServer, sockets: dict[int, wasyncore.dispatcher]) -> None:
        """Run waitress's socket loop until ``stop()``, then close everything from this thread.

        Closing from the loop's own thread avoids racing it; waitress's ``run()`` offers no
        way to stop.
        """
        while not self._stopping.is_set():
            wasyncore.loop(timeout=0.05, use_poll=True, map=sockets, count=1)
        for dispatcher in list(sockets.values()):
            if dispatcher is server:
                server.close()  # its handle_close would log a spurious "unhandled close event"
            else:
                dispatcher.handle_close()  # for connections, this also frees buffered output
        server.task_dispatcher.shutdown(timeout=5)

    def stop(self) -> None:
        """Stop serving and close every connection; safe to call twice."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> RedcapSimulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        if not self.base_url:
            raise RuntimeError("start() the simulator first")
        return self.base_url + "/api/"

    # -- faults and the ban -------------------------------------------------------------

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests (after any already queued)."""
        with self._lock:
            self._faults.extend([fault] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def banned(self) -> bool:
        with self._lock:
            return bool(self._banned)

    def unban(self) -> None:
        """Lift every ban and forget past requests, as an administrator's reset would."""
        with self._lock:
            self._banned.clear()
            self._windows.clear()

    # -- the call log -------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """A copy of the call log, in the order the answers were decided."""
        with self._lock:
            return list(self._calls)

    def calls_by_content(self) -> dict[str, int]:
        return dict(Counter(call.content for call in self.calls))

    def max_calls_in_window(self, seconds: float = 60.0) -> int:
        """The most requests that arrived within any ``seconds``-long sliding window."""
        return most_in_window((call.time for call in self.calls), seconds)

    # -- serving ------------------------------------------------------------------------

    def handle(self, ip: str, method: str, request: ApiRequest) -> Reply | None:
        """Answer one request (None: drop the connection), log it, then apply delays.

        Order: the ban, then an injected fault, then REDCap's own checks. A banned request
        does not use up a fault. The call is logged before any delay so a client that gave
        up waiting can still see it was received.
        """
        arrival = time.monotonic()
        with self._lock:
            banned = self._count_request(ip, arrival)
            fault = self._faults.popleft() if self._faults and not banned else None
            project = self._projects.get(request.get("token"))
        reply: Reply | None
        if banned:
            reply = Reply(429, BAN_MESSAGE.format(ip=ip), TEXT_TYPE)
        elif fault is not None and fault.kind == "status":
            reply = error_reply(fault.code, _fault_message(fault.code))
        elif fault is not None and fault.kind == "reset":
            reply = None
        elif method != "POST":
            reply = error_reply(501, "The API accepts only POST requests")
        else:
            reply = answer(project, request)
        call = Call(
            time=arrival,
            content=request.get("content"),
            action=request.get("action") or "export",
            token_ok=project is not None,
            status=reply.status if reply else 0,
            records=reply.records if reply else 0,
        )
        with self._lock:
            self._calls.append(call)
        delay = self.latency_seconds + (fault.seconds if fault is not None else 0.0)
        if delay > 0:
            self._stopping.wait(delay)
        return reply

    def _count_request(self, ip: str, now: float) -> bool:
        """Record a request in the IP's sliding window; True if the IP is (now) banned."""
        if ip in self._banned:
            return True
        if self.rate_limit_per_minute is None:
            return False
        window = self._windows.setdefault(ip, deque())
        window.append(now)
        while window[0] <= now - self.rate_window_seconds:
            window.popleft()
        if len(window) > self.rate_limit_per_minute:
            self._banned.add(ip)
            return True
        return False


def most_in_window(times: Iterable[float], seconds: float = 60.0) -> int:
    """The most of ``times`` within any ``seconds``-long sliding window (REDCap's count)."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def _fault_message(code: int) -> str:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = f"HTTP {code}"
    return f"{phrase} (fault injected by the simulator)"
