"""Log set-up: text or JSON lines on stderr, written by a thread of their own under ``serve``.

Why a thread: every inbound text logs a line, and so does every job the worker applies.
Writing a line is a system call, and a thread making one hands the GIL over; under a blast,
with a dozen threads waiting for it, each hand-over cost more than the line itself (measured
in bench/README.md). Under ``serve`` the threads that log only format the line and queue it
(stdlib ``QueueHandler``); one writer thread (``QueueListener``) writes whatever has queued up
and flushes once the queue is empty, at most every 50 ms while lines keep coming, so a burst
of lines costs a few writes. A line reaches stderr within 50 ms. A SIGKILL can lose the lines
not yet written; the store, not the log, is the record of every message and change, and a
normal exit writes every line.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import queue
import sys
import time
from logging.handlers import QueueHandler, QueueListener
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Library chatter at INFO carries nothing an operator needs; their debug output never
# includes request bodies (where tokens live), but keep it quiet unless asked.
QUIET_LOGGERS = ("apscheduler", "urllib3", "waitress.queue", "twilio.http_client")

LINGER_SECONDS = 0.05

_writer: _Writer | None = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str, background: bool = False,
                  stream: TextIO | None = None) -> None:
    """Log at ``level`` to ``stream`` (stderr) as ``fmt`` (text or json); ``background``:
    written by a thread of its own."""
    stop_background()
    stream = stream or sys.stderr
    # Every inbound text and every applied job logs a line, and building a LogRecord was a
    # third of a webhook's own CPU time. The formats use none of these, so skip collecting
    # them: the caller's file and line (a walk up the stack), the thread and process names,
    # and the process id (a system call). The logging HOWTO's "Optimization" section names
    # exactly these switches.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    root = logging.getLogger()
    if background:
        global _writer
        _writer = _Writer(stream)
        handler: logging.Handler = QueueHandler(_writer.records)
        _writer.start()
    else:
        handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)  # a QueueHandler formats before queuing: the whole line
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def stop_background() -> None:
    """Write every queued line and stop the writer thread (at exit, or on a new set-up)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


atexit.register(stop_background)


class _Writer(QueueListener):
    """Writes queued lines through a buffer, flushed whenever the queue runs empty."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.buffer = io.StringIO()
        handler = logging.StreamHandler(self.buffer)
        handler.setFormatter(logging.Formatter("%(message)s"))  # formatted when queued
        self.records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        super().__init__(self.records, handler)

    def dequeue(self, block: bool) -> logging.LogRecord:
        try:
            return self.records.get_nowait()
        except queue.Empty:
            pass
        if self.buffer.tell():
            self.flush()
            # Let a burst gather rather than wake for each line: one write per LINGER at most
            # while lines keep coming; a line after a quiet spell is written at once.
            time.sleep(LINGER_SECONDS)
        return self.records.get(block)

    def flush(self) -> None:
        text = self.buffer.getvalue()
        if text:
            self.buffer.seek(0)
            self.buffer.truncate()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stderr gone or full: nowhere left to report it

    def stop(self) -> None:
        super().stop()
        self.flush()
