"""``python -m bridge demo``: the whole path on one machine, offline, in a few seconds.

A newcomer should see the bridge do its job before configuring anything. The demo starts the
REDCap simulator in this process with a four-record project, starts the bridge the way it is
deployed (``python -m bridge serve`` as a child process, a config file, secrets from the
environment), sends webhooks signed as Twilio signs them, and reports after each one what the
bridge recorded (read from its SQLite store and its log) and what REDCap holds. Each outcome is
checked against what should happen and the exit status is 1 if anything differs, so the demo
doubles as a smoke test of an installation.

Everything lives in one temporary folder that is removed at the end, also after Ctrl-C or
SIGTERM. ``--keep-running`` leaves both servers up afterwards and prints a ``curl`` line that
sends a signed STOP, then reports every webhook that arrives until interrupted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Literal

import requests

from bridge.inbound import sign
from bridge.sim import Call, RedcapSimulator, SimProject, make_metadata
from bridge.store import APPLIED, FAILED, HELP, OPEN_STATUSES, REVIEW, UNMATCHED

ROOT = Path(__file__).resolve().parent.parent

PROJECT = "demo-study"
TIMEZONE = "America/New_York"
ACCOUNT_SID = "AC" + "de" * 16  # a made-up account: nothing here ever reaches Twilio
SERVICE_SID = "MG" + "de" * 16
STUDY_NUMBER = "+16175550100"
SHARED_PHONE = "+15558675309"
CLEO_PHONE = "+16175550142"
DEV_PHONE = "+16175550178"

# (record ID, first name, phone as the study team typed it)
PARTICIPANTS = (
    ("1", "Ana", "555-867-5309"),
    ("2", "Ben", "+15558675309"),  # Ana's parent: the same phone, typed differently
    ("3", "Cleo", "(617) 555-0142"),
    ("4", "Dev", "617.555.0178"),
)
COLUMNS = ("first_name", "mobile", "sms_opt_out", "sms_opted_out___1")
STEP_TIMEOUT = 10.0
_BRIDGE_LINE = re.compile(r"^[A-Z]+ bridge[.:]")
_ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_UNSTORED = re.compile(r"bridge\.\w+: refused|: duplicate, ignored$")

Snapshot = dict[str, tuple[str, ...]]  # record ID -> values of COLUMNS


class DemoError(Exception):
    """A component could not be started; the message says which and why."""


@dataclass(frozen=True)
class Step:
    """One webhook and what the bridge must make of it."""

    title: str
    why: str
    sender: str
    body: str
    opt_out_type: str = ""
    # None: the message needs no job; otherwise the job's action, final status and records.
    action: str | None = None
    status: str = ""
    records: tuple[str, ...] = ()
    redcap: Literal["unchanged", "opted out", "opted in"] = "unchanged"


STEPS = (
    Step("An ordinary reply", "Most replies are answers to the study, not consent changes.",
         SHARED_PHONE, "Yes, I took my pills this morning"),
    Step("STOP", "Twilio's Advanced Opt-Out adds OptOutType=STOP and blocks the number.",
         SHARED_PHONE, "STOP", "STOP", action="stop", status=APPLIED, records=("1", "2"),
         redcap="opted out"),
    Step("HELP", "Twilio has already answered with the help text; nothing changes.",
         SHARED_PHONE, "HELP", "HELP", action="help", status=HELP),
    Step("START", "The participant opts back in: the opt-out is cleared everywhere.",
         SHARED_PHONE, "START", "START", action="start", status=APPLIED, records=("1", "2"),
         redcap="opted in"),
    Step("Free text", "Twilio does not treat this as an opt-out, but the FCC's 2025 rule may.",
         CLEO_PHONE, "please stop texting me", action="review", status=REVIEW),
)


@dataclass(frozen=True)
class JobView:
    id: int
    action: str
    status: str
    records: tuple[str, ...]
    value: str | None
    error: str | None


@dataclass(frozen=True)
class MessageView:
    id: int
    sid: str
    sender: str
    body: str
    opt_out_type: str
    intent: str
    jobs: tuple[JobView, ...]

    @property
    def settled(self) -> bool:
        return all(job.status not in OPEN_STATUSES for job in self.jobs)


class StoreView:
    """Read-only look into the bridge's store: what it recorded and decided, as it did."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True,
                                     isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self._conn.close()

    def message(self, sid: str) -> MessageView | None:
        row = self._conn.execute("SELECT * FROM messages WHERE message_sid=?", (sid,)).fetchone()
        return self._view(row) if row else None

    def messages_after(self, last_id: int) -> list[MessageView]:
        rows = self._conn.execute("SELECT * FROM messages WHERE id>? ORDER BY id",
                                  (last_id,)).fetchall()
        return [self._view(row) for row in rows]

    def last_message_id(self) -> int:
        return int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0])

    def count_messages(self, sid: str) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM messages WHERE message_sid=?",
                                      (sid,)).fetchone()[0])

    def _view(self, row: sqlite3.Row) -> MessageView:
        jobs = self._conn.execute(
            "SELECT id, action, status, records, value_written, last_error FROM jobs"
            " WHERE message_id=? ORDER BY id", (row["id"],)).fetchall()
        return MessageView(
            id=row["id"], sid=row["message_sid"], sender=row["from_phone"],
            body=row["body"] or "", opt_out_type=row["opt_out_type"], intent=row["intent"],
            jobs=tuple(JobView(job["id"], job["action"], job["status"],
                               tuple(json.loads(job["records"])), job["value_written"],
                               job["last_error"]) for job in jobs))

    def settled(self, sid: str, timeout: float = STEP_TIMEOUT) -> MessageView | None:
        """The message once the worker has finished its jobs (None if it never arrived)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.message(sid)
            if (message is not None and message.settled) or time.monotonic() > deadline:
                return message
            time.sleep(0.05)


class LogTail:
    """New complete lines of the bridge's log, without the timestamp."""

    _STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._held: list[str] = []

    def read(self) -> list[str]:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        lines = [self._STAMP.sub("", line)
                 for line in complete.decode(errors="replace").splitlines()]
        held, self._held = self._held, []
        return held + lines

    def hold(self, lines: list[str]) -> None:
        """Give lines back, to be returned first by the next ``read``."""
        self._held = lines + self._held

    def until(self, wanted: Callable[[list[str]], bool], timeout: float = 3.0) -> list[str]:
        """Lines read until ``wanted(lines)`` holds: the worker logs just after it commits."""
        lines = self.read()
        deadline = time.monotonic() + timeout
        while not wanted(lines) and time.monotonic() < deadline:
            time.sleep(0.05)
            lines += self.read()
        return lines


