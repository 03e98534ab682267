"""Log set-up: under ``serve`` a thread of its own writes the lines, none lost or reordered."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from bridge import logs

SWITCHES = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """A stand-in stderr; the test's own logging set-up is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    switches = {name: getattr(logging, name) for name in SWITCHES}
    yield io.StringIO()
    for name, value in switches.items():
        setattr(logging, name, value)
    logs.stop_background()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_lines_from_many_threads_all_arrive_in_each_threads_order(stderr: io.StringIO) -> None:
    logs.setup_logging("info", "text", background=True, stream=stderr)
    log = logging.getLogger("bridge.test")

    def burst(thread: int) -> None:
        for n in range(300):
            log.info("thread %d line %d", thread, n)

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logs.stop_background()
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 6 * 300
    assert all(" INFO bridge.test: thread " in line for line in lines)
    for thread in range(6):
        mine = [line for line in lines if f"thread {thread} line" in line]
        assert [int(line.rsplit(" ", 1)[1]) for line in mine] == list(range(300))


def test_a_line_after_a_quiet_spell_is_written_at_once(stderr: io.StringIO) -> None:
    logs.setup_logging("info", "text", background=True, stream=stderr)
    logging.getLogger("bridge.test").warning("first")
    deadline = time.monotonic() + 5
    while "first" not in stderr.getvalue() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert "WARNING bridge.test: first" in stderr.getvalue()  # without stopping the writer


def test_json_lines_keep_the_exception_apart(stderr: io.StringIO) -> None:
    logs.setup_logging("debug", "json", background=True, stream=stderr)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("bridge.test").exception("it failed for %s", "+1555***5309")
    logs.stop_background()
    entry = json.loads(stderr.getvalue())
    assert (entry["level"], entry["logger"]) == ("error", "bridge.test")
    assert entry["message"] == "it failed for +1555***5309"
    assert "ValueError: boom" in entry["exception"]


def test_one_off_commands_write_directly(stderr: io.StringIO) -> None:
    logs.setup_logging("info", "text", stream=stderr)
    logging.getLogger("bridge.test").info("now")
    assert stderr.getvalue().endswith("INFO bridge.test: now\n")
    logging.getLogger("apscheduler").info("chatter")
    assert "chatter" not in stderr.getvalue()
