"""Listening sockets handed over by systemd (socket activation): restarts refuse no webhook.

Without it, while ``serve`` restarts (``systemctl restart`` after a configuration change,
``Restart=`` after a crash) nothing listens on the port for a second or more. Twilio's
webhook is then refused, retried at most once by default, and a STOP sent in that window can
be lost (README, "What is not promised"). With ``config/bridge.socket`` installed, systemd
owns the listening socket and keeps it open across restarts: connections that arrive
meanwhile wait in its backlog, and the next process answers them.

The protocol is sd_listen_fds(3): when ``LISTEN_PID`` is this process, ``LISTEN_FDS`` sockets
start at file descriptor 3. It is a few lines of reading the environment, so it is done here
rather than through python-systemd, which needs libsystemd and a compiler to install.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

FIRST_FD = 3  # SD_LISTEN_FDS_START
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class SocketActivationError(Exception):
    """systemd passed something ``serve`` cannot listen on; the message says what to fix."""


def inherited_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets systemd passed to this process, or [] when it passed none.

    The variables are removed once read, as sd_listen_fds(3) does, so that nothing this
    process starts takes them for its own.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if pid is None or count is None or pid != str(os.getpid()):
        return []  # not socket-activated, or the variables were meant for another process
    for name in _VARIABLES:
        env.pop(name, None)
    if not count.isdigit() or int(count) < 1:
        raise SocketActivationError(f"LISTEN_FDS={count!r} from systemd is not a number of"
                                    " sockets")
    sockets = []
    for fd in range(FIRST_FD, FIRST_FD + int(count)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise SocketActivationError(f"file descriptor {fd} from systemd is not a socket"
                                        f" ({exc.strerror})") from exc
        sock.set_inheritable(False)
        if sock.type != socket.SOCK_STREAM or \
                not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise SocketActivationError(
                f"file descriptor {fd} from systemd is not a listening stream socket: use"
                " ListenStream= (not ListenDatagram=) and Accept=no in the .socket unit")
        sockets.append(sock)
    return sockets


def describe(sock: socket.socket) -> str:
    """``127.0.0.1:8080``, ``[::1]:8080`` or a Unix socket's path, for the start-up line."""
    address = sock.getsockname()
    if sock.family == socket.AF_INET:
        return f"{address[0]}:{address[1]}"
    if sock.family == socket.AF_INET6:
        return f"[{address[0]}]:{address[1]}"
    return str(address)
