"""Assembly: the one place real adapters are plugged together, and ``serve``.

``serve`` runs waitress (a production WSGI server) and the APScheduler-driven worker in one
process. SIGTERM or SIGINT stops taking requests, lets in-flight ones finish, lets the worker
finish or hand back its batch (claimed jobs return to ``pending``), and closes the store.
A lock file next to the store keeps a second process from serving the same store, which would
otherwise apply jobs twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from bridge.config import Config
from bridge.forward import Forwarder
from bridge.http_server import HttpServer, ListenError
from bridge.intake import Intake
from bridge.notify import POLL_SECONDS as MAIL_POLL_SECONDS
from bridge.notify import Mailer
from bridge.retention import purge_bodies
from bridge.socket_activation import inherited_sockets
from bridge.store import Store, StoreError
from bridge.sync import Worker
from bridge.web import create_app

logger = logging.getLogger(__name__)

# Bodies older than storage.keep_bodies_days are purged at start-up and then this often.
PURGE_INTERVAL_HOURS = 6


def _expected_skip(record: logging.LogRecord) -> bool:
    """False for APScheduler's warning that a tick was skipped because the last one still runs.

    A worker tick that drains a backlog within the request budget takes longer than
    ``poll_seconds``; skipping the ticks due meanwhile is the intent (``max_instances=1``), not
    something an operator should be warned about at every long drain.
    """
    return not str(record.msg).startswith('Execution of job "%s" skipped: maximum number')


logging.getLogger("apscheduler.scheduler").addFilter(_expected_skip)


class AlreadyRunning(Exception):
    """Another bridge process holds this store."""


@dataclass
class Runtime:
    config: Config
    store: Store
    intake: Intake
    worker: Worker
    app: Flask
    stop: threading.Event
    scheduler: BackgroundScheduler
    forwarder: Forwarder
    mailer: Mailer | None = None  # only with an smtp section

    @classmethod
    def build(cls, config: Config) -> Runtime:
        store = Store(config.storage.path)
        stop = threading.Event()
        intake = Intake(config, store)
        worker = Worker(config, store, stop=stop)
        mailer = Mailer(config, store, stop=stop) if config.smtp else None
        scheduler = BackgroundScheduler(timezone="UTC")

        def readiness() -> str | None:
            return None if scheduler.running else "scheduler not running"

        forwarder = Forwarder(config.projects, server_threads=config.server.threads)
        app = create_app(config, store, intake, readiness=readiness, forwarder=forwarder)
        return cls(config=config, store=store, intake=intake, worker=worker, app=app,
                   stop=stop, scheduler=scheduler, forwarder=forwarder, mailer=mailer)

    def start_background(self) -> None:
        recovered = self.store.recover_in_flight()
        if recovered:
            logger.info("recovered %d jobs left in progress by a previous run", recovered)
        self.scheduler.add_job(self.worker.tick, "interval",
                               seconds=self.config.sync.poll_seconds, id="worker",
                               max_instances=1, coalesce=True, misfire_grace_time=None)
        if self.mailer is not None:
            self.scheduler.add_job(self.mailer.tick, "interval", seconds=MAIL_POLL_SECONDS,
                                   id="mailer", max_instances=1, coalesce=True,
                                   misfire_grace_time=None)
        self.scheduler.add_job(self.purge_bodies, "interval", hours=PURGE_INTERVAL_HOURS,
                               id="purge", next_run_time=datetime.now(UTC), max_instances=1,
                               coalesce=True, misfire_grace_time=None)
        self.scheduler.start()

    def purge_bodies(self) -> None:
        """The scheduled purge of old message bodies; a failure waits for the next run."""
        try:
            purge_bodies(self.store, self.config.storage.keep_bodies_days)
        except StoreError as exc:
            logger.error("purge of old message bodies failed (retried in %d h): %s",
                         PURGE_INTERVAL_HOURS, exc)

    def shutdown(self) -> None:
        """After the server has stopped taking requests: finish forwards, then background
        jobs, then close the store they write to."""
        self.stop.set()
        self.forwarder.close()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.store.close()


def serve(config: Config) -> int:
    lock = _lock_store(config.storage.path)
    runtime = Runtime.build(config)
    try:
        server = HttpServer(runtime.app, config.server, inherited_sockets())
    except ListenError as exc:
        raise ListenError(f"{config.path}: {exc}") from exc

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: shutting down", signal.Signals(signum).name)
        server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runtime.start_background()
    where = ", ".join(server.addresses())
    if server.inherited:
        where += " (sockets from systemd; server.host and server.port are not used)"
    count = len(config.projects)
    logger.info("listening on %s (webhook: POST /twilio/sms; %d project%s)", where, count,
                "" if count == 1 else "s")
    try:
        server.serve()  # returns once stopped and every accepted request is answered
    finally:
        runtime.shutdown()
        lock.close()
        logger.info("stopped")
    return 0


def _lock_store(path: Path) -> IO[str]:
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+")  # noqa: SIM115 - held open for the process lifetime
    except OSError as exc:  # a file where the folder should be, no permission, a full disk
        raise StoreError(f"cannot open store {path}: {exc} (see storage.path)") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise AlreadyRunning(f"another bridge process is using {path}") from exc
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
