"""``python -m bridge demo`` as a newcomer runs it: a real process, read from its output.

The demo checks its own steps (exit status 1 if the bridge misbehaves); these tests also read
what it printed, that it cleaned up after itself (also on Ctrl-C), and that the ``curl`` line
of ``--keep-running`` really delivers a signed STOP.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from bridge.demo import SHARED_PHONE, STEPS, Demo, JobView, MessageView
from tests.process import ROOT

# The issue asks for under 15 s; CI machines are slower and busier, so the bound here is wider.
TIME_BOUND = 60.0


def demo_env(tmp_path: Path) -> dict[str, str]:
    """Run with a private TMPDIR, so leftovers are visible; BRIDGE_CONFIG must not leak in."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1"}
    env.pop("BRIDGE_CONFIG", None)
    return env


def section(output: str, title: str) -> str:
    """The output of one step: from its heading to the next step (or the end)."""
    start = output.index(title)
    following = output.find("\nStep ", start + 1)
    return output[start:following if following != -1 else None]


def test_demo_shows_every_decision_and_cleans_up(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "bridge", "demo"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=TIME_BOUND * 2)
    elapsed = time.monotonic() - started
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert elapsed < TIME_BOUND
    assert result.stderr == ""  # no warnings or tracebacks on a newcomer's terminal

    ordinary = section(output, "Step 1/7: An ordinary reply")
    assert "decided: an ordinary message (not an opt-out, opt-in or help) -> ignored" in ordinary
    assert "REDCap records: unchanged" in ordinary

    stop = section(output, "Step 2/7: STOP")
    assert "decided: stop -> applied to records 1, 2" in stop
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    for record, name in (("1", "Ana"), ("2", "Ben")):
        assert re.search(rf"^\s+\*\s+{record}\s+{name}\s.*{stamp}\s+ticked$", stop, re.M), stop
    for record in ("3", "4"):
        assert re.search(rf"^\s+{record}\s+\w+\s.*-\s+-$", stop, re.M), stop

    help_step = section(output, "Step 3/7: HELP")
    assert "decided: help -> recorded, REDCap not changed" in help_step
    assert "REDCap records: unchanged" in help_step

    start = section(output, "Step 4/7: START")
    assert "decided: start -> applied to records 1, 2" in start
    assert "sms_opt_out cleared, sms_opted_out unticked" in start
    assert not re.search(stamp, start.split("REDCap records after:")[1])

    free_text = section(output, "Step 5/7: Free text")
    assert 'Body="please stop texting me"' in free_text
    assert "decided: review -> flagged for a person to judge, REDCap not changed" in free_text
    assert "REDCap records: unchanged" in free_text
    # Each step shows its own log lines (the bridge writes its log a few ms behind).
    assert re.search(r"bridge log \| INFO bridge\.intake: inbound SM\w+ .*=review$", free_text,
                     re.M), free_text
    assert re.search(r"bridge log \| INFO bridge\.sync: job \d+ .* stop .*applied", stop,
                     re.M), stop

    forged = section(output, "Step 6/7: A forged webhook")
    assert "bridge answered 403" in forged
    assert "=review" not in forged
    retried = section(output, "Step 7/7: Twilio retries the STOP from step 2")
    assert "decided: duplicate -> recorded once" in retried
    assert "REDCap records unchanged" in retried

    assert "Bridge stopped (exit status 0)." in output
    assert "Every step behaved as expected." in output
    # The bridge's own log lines, shown to the reader, mask participants' numbers.
    log_lines = [line for line in output.splitlines() if "bridge log |" in line]
    assert len(log_lines) >= 8
    assert not any("8675309" in line or "5550142" in line for line in log_lines)

    workdir = Path(re.search(r"Working folder: (\S+)", output).group(1))  # type: ignore[union-attr]
    assert workdir.parent == Path(env["TMPDIR"])
    assert not workdir.exists()
    assert list(Path(env["TMPDIR"]).iterdir()) == []
    print(f"demo wall time: {elapsed:.2f} s")


