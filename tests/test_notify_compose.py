"""Email composition: digest contents, escaping, masking, subjects, Message-IDs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

from bridge.config import NotifyConfig, ProjectConfig, RedcapTarget, SmtpConfig
from bridge.notify.compose import Notice, compose, message_id

FROM = "Brücke <redcap-sms@example.edu>"
SMTP = SmtpConfig(host="mail.example.edu", from_addr=FROM)
T0 = datetime(2025, 3, 1, 19, 2, 11, tzinfo=UTC)
PROJECT = ProjectConfig(
    name="heart-study", source=Path("p.yaml"),
    redcap=RedcapTarget("https://redcap.example.edu/api/", "0" * 32), phone_field="mobile",
    opt_out_field="sms_opt_out", opt_out_checkbox="sms_opted_out", numbers=("+18057166646",),
    timezone="America/New_York",
    notify=NotifyConfig(emails=("team@example.edu",), burst_limit=5))


def make(id_: int, kind: str, **fields: object) -> Notice:
    values: dict = {"id": id_, "project": "heart-study", "kind": kind, "action": kind,
                    "phone": "+15558675309", "event_at": T0 + timedelta(seconds=id_),
                    "created_at": T0 + timedelta(seconds=id_)}
    values.update(fields)
    return Notice(**values)


def roundtrip(message: EmailMessage) -> tuple[EmailMessage, str, str]:
    parsed = message_from_bytes(message.as_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    text, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert text is not None and html is not None
    return parsed, text.get_content(), html.get_content()


MIXED = [
    make(1, "stop", records=("1042",), value="2025-03-01 14:02:12"),
    make(2, "start", records=("7", "8")),
    make(3, "unmatched", action="stop", phone="+442079460958"),
    make(4, "failed", action="stop", error="The value 'x' is not a valid datetime"),
    make(5, "failed", action="start", error="The value 'x' is not a valid datetime"),
    make(6, "failed", action="stop", error="You do not have permissions to use the API"),
    make(7, "review", action="review", body="don't <script>alert(1)</script> text me"),
    make(8, "help", action="help", body="HELP"),
]


def test_a_digest_lists_every_event_with_what_needs_doing_first() -> None:
    message, text, html = roundtrip(compose(PROJECT, SMTP, MIXED, email_id="<a@b>", now=T0))
    assert message["Subject"] == (
        "[heart-study] Digest: 8 events (2 failed opt-out, 1 opted out, 1 opted back in, "
        "1 unmatched opt-out, 1 failed opt-in, 1 review, 1 help request)")
    assert text.index("ACTION NEEDED: REDCap refused 2 updates: The value 'x' is not a valid"
                      " datetime") < text.index("Received  ")
    assert "ACTION NEEDED: REDCap refused 1 update: You do not have permissions" in text
    assert "From numbers that match no record (field mobile): 1." in text
    assert "Messages that may revoke consent, NOT applied: 1." in text
    for needle in ("1042", "7, 8", "sms_opt_out = 2025-03-01 14:02:12", "sms_opt_out cleared",
                   "+44 ******0958", "+1 (555) ***-5309", "Message: HELP",
                   "2025-03-01 14:02:12"):
        assert needle in text, needle
    assert "don't <script>alert(1)</script> text me" in text
    assert "<script>" not in html
    assert "don&#x27;t &lt;script&gt;alert(1)&lt;/script&gt; text me" in html
    assert html.count("<tr>") == 9
    assert "Times are America/New_York." in text


def test_text_table_columns_line_up() -> None:
    _, text, _ = roundtrip(compose(PROJECT, SMTP, MIXED, email_id="<a@b>", now=T0))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Received  "))
    table = lines[header:header + 2 + len(MIXED)]
    start = table[0].index("Event")
    assert all(line[start - 2:start] == "  " for line in table)
    assert table[1].startswith("-------------------  -")


def test_headers() -> None:
    message, _, _ = roundtrip(compose(PROJECT, SMTP, MIXED[:1], email_id="<x.1@example.edu>",
                                      now=T0))
    assert message["From"] == FROM  # a non-ASCII display name survives (as an encoded word)
    assert message["To"] == "team@example.edu"
    assert message["Date"] == "Sat, 01 Mar 2025 19:02:11 +0000"
    assert message["Message-ID"] == "<x.1@example.edu>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Auto-Response-Suppress"] == "All"


def test_subjects_name_a_few_records_and_count_the_rest() -> None:
    many = make(1, "stop", records=("1", "2", "3", "4", "5"), value="v")
    message, text, _ = roundtrip(compose(PROJECT, SMTP, [many], email_id="<a@b>", now=T0))
    assert message["Subject"] == "[heart-study] Opt-out: records 1, 2, 3 +2 more"
    assert "1, 2, 3, 4, 5" in text


def test_a_long_subject_is_not_folded() -> None:
    raw = compose(PROJECT, SMTP, MIXED, email_id="<a@b>", now=T0).as_bytes()
    subject_line = next(line for line in raw.splitlines() if line.startswith(b"Subject:"))
    assert subject_line.endswith(b"1 help request)")


def test_message_ids_are_stable_per_set_of_notifications() -> None:
    one = message_id("heart-study", MIXED[:3], FROM)
    assert one == message_id("heart-study", list(reversed(MIXED[:3])), FROM)
    assert one != message_id("heart-study", MIXED[:2], FROM)
    assert one != message_id("sleep-study", MIXED[:3], FROM)
    assert one.startswith("<sms-bridge.1.") and one.endswith("@example.edu>")