class BridgeChild:
    """``python -m bridge serve`` as a child process, its output going to a log file.

    It runs in its own session, so a Ctrl-C in the terminal reaches only the demo, which
    then stops the bridge itself, in order, before removing the folder the bridge writes to.
    """

    def __init__(self, config: Path, port: int, env: dict[str, str], log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log
        self._log: IO[bytes] = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "--log-level", "info", "serve", "--config",
             str(config)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"the bridge exited with status {self.proc.returncode}:\n"
                                + self.log_path.read_text(errors="replace"))
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise DemoError("the bridge did not become ready:\n"
                        + self.log_path.read_text(errors="replace"))

    def stop(self) -> int:
        """SIGTERM, as systemd would; the bridge finishes in-flight work and exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def demo_project() -> SimProject:
    project = SimProject(title="Demo study", metadata=make_metadata("record_id", [
        ("first_name", "contact", "text", ""),
        ("mobile", "contact", "text", ""),
        ("sms_opt_out", "contact", "text", "datetime_seconds_ymd"),
        ("sms_opted_out", "contact", "checkbox", "", "1, Opted out of SMS"),
    ]))
    for record, name, phone in PARTICIPANTS:
        project.add_record(record, {"first_name": name, "mobile": phone})
    return project


def config_text(port: int, store: Path, api_url: str) -> str:
    """The config file, as an administrator would write it (secrets come from the environment)."""
    return f"""\
# Written by `python -m bridge demo`. Every setting is explained in config.example.yaml.
server:
  host: 127.0.0.1
  port: {port}
storage:
  path: {json.dumps(str(store))}
twilio:
  accounts:
    - account_sid: {ACCOUNT_SID}
      auth_token: "${{TWILIO_AUTH_TOKEN}}"
sync:
  poll_seconds: 0.1
