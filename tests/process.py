"""Run ``python -m bridge serve`` as a real process, for tests that need one (and the bench)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
# Every serve process's log file, so the log-hygiene check can read them (tests/conftest.py).
LOG_FILES: list[Path] = []


# Run argv[2:] with the socket at fd argv[1] moved to fd 3 and systemd's variables set.
_ACTIVATE = """import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, *, port: int, projects: list[dict], accounts: list[dict],
                 public_url: str | None = None, extra: dict | None = None) -> Path:
    """Write a YAML config file the way an administrator would."""
    document: dict = {
        "server": {"host": "127.0.0.1", "port": port},
        "storage": {"path": str(path.parent / "bridge.db")},
        "twilio": {"accounts": accounts},
        "projects": projects,
    }
    if public_url:
        document["server"]["public_url"] = public_url
    for key, value in (extra or {}).items():
        document[key] = value
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def heart_study_config(directory: Path, api_url: str, port: int, *, account_sid: str,
                       number: str, sync: dict | None = None,
                       timezone: str = "America/New_York") -> Path:
    """The standard one-project config the process tests serve, secrets from the env."""
    return write_config(
        directory / "bridge.yaml", port=port,
        accounts=[{"account_sid": account_sid, "auth_token": "${TWILIO_AUTH_TOKEN}"}],
        projects=[{
            "name": "heart-study", "twilio": {"numbers": [number]},
            "redcap": {"url": api_url, "token": "${REDCAP_TOKEN}"},
            "phone_field": "mobile", "opt_out_field": "sms_opt_out",
            "opt_out_checkbox": "sms_opted_out", "timezone": timezone,
        }],
        extra={"sync": sync} if sync else None,
    )


class BridgeProcess:
    """``python -m bridge serve`` in a child process, its output appended to ``log_path``.

    ``pipe_logs``: the child writes its log to a pipe and this process copies it to the file,
    so the log survives what a test does to the child's own file writes (disk trouble).
    """

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None,
                 log_path: Path | None = None, pipe_logs: bool = False,
                 listen_socket: socket.socket | None = None) -> None:
        """``listen_socket``: hand the child this listening socket the way systemd's socket
        activation does (file descriptor 3, ``LISTEN_FDS``, ``LISTEN_PID``); ``port`` is then
        the socket's."""
        self.config = config
        self.port = port
        self.listen_socket = listen_socket
        self.url = f"http://127.0.0.1:{port}"
        # At DEBUG unless a test says otherwise, so the log-hygiene check sees every level.
        self.env = {"BRIDGE_LOG_LEVEL": "debug", **os.environ, **(env or {})}
        self.log_path = log_path or config.with_suffix(".log")
        LOG_FILES.append(self.log_path)
        self.pipe_logs = pipe_logs
        self.proc: subprocess.Popen[bytes] | None = None
        self._copier: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> BridgeProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        command = [sys.executable, "-m", "bridge", "serve", "--config", str(self.config)]
        passed: tuple[int, ...] = ()
        if self.listen_socket is not None:
            # As systemd does: the socket as fd 3, and LISTEN_PID naming the process that
            # runs serve (this wrapper's own PID, which exec keeps).
            fd = self.listen_socket.fileno()
            passed = (fd,)
            command = [sys.executable, "-c", _ACTIVATE, str(fd), *command]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stderr=subprocess.STDOUT,
            stdout=subprocess.PIPE if self.pipe_logs else log, pass_fds=passed,
        )
        self._log = log
        if self.pipe_logs:
            self._copier = threading.Thread(target=self._copy, args=(self.proc, log),
                                             daemon=True)
            self._copier.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.wait()
                raise RuntimeError(f"bridge exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.proc.kill()
        self.wait()
        raise RuntimeError(f"bridge did not start:\n{self.logs()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def stop(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._copier is not None:
            self._copier.join(timeout)
        self._log.close()
        return code

    @staticmethod
    def _copy(proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
        proc.stdout.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.wait()