class DemoProcess:
    """``python -m bridge demo`` running in the background, its output read line by line."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.env = demo_env(tmp_path)
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", "demo", *args], cwd=ROOT,
                                     env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = TIME_BOUND) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.seen))

    def finish(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(timeout)  # it ends when the pipe closes
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code

    def kill(self) -> None:
        """Make sure nothing outlives the test, whatever happened in it."""
        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def run_curl(line: str) -> str:
    """Run the printed curl line as a person would paste it (or post the same fields)."""
    if shutil.which("curl"):
        result = subprocess.run(["bash", "-c", line], capture_output=True, text=True,
                                timeout=30, check=True)
        return result.stdout
    words = shlex.split(line)
    headers, fields, url = {}, [], next(w for w in words if w.startswith("http"))
    for flag, value in itertools.pairwise(words):
        if flag == "-H":
            name, _, header = value.partition(": ")
            headers[name] = header
        elif flag == "--data-urlencode":
            fields.append(tuple(value.split("=", 1)))
    response = requests.post(url, data=fields, headers=headers, timeout=30)
    return f"{response.text}\nHTTP {response.status_code}\n"


def export_records(api_url: str, token: str) -> dict[str, dict[str, str]]:
    response = requests.post(api_url, data={"token": token, "content": "record",
                                            "format": "json"}, timeout=10)
    response.raise_for_status()
    return {row["record_id"]: row for row in response.json()}


def test_keep_running_prints_a_curl_line_whose_stop_lands(tmp_path: Path) -> None:
    demo = DemoProcess(tmp_path, "--keep-running")
    try:
        workdir = Path(demo.wait_for(r"^Working folder: (\S+)").group(1))
        demo.wait_for("^Step 7/7")
        api_url = demo.wait_for(r"^  REDCap API \(simulator\)\s+(\S+)").group(1)
        token = demo.wait_for(r"^  REDCap API token\s+([0-9A-F]{32})$").group(1)
        bridge_url = demo.wait_for(r"^  bridge\s+(http://127\.0\.0\.1:\d+)").group(1)
        curl = demo.wait_for(r"^curl .*/twilio/sms .*").group(0)
        demo.wait_for("^Watching for webhooks")
        assert requests.get(bridge_url + "/healthz", timeout=5).status_code == 200
        before = export_records(api_url, token)
        assert before["1"]["sms_opt_out"] == "" and before["2"]["sms_opt_out"] == ""

        tampered = curl.replace("Body=STOP", "Body=START")
        assert tampered != curl
        assert run_curl(tampered).rstrip().endswith("HTTP 403")
        demo.wait_for("refused POST /twilio/sms .* 403")

        answer = run_curl(curl)
        assert answer.rstrip().endswith("HTTP 200")
        assert "<Response/>" in answer
        demo.wait_for(r'^Arrived: From=\+15558675309 Body="STOP" OptOutType=STOP$')
        demo.wait_for(r"decided: stop -> applied to records 1, 2$")
        after = export_records(api_url, token)
        for record in ("1", "2"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", after[record]["sms_opt_out"])
            assert after[record]["sms_opted_out___1"] == "1"
        assert after["3"]["sms_opt_out"] == after["4"]["sms_opt_out"] == ""

        assert run_curl(curl).rstrip().endswith("HTTP 200")  # Twilio's retry: same MessageSid
        demo.wait_for(": duplicate, ignored$")
        assert export_records(api_url, token) == after

        bridge = psutil.Process(demo.proc.pid).children()
        assert len(bridge) == 1
        demo.proc.send_signal(signal.SIGTERM)
        assert demo.finish() == 0, "\n".join(demo.seen)
    finally:
        demo.kill()
    assert "Bridge stopped (exit status 0)." in demo.seen
    assert f"Removed {workdir}." in demo.seen
    assert not workdir.exists()
    assert not bridge[0].is_running()
    with pytest.raises(requests.ConnectionError):
        requests.get(bridge_url + "/healthz", timeout=2)


def test_ctrl_c_stops_the_bridge_and_removes_the_folder(tmp_path: Path) -> None:
    demo = DemoProcess(tmp_path)
    try:
        workdir = Path(demo.wait_for(r"^Working folder: (\S+)").group(1))
        demo.wait_for("^Bridge: python -m bridge serve")
        bridge = psutil.Process(demo.proc.pid).children()
        assert len(bridge) == 1 and bridge[0].is_running()
        demo.proc.send_signal(signal.SIGINT)
        assert demo.finish() == 130, "\n".join(demo.seen)
    finally:
        demo.kill()
    assert "Interrupted." in demo.seen
    assert "Bridge stopped (exit status 0)." in demo.seen
    assert not workdir.exists()
    assert not bridge[0].is_running()


def test_the_demo_reports_a_bridge_that_decides_otherwise(tmp_path: Path) -> None:
    """The self-check behind the exit status: a wrong decision or write is flagged."""
    printed: list[str] = []
    demo = Demo(tmp_path, printed.append)
    stop = next(step for step in STEPS if step.title == "STOP")
    opted_out = {"1": ("Ana", "555-867-5309", "2025-06-02 09:14:03", "1"),
                 "2": ("Ben", "+15558675309", "", "0"),
                 "3": ("Cleo", "(617) 555-0142", "2025-06-02 09:14:03", "1")}

    def message(*jobs: JobView) -> MessageView:
        return MessageView(1, "SM" + "0" * 32, SHARED_PHONE, "STOP", "STOP", "stop", jobs)

    demo.snapshot, demo.changed = opted_out, {"1", "3"}
    demo._check_step(stop, message(JobView(1, "stop", "applied", ("1",), "x", None)))
    assert demo.problems == [
        "STOP: expected jobs [('stop', 'applied', ('1', '2'))], the bridge recorded"
        " [('stop', 'applied', ('1',))]",
        "STOP: records ['1', '3'] changed, expected only ['1', '2']",
        "STOP: record 2 is not marked opted out",
    ]
    assert printed[0] == "  UNEXPECTED: " + demo.problems[0].removeprefix("STOP: ")

    demo.problems.clear()
    demo.snapshot = {**opted_out, "2": opted_out["1"], "3": ("Cleo", "", "", "0")}
    demo.changed = {"1", "2"}
    demo._check_step(stop, message(JobView(1, "stop", "applied", ("1", "2"), "x", None)))
    assert demo.problems == []
    demo.stop()
