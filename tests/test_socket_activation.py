"""Socket activation and draining stops: a restart under load refuses and drops no webhook.

The restart test plays systemd: it owns the listening socket, hands it to ``serve`` as file
descriptor 3 with ``LISTEN_FDS``/``LISTEN_PID``, stops the bridge with SIGTERM while webhooks
keep arriving, and starts the next process on the same socket.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from bridge.inbound import sign
from bridge.sim import RedcapSimulator
from bridge.socket_activation import SocketActivationError, describe, inherited_sockets
from tests.conftest import AUTH_TOKEN, classic_project, twilio_params
from tests.faults import StoreReader
from tests.process import BridgeProcess, free_port
from tests.test_serve import serve_config


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """The socket systemd would hold: bound and listening before any bridge runs."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    yield sock
    sock.close()


class Sender:
    """Posts signed STOPs from several threads, each on a new connection (as a webhook from
    Twilio may arrive), and keeps every outcome."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/twilio/sms"
        # (MessageSid, "200" or the error, sent at, answered at: time.monotonic())
        self.outcomes: list[tuple[str, str, float, float]] = []
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> Sender:
        for thread in self._threads:
            thread.start()
        return self

    def finish(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def answered(self) -> int:
        with self._lock:
            return sum(1 for _, outcome, _, _ in self.outcomes if outcome == "200")

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                number = next(self._numbers)
            params = twilio_params("STOP", f"+1312555{number:04d}")
            params["MessageSid"] = f"SM{number:032d}"
            sent = time.monotonic()
            outcome = self._post(params)
            with self._lock:
                self.outcomes.append((params["MessageSid"], outcome, sent, time.monotonic()))

    def _post(self, params: dict[str, str]) -> str:
        body = urlencode(params)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", "/twilio/sms", body=body, headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": sign(self.url, params, AUTH_TOKEN)})
            return str(connection.getresponse().status)
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()


def test_a_restart_under_load_refuses_and_drops_no_webhook(
        tmp_path: Path, sim: RedcapSimulator, listener: socket.socket) -> None:
    token = sim.add_project(classic_project())
    port = listener.getsockname()[1]
    config = serve_config(tmp_path, sim, token, free_port())  # its own port is not used
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}
    first = BridgeProcess(config, port, env=env, listen_socket=listener,
                          log_path=tmp_path / "first.log").start()
    sender = Sender(port).start()
    try:
        assert wait(lambda: sender.answered() >= 50)
        stopping = time.monotonic()
        assert first.stop() == 0  # webhooks keep coming meanwhile; they wait in the socket
        stopped_at = sender.answered()
        second = BridgeProcess(config, port, env=env, listen_socket=listener,
                               log_path=tmp_path / "second.log").start()
        started = time.monotonic()
        assert wait(lambda: sender.answered() >= stopped_at + 50)
    finally:
        sender.finish()
    assert second.stop() == 0

    failed = [(sid, outcome) for sid, outcome, _, _ in sender.outcomes if outcome != "200"]
    assert not failed, failed[:5]
    # Some webhooks were sent after the stop began and waited for the second process.
    assert any(sent >= stopping and answered >= started
               for _, _, sent, answered in sender.outcomes)
    store = StoreReader(tmp_path / "bridge.db")
    assert store.stored_sids() == {sid for sid, _, _, _ in sender.outcomes}
    for bridge in (first, second):
        logs = bridge.logs()
        assert f"listening on http://127.0.0.1:{port} (sockets from systemd;" in logs
        assert "unanswered" not in logs and "stopped" in logs


def test_sigterm_answers_a_request_still_arriving_and_closes_idle_connections(
        tmp_path: Path, sim: RedcapSimulator) -> None:
    """A webhook half-received when SIGTERM lands is read to the end, stored and answered;
    an idle keep-alive connection is closed rather than holding the stop up."""
    token = sim.add_project(classic_project())
    port = free_port()
    config = serve_config(tmp_path, sim, token, port)
    bridge = BridgeProcess(config, port,
                           env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token}).start()
    url = f"http://127.0.0.1:{port}/twilio/sms"
    params = twilio_params("STOP")
    body = urlencode(params).encode()
    head = (f"POST /twilio/sms HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-Twilio-Signature: {sign(url, params, AUTH_TOKEN)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    idle.request("GET", "/healthz")
    assert idle.getresponse().read() and idle.sock is not None  # kept alive, now idle
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(head + body[:40])
        time.sleep(0.2)  # the server has read the first part
        began = time.monotonic()
        bridge.signal(signal.SIGTERM)
        time.sleep(0.5)  # the stop has begun: the listening socket is closed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(body[40:])
        answer = slow.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 200 OK"), answer
    assert bridge.wait() == 0
    assert time.monotonic() - began < 5  # the idle connection did not hold it up
    assert idle.sock.recv(1) == b""  # closed by the server
    idle.close()
    assert StoreReader(tmp_path / "bridge.db").stored_sids() == {params["MessageSid"]}


def wait(condition: object, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


# -- reading systemd's variables -----------------------------------------------------------------

def test_no_variables_or_another_process_s_means_no_sockets() -> None:
    assert inherited_sockets({}) == []
    theirs = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert inherited_sockets(theirs) == []
    assert theirs == {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}  # left alone


def test_a_bad_count_is_a_clear_error_and_the_variables_are_consumed() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "two", "LISTEN_FDNAMES": "web"}
    with pytest.raises(SocketActivationError, match="LISTEN_FDS='two'"):
        inherited_sockets(env)
    assert env == {}


def test_describe_names_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        assert describe(sock) == f"127.0.0.1:{sock.getsockname()[1]}"


def test_a_datagram_socket_from_systemd_is_refused_with_the_fix(tmp_path: Path,
                                                                sim: RedcapSimulator) -> None:
    token = sim.add_project(classic_project())
    config = serve_config(tmp_path, sim, token, free_port())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
        datagram.bind(("127.0.0.1", 0))
        bridge = BridgeProcess(config, datagram.getsockname()[1], listen_socket=datagram,
                               env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDCAP_TOKEN": token})
        with pytest.raises(RuntimeError, match="bridge exited with 1"):
            bridge.start(timeout=20)
    assert "not a listening stream socket: use ListenStream=" in bridge.logs()
