"""Notification emails end to end: signed texts through the bridge, the worker against the
REDCap simulator, the mailer against a real SMTP server on loopback."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from bridge.config import ConfigError, NotifyConfig, SmtpConfig, load_config
from bridge.notify import Mailer
from bridge.notify.compose import message_id
from bridge.notify.queue import NotificationQueue
from bridge.sim import RedcapSimulator, SimProject
from tests.conftest import PARTICIPANT, Bridge, classic_project, make_config, project_config
from tests.process import free_port
from tests.smtp_server import Inbox, smtp_server

FROM = "REDCap SMS bridge <redcap-sms@example.edu>"
TEAM = ("team@example.edu", "pi@example.edu")
ALL_KINDS = frozenset({"stop", "start", "unmatched", "failed", "help", "review"})
OTHER = "+12025550143"
MASKED = "+1 (555) ***-5309"


class Clock:
    """Wall-clock time that a test can move forward (backoff and digest windows)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def smtp_config(port: int, **changes: object) -> SmtpConfig:
    values: dict = {"host": "127.0.0.1", "from_addr": FROM, "port": port, "starttls": False,
                    "timeout_seconds": 5.0}
    values.update(changes)
    return SmtpConfig(**values)


@dataclasses.dataclass
class Study:
    bridge: Bridge
    mailer: Mailer
    redcap: SimProject
    clock: Clock

    def rows(self) -> list[dict]:
        return [dict(row) for row in self.bridge.store.read().execute(
            "SELECT * FROM notifications ORDER BY id")]


StudyFactory = Callable[..., Study]


@pytest.fixture
def study(tmp_path: Path, sim: RedcapSimulator) -> Iterator[StudyFactory]:
    """A bridge with one notifying project; ``port`` is where the mailer finds SMTP."""
    made: list[Study] = []

    def factory(port: int, records: dict[str, str] | None = None, *, token: str | None = None,
                smtp: dict | None = None, **notify: object) -> Study:
        redcap = classic_project(records if records is not None else
                                 {"1042": "555-867-5309", "1043": "(555) 867-5309"})
        project_token = sim.add_project(redcap)
        settings: dict = {"emails": TEAM, "on": ALL_KINDS}
        settings.update(notify)
        project = project_config(sim, token or project_token, notify=NotifyConfig(**settings))
        config = dataclasses.replace(make_config(tmp_path, [project]),
                                     smtp=smtp_config(port, **(smtp or {})))
        bridge = Bridge(config)
        clock = Clock()
        made.append(Study(bridge, Mailer(config, bridge.store, clock=clock), redcap, clock))
        return made[-1]

    yield factory
    for each in made:
        each.bridge.store.close()


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_a_stop_is_emailed_with_records_status_time_and_a_masked_number(
        study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port)
        s.bridge.text("STOP")
        s.bridge.drain()
        assert s.mailer.tick() == 1
        assert s.mailer.tick() == 0
    [received] = inbox.messages
    message = received.message
    assert message["Subject"] == "[heart-study] Opt-out: records 1042, 1043"
    assert message["From"] == FROM
    assert message["To"] == "team@example.edu, pi@example.edu"
    assert message["Auto-Submitted"] == "auto-generated"
    assert abs(parsedate_to_datetime(message["Date"]).timestamp() - time.time()) < 60
    assert received.mail_from == "redcap-sms@example.edu"
    assert received.rcpt_tos == list(TEAM)
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    written = s.redcap.value("1042", "sms_opt_out")
    assert written
    for body in (text, html):
        assert "heart-study" in body
        assert "1042, 1043" in body
        assert "opted out" in body
        assert written in body
        assert MASKED in body
    for shown in (text, html, message["Subject"]):
        assert "867" not in shown  # the middle digits never leave the bridge
    [row] = s.rows()
    assert row["status"] == "sent" and row["email_id"] == message["Message-ID"]
    assert row["kind"] == "stop" and row["sent_at"]


def test_an_opt_in_names_the_records_and_the_cleared_field(study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port, {"7": PARTICIPANT})
        s.bridge.text("STOP")
        s.bridge.drain()
        s.bridge.text("START")
        s.bridge.drain()
        assert s.mailer.tick() == 2
    subjects = [str(r.message["Subject"]) for r in inbox.messages]
    assert subjects == ["[heart-study] Opt-out: record 7", "[heart-study] Opt-in: record 7"]
    text, html = parts(inbox.messages[1].message)
    assert "opted back in" in text and "opted back in" in html
    assert "sms_opt_out: cleared" in text
    assert s.redcap.value("7", "sms_opt_out") == ""