projects:
  - name: {PROJECT}
    twilio:
      numbers: ["{STUDY_NUMBER}"]
      messaging_service_sids: [{SERVICE_SID}]
    redcap:
      url: {json.dumps(api_url)}
      token: "${{REDCAP_TOKEN}}"
    phone_field: mobile
    opt_out_field: sms_opt_out
    opt_out_checkbox: sms_opted_out
    timezone: {TIMEZONE}
"""


def twilio_form(sender: str, body: str, opt_out_type: str = "",
                sid: str | None = None) -> dict[str, str]:
    """The form Twilio posts for an inbound SMS to a number in a Messaging Service."""
    sid = sid or "SM" + uuid.uuid4().hex
    form = {
        "AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "Body": body, "From": sender,
        "FromCountry": "US", "MessageSid": sid, "MessagingServiceSid": SERVICE_SID,
        "NumMedia": "0", "NumSegments": "1", "SmsMessageSid": sid, "SmsSid": sid,
        "SmsStatus": "received", "To": STUDY_NUMBER, "ToCountry": "US",
    }
    if opt_out_type:
        form["OptOutType"] = opt_out_type
    return form


def curl_command(url: str, form: dict[str, str], auth_token: str) -> str:
    """A shell line that posts ``form`` with a valid X-Twilio-Signature.

    ``--data-urlencode`` sends each value exactly (a ``+`` in a phone number would otherwise
    arrive as a space and break the signature); field order does not matter to Twilio's
    scheme, which sorts the names, but sorted fields are easier to compare.
    """
    parts = ["curl", "-sS", "-w", r"\nHTTP %{http_code}\n", url,
             "-H", f"X-Twilio-Signature: {sign(url, form, auth_token)}"]
    for name in sorted(form):
        parts += ["--data-urlencode", f"{name}={form[name]}"]
    return shlex.join(parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    def __init__(self, workdir: Path, out: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.say = out
        self.project = demo_project()
        self.simulator = RedcapSimulator()
        self.auth_token = uuid.uuid4().hex  # 32 hex characters, like a real one
        self.redcap_token = ""
        self.bridge: BridgeChild | None = None
        self.store: StoreView | None = None
        self.log: LogTail | None = None
        self.session = requests.Session()
        self.problems: list[str] = []
        self.calls_seen = 0
        self.snapshot: Snapshot = {}
        self.changed: set[str] = set()
        self.watching = False

    # -- set-up and tear-down ----------------------------------------------------------------

    def start(self) -> None:
        self.redcap_token = self.simulator.add_project(self.project)
        self.simulator.start()
        self.say(f"REDCap (simulated): {self.simulator.api_url}  project 'Demo study',"
                 f" {len(PARTICIPANTS)} records")
        port = free_port()
        config = self.workdir / "bridge.yaml"
        config.write_text(config_text(port, self.workdir / "bridge.db", self.simulator.api_url))
        env = {**os.environ, "TWILIO_AUTH_TOKEN": self.auth_token,
               "REDCAP_TOKEN": self.redcap_token}
        env.pop("BRIDGE_CONFIG", None)
        started = time.monotonic()
        self.bridge = BridgeChild(config, port, env, self.workdir / "bridge.log")
        self.bridge.wait_ready()
        self.say(f"Bridge: python -m bridge serve --config {config}")
        self.say(f"        ready on {self.bridge.url} after {time.monotonic() - started:.1f} s"
                 " (secrets from TWILIO_AUTH_TOKEN and REDCAP_TOKEN)")
        self.store = StoreView(self.workdir / "bridge.db")
        self.log = LogTail(self.bridge.log_path)
        self._show_log(self.log.read())

    def stop(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.bridge is not None:
            code = self.bridge.stop()
            self.say(f"Bridge stopped (exit status {code}).")
            if code != 0:
                self.problems.append(f"the bridge exited with status {code}")
        self.simulator.stop()
        self.session.close()

    @property
    def webhook_url(self) -> str:
        assert self.bridge is not None
        return self.bridge.url + "/twilio/sms"

    # -- the scripted steps ------------------------------------------------------------------

    def run_steps(self) -> None:
        self.snapshot = self._records()
        self.say("")
        self.say("REDCap records before:")
        self._table(self.snapshot, set())
        self.say(f"Ana and Ben share one phone, typed two ways; both are {SHARED_PHONE}.")
        total = len(STEPS) + 2
        for number, step in enumerate(STEPS, start=1):
            self._heading(number, total, step.title, step.why)
            form = twilio_form(step.sender, step.body, step.opt_out_type)
            self._post(form)
            self._check_step(step, self._report(form["MessageSid"]))
        self._forged(len(STEPS) + 1, total)
        self._retry(len(STEPS) + 2, total)

    def _heading(self, number: int, total: int, title: str, why: str) -> None:
        self.say("")
        self.say(f"Step {number}/{total}: {title}")
        self.say(f"  {why}")

    def _post(self, form: dict[str, str], signature: str | None = None,
              idempotency: str | None = None) -> requests.Response:
        shown = f'From={form["From"]} Body="{form["Body"]}"'
        if form.get("OptOutType"):
            shown += f" OptOutType={form['OptOutType']}"
        self.say(f"  Twilio -> POST /twilio/sms  {shown}")
        headers = {
            "X-Twilio-Signature": signature or sign(self.webhook_url, form, self.auth_token),
            "I-Twilio-Idempotency-Token": idempotency or str(uuid.uuid4()),
            "User-Agent": "TwilioProxy/1.1",
        }
        response = self.session.post(self.webhook_url, data=form, headers=headers, timeout=15)
        text = response.text.strip()
        if response.ok and text.endswith("<Response/>"):
            text = "empty TwiML: nothing is texted back"
        self.say(f"  bridge answered {response.status_code} ({text})")
        return response

    def _report(self, sid: str) -> MessageView | None:
        """Print what the bridge decided and did for one message, and REDCap afterwards."""
        assert self.store is not None and self.log is not None
        message = self.store.settled(sid)
        if message is None:
            self.say("  decided: nothing was stored")
            return None
        for line in self._decisions(message):
            self.say("  " + line)
        finished = [job.id for job in message.jobs if job.status in (APPLIED, UNMATCHED, FAILED)]
        # The bridge writes its log from a thread of its own, a few ms behind: wait for this
        # message's intake line and its jobs' lines, or they show under the next step.
        wanted = [f"inbound {sid} ", *(f"job {i} " for i in finished)]
        lines = self.log.until(lambda ls: all(any(w in line for line in ls) for w in wanted))
        self._show_log(lines)
        calls = self._new_calls()
        if calls:
            self.say(f"  REDCap API calls by the bridge: {calls}")
        before, after = self.snapshot, self._records()
        changed = {record for record in after if after[record] != before.get(record)}
        if changed:
            self.say("  REDCap records after:")
            self._table(after, changed)
        else:
            self.say("  REDCap records: unchanged")
        self.snapshot, self.changed = after, changed
        return message

    @staticmethod
    def _decisions(message: MessageView) -> list[str]:
        if not message.jobs and message.intent == "none":
            return ["decided: an ordinary message (not an opt-out, opt-in or help)"
                    " -> ignored, REDCap is not touched"]
        if not message.jobs:
            return [f"decided: {message.intent}, but no project has the number it was sent to"
                    " -> recorded as unrouted"]
        lines: list[str] = []
        for job in message.jobs:
            records = ", ".join(job.records)
            if job.status == APPLIED and job.action == "stop":
                lines += [f"decided: stop -> applied to records {records}",
                          f"  sms_opt_out = {job.value} (the project's time zone, {TIMEZONE}),"
                          " sms_opted_out ticked"]
            elif job.status == APPLIED:
                lines += [f"decided: start -> applied to records {records}",
                          "  sms_opt_out cleared, sms_opted_out unticked"]
            elif job.status == HELP:
                lines += ["decided: help -> recorded, REDCap not changed",
                          "  (with notify.on: [help] the study team would get an email)"]
            elif job.status == REVIEW:
                lines += ["decided: review -> flagged for a person to judge, REDCap not changed",
                          "  (notify.on: [review] emails the team; revocation_phrases: apply"
                          " would treat it as STOP)"]
            elif job.status == UNMATCHED:
                lines.append(f"decided: {job.action} -> no record has this number (unmatched)")
            else:
                lines.append(f"decided: {job.action} -> {job.status}"
                             + (f": {job.error}" if job.error else ""))
        return lines

    def _check_step(self, step: Step, message: MessageView | None) -> None:
        if message is None:
            self._problem(step.title, "the bridge did not store the message")
            return
        got = [(job.action, job.status, job.records) for job in message.jobs]
        want = [(step.action, step.status, step.records)] if step.action else []
        if got != want:
            self._problem(step.title, f"expected jobs {want}, the bridge recorded {got}")
        if not self.changed <= set(step.records):
            self._problem(step.title, f"records {sorted(self.changed)} changed,"
                          f" expected only {list(step.records) or 'none'}")
        for record in step.records:
            _name, _mobile, opt_out, box = self.snapshot[record]
            if step.redcap == "opted out" and not (opt_out and box == "1"):
                self._problem(step.title, f"record {record} is not marked opted out")
            if step.redcap == "opted in" and (opt_out or box != "0"):
                self._problem(step.title, f"record {record} is still marked opted out")

    def _forged(self, number: int, total: int) -> None:
        self._heading(number, total, "A forged webhook",
                      "Anyone can post to a public URL; only Twilio can sign with the auth"
                      " token.")
        form = twilio_form(DEV_PHONE, "STOP", "STOP")
        forged = sign(self.webhook_url, form, "0" * 32)
        response = self._post(form, signature=forged)
        assert self.store is not None and self.log is not None
        self._show_log(self.log.until(lambda ls: any("refused" in line for line in ls)))
        stored = self.store.message(form["MessageSid"]) is not None
        self.say("  decided: refused, nothing stored" if not stored
                 else "  decided: STORED (it should have been refused)")
        if response.status_code != 403 or stored:
            self._problem("forged webhook", f"answered {response.status_code}, stored={stored}")

    def _retry(self, number: int, total: int) -> None:
        self._heading(number, total, "Twilio retries the STOP from step 2",
                      "A retried delivery has the same MessageSid; applying it again would"
                      " undo the START.")
        assert self.store is not None and self.log is not None
        first = next(m for m in self.store.messages_after(0) if m.body == "STOP")
        form = twilio_form(first.sender, first.body, first.opt_out_type, sid=first.sid)
        response = self._post(form)
        self._show_log(self.log.until(lambda ls: any("duplicate" in line for line in ls)))
        copies = self.store.count_messages(first.sid)
        after = self._records()
        unchanged = after == self.snapshot
        self.say(f"  decided: duplicate -> recorded once ({copies} message with this"
                 f" MessageSid); REDCap records {'unchanged' if unchanged else 'CHANGED'}")
        if response.status_code != 200 or copies != 1 or not unchanged:
            self._problem("retried STOP", f"answered {response.status_code}, {copies} copies,"
                          f" REDCap unchanged={unchanged}")
        self.snapshot = after

    def _problem(self, step: str, text: str) -> None:
        self.problems.append(f"{step}: {text}")
        self.say(f"  UNEXPECTED: {text}")

    # -- keep running ------------------------------------------------------------------------

    def show_playground(self) -> None:
        assert self.bridge is not None
        form = twilio_form(SHARED_PHONE, "STOP", "STOP")
        short = {name: form[name] for name in
                 ("AccountSid", "Body", "From", "MessageSid", "OptOutType", "To")}
        records = shlex.join(["curl", "-sS", self.simulator.api_url, "-d",
                              f"token={self.redcap_token}", "-d", "content=record",
                              "-d", "format=json"])
        self.say("")
        self.say("Both keep running until you press Ctrl-C:")
        self.say(f"  REDCap API (simulator)  {self.simulator.api_url}")
        self.say(f"  REDCap API token        {self.redcap_token}")
        self.say(f"  bridge                  {self.bridge.url}"
                 "  (POST /twilio/sms, GET /healthz, GET /readyz)")
        self.say(f"  bridge config           {self.workdir / 'bridge.yaml'}")
        self.say(f"  bridge log              {self.bridge.log_path}")
        self.say(f"  Twilio auth token       {self.auth_token}  (demo account {ACCOUNT_SID})")
        self.say("")
        self.say("Send a signed STOP from Ana and Ben's phone, as Twilio would:")
        self.say("")
        self.say(curl_command(self.webhook_url, short, self.auth_token))
        self.say("")
        self.say("The signature covers the URL and every field: change one and the bridge"
                 " answers 403. Sent twice, it is recorded once (same MessageSid).")
        self.say("Read the records through the REDCap API:")
        self.say("")
        self.say(records)
        self.say("")

    def watch(self) -> None:
        """Report every webhook that arrives, until interrupted or the bridge dies."""
        assert self.store is not None and self.bridge is not None and self.log is not None
        self.say(f"Watching for webhooks. Ctrl-C stops both and removes {self.workdir}.")
        self.watching = True
        last = self.store.last_message_id()
        while self.bridge.proc.poll() is None:
            # Webhooks that leave no new message (refused, duplicates) show only in the log.
            lines = self.log.read()
            unstored = [line for line in lines if _UNSTORED.search(line)]
            if unstored:
                self.say("")
                self.say("Arrived: a webhook that was not stored as a new message")
                self._show_log(unstored)
            self.log.hold([line for line in lines if line not in unstored])
            for message in self.store.messages_after(last):
                last = message.id
                self.say("")
                shown = f'From={message.sender} Body="{message.body}"'
                if message.opt_out_type:
                    shown += f" OptOutType={message.opt_out_type}"
                self.say(f"Arrived: {shown}")
                self._report(message.sid)
            time.sleep(0.2)
        self.problems.append(f"the bridge exited unexpectedly (see {self.bridge.log_path})")

    # -- output helpers ----------------------------------------------------------------------

    def _records(self) -> Snapshot:
        return {record: tuple(self.project.value(record, column) for column in COLUMNS)
                for record in self.project.record_ids()}

    def _table(self, snapshot: Snapshot, changed: set[str]) -> None:
        rows = [("", "record", "first_name", "mobile", "sms_opt_out", "sms_opted_out")]
        for record, (name, mobile, opt_out, box) in snapshot.items():
            rows.append(("*" if record in changed else "", record, name, mobile,
                         opt_out or "-", "ticked" if box == "1" else "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.say("   " + "  ".join(cell.ljust(width)
                                       for cell, width in zip(row, widths, strict=True)).rstrip())

    def _new_calls(self) -> str:
        calls: Sequence[Call] = self.simulator.calls[self.calls_seen:]
        self.calls_seen += len(calls)
        counts = Counter(call.content if call.content != "record"
                         else f"record {call.action}" for call in calls)
        return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in counts.items())

    def _show_log(self, lines: list[str]) -> None:
        for line in lines:
            if _BRIDGE_LINE.match(line):
                self.say(f"  bridge log | {line}")


@contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (terminal closed) all end the demo through the same clean-up.

    SIGINT is set explicitly: Python leaves it ignored when the demo was started in the
    background by a non-interactive shell, and it must still stop then.
    """
    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in _ENDING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _shielded() -> Iterator[None]:
    """Let clean-up finish even when Ctrl-C is pressed again."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _ENDING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(keep_running: bool = False, out: Callable[[str], None] | None = None) -> int:
    """Run the demo; 0 when every step behaved as expected, 1 if not, 130 when interrupted."""
    say = out or (lambda line: print(line, flush=True))
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    say("REDCap SMS opt-out bridge: demo")
    say("Everything runs on this machine: a simulated REDCap, the bridge, and webhooks signed")
    say("as Twilio signs them. Nothing is sent anywhere.")
    say(f"Working folder: {workdir} (removed at the end)")
    demo = Demo(workdir, say)
    interrupted = False
    try:
        with _interrupts_as_keyboard_interrupt():
            try:
                demo.start()
                demo.run_steps()
                if keep_running:
                    demo.show_playground()
                    demo.watch()
            except KeyboardInterrupt:
                interrupted = not demo.watching
    except DemoError as exc:
        demo.problems.append(str(exc))
        say(f"error: {exc}")
    finally:
        with _shielded():
            demo.stop()
            shutil.rmtree(workdir, ignore_errors=True)
            say(f"Removed {workdir}.")
    if interrupted:
        say("Interrupted.")
        return 130
    say("")
    if demo.problems:
        say(f"{len(demo.problems)} thing(s) did not behave as expected:")
        for problem in demo.problems:
            say(f"  - {problem}")
        return 1
    if keep_running:
        say("Every step behaved as expected.")
    else:
        say(f"Every step behaved as expected. Done in {time.monotonic() - started:.1f} s.")
        say("Next: `python -m bridge demo --keep-running` to send your own webhooks, then the"
            " README's 'Set up for real'.")
    return 0
