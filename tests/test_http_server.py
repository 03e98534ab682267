"""HttpServer in-process: several inherited sockets, its own port, and a stop that drains."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

from bridge.config import ServerConfig
from bridge.http_server import HttpServer
from tests.process import free_port


def slow_app(release: threading.Event) -> Callable[..., Iterable[bytes]]:
    """Answers /slow only once ``release`` is set, everything else at once."""
    def app(environ: dict, start_response: Callable[..., object]) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/slow":
            release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"ok\n"]
    return app


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def serving(server: HttpServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    return thread


def get(port: int, path: str = "/") -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return f"{response.status} {response.read().decode().strip()}"
    finally:
        connection.close()


def test_every_inherited_socket_is_served_and_closed_at_the_stop(
        release: threading.Event) -> None:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    ports = [sock.getsockname()[1] for sock in sockets]
    server = HttpServer(slow_app(release), ServerConfig(), sockets)
    assert server.inherited
    assert server.addresses() == [f"http://127.0.0.1:{port}" for port in ports]
    thread = serving(server)
    assert [get(port) for port in ports] == ["200 ok", "200 ok"]
    server.stop()
    server.stop()  # a second signal while stopping changes nothing
    thread.join(10)
    assert not thread.is_alive()
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_the_stop_waits_for_a_request_in_a_handler_and_writes_its_answer(
        release: threading.Event) -> None:
    port = free_port()
    server = HttpServer(slow_app(release), ServerConfig(port=port), [])
    assert not server.inherited and server.addresses() == [f"http://127.0.0.1:{port}"]
    thread = serving(server)
    answers: list[str] = []
    waiting = threading.Thread(target=lambda: answers.append(get(port, "/slow")))
    waiting.start()
    time.sleep(0.3)  # the request is in its handler, which waits for release
    server.stop()
    time.sleep(0.3)
    assert thread.is_alive() and not answers  # draining: the answer is still owed
    release.set()
    waiting.join(10)
    thread.join(10)
    assert answers == ["200 ok"]
    assert not thread.is_alive()