def test_a_repeated_stop_is_no_change_of_consent_and_is_not_emailed_again(
        study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port, {"7": PARTICIPANT})
        for _ in range(3):
            s.bridge.text("STOP")
            s.bridge.drain()
        s.bridge.text("START")
        s.bridge.drain()
        s.bridge.text("START")
        s.bridge.drain()
        assert s.mailer.tick() == 2
    subjects = [str(r.message["Subject"]) for r in inbox.messages]
    assert subjects == ["[heart-study] Opt-out: record 7", "[heart-study] Opt-in: record 7"]
    assert s.bridge.job_statuses() == ["applied"] * 5


def test_a_stop_after_a_start_coalesced_away_is_a_new_opt_out_and_is_emailed(
        study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port, {"7": PARTICIPANT})
        s.bridge.text("STOP")
        s.bridge.drain()
        s.bridge.text("START")
        s.bridge.text("STOP")
        s.bridge.drain()
        assert s.mailer.tick() == 2
    subjects = [str(r.message["Subject"]) for r in inbox.messages]
    assert subjects == ["[heart-study] Opt-out: record 7"] * 2
    assert s.bridge.job_statuses() == ["applied", "superseded", "applied"]


def test_unmatched_help_and_review_each_get_their_email(study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port)
        s.bridge.text("STOP", OTHER)  # no record has this number
        s.bridge.text("HELP")
        s.bridge.text("Please stop texting me <b>now</b> & forever — merci 🙏", OTHER)
        s.bridge.drain()
        assert s.mailer.tick() == 3
    mail = inbox.by_subject()
    assert set(mail) == {
        "[heart-study] Unmatched opt-out: +1 (202) ***-0143",
        f"[heart-study] Help request: {MASKED}",
        "[heart-study] Review: possible consent revocation from +1 (202) ***-0143",
    }
    text, _ = parts(mail["[heart-study] Unmatched opt-out: +1 (202) ***-0143"].message)
    assert "matches no record" in text and "nothing was written" in text
    review = mail["[heart-study] Review: possible consent revocation from +1 (202) ***-0143"]
    assert review.raw.isascii()  # 7-bit transfer encoding: no 8BITMIME needed
    text, html = parts(review.message)
    assert "Please stop texting me <b>now</b> & forever — merci 🙏" in text
    assert "NOT applied" in text and "NOT applied" in html
    assert "Please stop texting me &lt;b&gt;now&lt;/b&gt; &amp; forever" in html
    assert "<b>now" not in html


def test_a_failed_write_carries_redcaps_message_and_what_to_do(study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port, token="0" * 32)  # REDCap refuses this token
        s.bridge.text("STOP")
        s.bridge.drain()
        assert s.mailer.tick() == 1
    message = inbox.messages[0].message
    assert message["Subject"] == f"[heart-study] Failed opt-out: {MASKED} not recorded in REDCap"
    text, html = parts(message)
    assert "You do not have permissions to use the API" in text
    assert "retry command" in text and "retry command" in html


def test_show_full_phone_reveals_the_number(study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port, show_full_phone=True)
        s.bridge.text("HELP")
        s.bridge.drain()
        s.mailer.tick()
    message = inbox.messages[0].message
    assert message["Subject"] == "[heart-study] Help request: +1 555-867-5309"
    assert "+1 555-867-5309" in parts(message)[0]


def test_only_the_configured_kinds_are_emailed(study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port, on=frozenset({"start"}))
        s.bridge.text("STOP")
        s.bridge.text("HELP")
        s.bridge.drain()
        assert s.mailer.tick() == 0
    assert inbox.messages == [] and s.rows() == []


def test_a_burst_of_50_stops_gives_burst_limit_emails_then_one_digest(
        study: StudyFactory) -> None:
    participants = {str(2000 + i): f"+1617555{1000 + i:04d}" for i in range(50)}
    with smtp_server() as (inbox, port):
        s = study(port, participants)
        for phone in participants.values():
            s.bridge.text("STOP", phone)
        s.bridge.drain()
        assert s.mailer.tick() == 5
        assert s.mailer.tick() == 0  # the rest wait for the digest
        s.clock.advance(30)
        assert s.mailer.tick() == 0
        s.clock.advance(31)
        assert s.mailer.tick() == 1
        s.clock.advance(3600)
        assert s.mailer.tick() == 0
    singles, digest = inbox.messages[:5], inbox.messages[5]
    assert [str(m.message["Subject"]) for m in singles] == [
        f"[heart-study] Opt-out: record {2000 + i}" for i in range(5)]
    assert digest.message["Subject"] == "[heart-study] Digest: 45 events (45 opted out)"
    text, html = parts(digest.message)
    for record in (str(2000 + i) for i in range(5, 50)):
        assert f" {record} " in text
        assert f">{record}</td>" in html
    for record in (str(2000 + i) for i in range(5)):
        assert f">{record}</td>" not in html
    assert html.count("<tr>") == 46  # header + 45 rows
    assert "+1 (617) ***-1049" in html and "5551049" not in text
    assert "burst_limit" in text
    assert {row["status"] for row in s.rows()} == {"sent"}
    assert len({row["email_id"] for row in s.rows()}) == 6


