"""The HTTP server: waitress, with a stop that answers every request it has accepted.

waitress's own stop (``SystemExit`` in its loop) ends the loop at once: a webhook whose body
was still being read is dropped, and a response a handler thread finished afterwards is never
written, because writing is the loop's job. For the bridge that means a participant's STOP,
stored or not, that Twilio sees as failed. ``HttpServer.stop`` instead

1. stops accepting: it closes its listening sockets. A socket passed by systemd stays open in
   systemd, so connections arriving now wait in its backlog for the next process (see
   ``bridge.socket_activation``); otherwise they are refused, which Twilio retries;
2. keeps the loop running until every accepted request is answered and its answer written,
   closing keep-alive connections as they fall idle, for at most ``DRAIN_SECONDS``;
3. then stops the handler threads.

waitress has no public call for this, so the drain reads its channels' state (``requests``,
``request``, ``total_outbufs_len``, ``last_activity``); waitress is pinned, and
tests/test_http_server.py and tests/test_socket_activation.py check the behaviour.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

from bridge.config import ServerConfig
from bridge.socket_activation import describe

logger = logging.getLogger(__name__)

# Twilio waits 15 s for an answer; a request still running after that has failed for Twilio
# anyway, so waiting longer would only delay the restart.
DRAIN_SECONDS = 15.0
_POLL_SECONDS = 0.05  # the loop's wait while draining; each finished answer wakes it sooner
# A connection accepted just before the stop, with nothing read yet, gets this long to send its
# request; a keep-alive connection that has been answered is closed as soon as it is idle.
_FIRST_REQUEST_SECONDS = 2.0


class ListenError(Exception):
    """The configured address cannot be listened on; the message says which and why."""


class HttpServer:
    """waitress on ``server.host``/``server.port``, or on sockets systemd passed, for one WSGI
    app; ``serve`` in the main thread, ``stop`` from a signal handler."""

    def __init__(self, app: Callable[..., Any], settings: ServerConfig,
                 sockets: list[socket.socket]) -> None:
        self.inherited = bool(sockets)
        where: dict[str, Any] = ({"sockets": sockets} if sockets else
                                 {"host": settings.host, "port": settings.port})
        # waitress reads a whole body before the app sees it: cap it there, or a client could
        # make it buffer up to 1 GiB per request (waitress refuses max_request_body_size).
        try:
            server = create_server(app, **where, threads=settings.threads,
                                   ident="redcap-sms-bridge", clear_untrusted_proxy_headers=True,
                                   max_request_body_size=settings.max_body_bytes + 1,
                                   asyncore_use_poll=True)
        except OSError as exc:
            hint = ("another process holds it: an older bridge, or systemd's"
                    " redcap-sms-bridge.socket (then start the service rather than serve by hand)"
                    if exc.errno == errno.EADDRINUSE else "check the address")
            raise ListenError(f"cannot listen on {settings.host}:{settings.port} (server.host,"
                              f" server.port): {exc.strerror or exc}; {hint}") from exc
        self._adjustments = server.adj
        self._dispatcher = server.task_dispatcher
        self._map: dict[int, Any] = server.map if hasattr(server, "map") else server._map
        self._listeners = [d for d in self._map.values() if isinstance(d, BaseWSGIServer)]
        self._stopping = threading.Event()

    def addresses(self) -> list[str]:
        """Where it listens, for the start-up line: ``http://127.0.0.1:8080`` (or a Unix
        socket's path)."""
        return [("http://" if listener.socket.family != socket.AF_UNIX else "")
                + describe(listener.socket) for listener in self._listeners]

    def stop(self) -> None:
        """Ask ``serve`` to return after draining. Safe in a signal handler: it sets a flag and
        writes a byte to waitress's wake-up pipe, taking no lock."""
        if self._stopping.is_set():
            return  # a second signal while draining changes nothing
        self._stopping.set()
        self._listeners[0].pull_trigger()  # the loop is still running: it ends after this

    def serve(self) -> None:
        """Answer requests until ``stop``, then drain (see the module docstring)."""
        timeout = self._adjustments.asyncore_loop_timeout
        while not self._stopping.is_set():
            wasyncore.loop(timeout=timeout, map=self._map, use_poll=True, count=1)
        for listener in self._listeners:
            wasyncore.dispatcher.close(listener)  # the listening socket only, not the trigger
        unanswered = self._drain(time.monotonic() + DRAIN_SECONDS)
        if unanswered:
            logger.warning("stopping with %d requests still unanswered after %g s",
                           unanswered, DRAIN_SECONDS)
        self._dispatcher.shutdown(cancel_pending=True, timeout=5)
        wasyncore.close_all(self._map)

    def _drain(self, deadline: float) -> int:
        """Run the loop until no connection has a request in progress; return how many had."""
        while True:
            busy = 0
            now = time.time()  # waitress stamps channels with time.time()
            for channel in [d for d in self._map.values() if isinstance(d, HTTPChannel)]:
                if channel.requests or channel.request is not None or \
                        channel.total_outbufs_len:
                    busy += 1
                elif channel.last_activity == channel.creation_time and \
                        now - channel.creation_time < _FIRST_REQUEST_SECONDS:
                    busy += 1  # just accepted: its request is on its way
                elif not channel.will_close:
                    channel.will_close = True  # idle keep-alive: closed on the next pass
            if not busy or time.monotonic() >= deadline:
                return busy
            wasyncore.loop(timeout=_POLL_SECONDS, map=self._map, use_poll=True, count=1)