def test_digest_minutes_collects_everything_into_one_email(study: StudyFactory) -> None:
    participants = {"1": "+16175551001", "2": "+16175551002", "3": "+16175551003"}
    with smtp_server() as (inbox, port):
        s = study(port, participants, digest_minutes=15)
        for phone in participants.values():
            s.bridge.text("STOP", phone)
        s.bridge.drain()
        assert s.mailer.tick() == 0
        s.clock.advance(14 * 60)
        assert s.mailer.tick() == 0
        s.clock.advance(61)
        assert s.mailer.tick() == 1
    [digest] = inbox.messages
    assert digest.message["Subject"] == "[heart-study] Digest: 3 events (3 opted out)"
    text, _ = parts(digest.message)
    assert "every 15 minutes" in text
    assert all(f"+1 (617) ***-{n}" in text for n in ("1001", "1002", "1003"))


def test_smtp_down_delays_email_but_not_redcap_and_each_is_delivered_once(
        study: StudyFactory) -> None:
    port = free_port()  # nothing listens here yet
    s = study(port, {"1": PARTICIPANT, "2": OTHER})
    s.bridge.text("STOP")
    s.bridge.text("STOP", OTHER)
    s.bridge.drain()
    assert s.redcap.value("1", "sms_opt_out") and s.redcap.value("2", "sms_opt_out")
    assert s.bridge.job_statuses() == ["applied", "applied"]
    assert s.mailer.tick() == 0
    rows = s.rows()
    assert [row["status"] for row in rows] == ["pending", "pending"]
    assert all(row["attempts"] == 1 for row in rows)
    assert all(5 <= row["next_attempt_at"] - time.time() <= 10 for row in rows)
    assert "connection refused" in rows[0]["last_error"]
    s.clock.advance(60)
    assert s.mailer.tick() == 0  # still down: attempt 2
    assert all(row["attempts"] == 2 for row in s.rows())

    with smtp_server(port=port) as (inbox, _):
        assert s.mailer.tick() == 0  # not due yet: backoff holds
        s.clock.advance(60)
        assert s.mailer.tick() == 2
        assert s.mailer.tick() == 0
        s.clock.advance(3600)
        assert s.mailer.tick() == 0
        restarted = s.bridge.restart()
        fresh = Mailer(restarted.config, restarted.store, clock=s.clock)
        assert fresh.tick() == 0
        restarted.store.close()
    assert sorted(str(m.message["Subject"]) for m in inbox.messages) == [
        "[heart-study] Opt-out: record 1", "[heart-study] Opt-out: record 2"]


def test_a_temporary_refusal_is_retried_and_delivered_once(study: StudyFactory) -> None:
    with smtp_server(Inbox(defer_data=1)) as (inbox, port):
        s = study(port)
        s.bridge.text("STOP")
        s.bridge.drain()
        assert s.mailer.tick() == 0
        [row] = s.rows()
        assert row["status"] == "pending" and "451" in row["last_error"]
        s.clock.advance(60)
        assert s.mailer.tick() == 1
        assert s.mailer.tick() == 0
    assert len(inbox.messages) == 1
    assert s.rows()[0]["status"] == "sent"


def test_one_refused_recipient_does_not_stop_the_others(study: StudyFactory) -> None:
    with smtp_server(Inbox(refuse={"pi@example.edu"})) as (inbox, port):
        s = study(port)
        s.bridge.text("STOP")
        s.bridge.drain()
        assert s.mailer.tick() == 1
    assert inbox.messages[0].rcpt_tos == ["team@example.edu"]
    [row] = s.rows()
    assert row["status"] == "sent"
    assert "pi@example.edu" in row["last_error"] and "550" in row["last_error"]


def test_every_recipient_refused_stays_queued_and_is_logged_loudly(
        study: StudyFactory, caplog: pytest.LogCaptureFixture) -> None:
    with smtp_server(Inbox(refuse=set(TEAM))) as (inbox, port):
        s = study(port)
        s.bridge.text("STOP")
        s.bridge.drain()
        with caplog.at_level(logging.WARNING, logger="bridge.notify"):
            assert s.mailer.tick() == 0
    assert inbox.messages == []
    [row] = s.rows()
    assert row["status"] == "pending" and row["attempts"] == 1
    assert "refused every recipient" in row["last_error"]
    assert "notify.emails" in row["last_error"]
    assert any(r.levelno == logging.ERROR and "refused every recipient" in r.getMessage()
               for r in caplog.records)


def test_a_wrong_password_keeps_emails_queued_until_it_is_fixed(
        study: StudyFactory, caplog: pytest.LogCaptureFixture) -> None:
    with smtp_server(users={"bridge": "right"}, auth_over_plain=True) as (inbox, port):
        s = study(port, smtp={"username": "bridge", "password": "wrong"})
        s.bridge.text("STOP")
        s.bridge.drain()
        with caplog.at_level(logging.WARNING, logger="bridge.notify"):
            assert s.mailer.tick() == 0
            s.clock.advance(60)
            assert s.mailer.tick() == 0
        [row] = s.rows()
        assert (row["status"], row["attempts"]) == ("pending", 2)
        assert "535" in row["last_error"] and "smtp.password" in row["last_error"]
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2 and all("a setting needs fixing" in e for e in errors)
        assert all("wrong" not in r.getMessage() for r in caplog.records)
        # The operator fixes the password and restarts.
        config = s.bridge.config
        assert config.smtp is not None
        fixed = dataclasses.replace(config, smtp=dataclasses.replace(config.smtp,
                                                                     password="right"))
        s.clock.advance(600)
        assert Mailer(fixed, s.bridge.store, clock=s.clock).tick() == 1
    assert len(inbox.messages) == 1 and inbox.messages[0].login == "bridge"


def test_an_email_claimed_by_a_process_that_died_is_sent_once_after_restart(
        study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port)
        s.bridge.text("STOP")
        s.bridge.drain()
        queue = NotificationQueue(s.bridge.store)
        [notice] = queue.due(time.time())
        email_id = message_id("heart-study", [notice], FROM)
        assert queue.claim(email_id, [notice.id])  # ...and the process dies mid-send
        restarted = s.bridge.restart()
        mailer = Mailer(restarted.config, restarted.store, clock=s.clock)
        assert mailer.tick() == 1
        assert mailer.tick() == 0
        restarted.store.close()
    [received] = inbox.messages
    assert received.message["Message-ID"] == email_id


def test_a_crash_between_acceptance_and_commit_resends_with_the_same_message_id(
        study: StudyFactory) -> None:
    """The one duplicate window, pinned: the copy is identical down to its Message-ID."""
    with smtp_server() as (inbox, port):
        s = study(port)
        s.bridge.text("STOP")
        s.bridge.drain()
        assert s.mailer.tick() == 1
        with s.bridge.store.transaction() as conn:  # the state a crash before the commit leaves
            conn.execute("UPDATE notifications SET status='sending', sent_at=NULL")
        restarted = s.bridge.restart()
        assert Mailer(restarted.config, restarted.store, clock=s.clock).tick() == 1
        restarted.store.close()
    first, second = inbox.messages
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.message["Subject"] == second.message["Subject"]


def test_stopping_hands_claimed_notifications_back_untouched(study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port)
        s.bridge.text("STOP")
        s.bridge.drain()
        s.mailer.stop.set()
        assert s.mailer.tick() == 0
    assert inbox.messages == []
    [row] = s.rows()
    assert (row["status"], row["attempts"], row["email_id"]) == ("pending", 0, None)


def test_notifications_of_a_project_without_notify_wait(study: StudyFactory) -> None:
    with smtp_server() as (inbox, port):
        s = study(port)
        s.bridge.text("STOP")
        s.bridge.drain()
        config = dataclasses.replace(
            s.bridge.config, projects=(dataclasses.replace(s.bridge.config.projects[0],
                                                           notify=None),))
        assert Mailer(config, s.bridge.store).tick() == 0
    assert inbox.messages == []
    assert s.rows()[0]["status"] == "pending"


def test_notify_in_a_project_file_without_smtp_stops_startup(tmp_path: Path) -> None:
    """The startup check, for a project defined in projects_dir: the error names that file."""
    main = tmp_path / "bridge.yaml"
    main.write_text(f"""
storage: {{path: bridge.db}}
twilio: {{accounts: [{{account_sid: AC{"1" * 32}, auth_token: "{"a" * 32}"}}]}}
projects_dir: projects
""", encoding="utf-8")
    (tmp_path / "projects").mkdir()
    project_file = tmp_path / "projects" / "heart-study.yaml"
    project_file.write_text(f"""
twilio: {{numbers: ["+18057166646"]}}
redcap: {{url: "https://redcap.example.edu/api/", token: {"A" * 32}}}
phone_field: mobile
opt_out_field: sms_opt_out
notify: {{emails: [team@example.edu]}}
""", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(main)
    assert caught.value.file == str(project_file)
    assert caught.value.key == "notify"
    assert "smtp section" in caught.value.message
    with main.open("a", encoding="utf-8") as handle:
        handle.write("smtp: {host: 127.0.0.1, from: bridge@example.edu}\n")
    assert load_config(main).project("heart-study").notify is not None
