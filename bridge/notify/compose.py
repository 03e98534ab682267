"""Email composition: one notification, or a digest of many, as a text + HTML message.

Pure functions of the queued notifications and the configuration, so a message re-sent after
a crash is composed the same way (same subject, body and Message-ID; only Date differs).
Phone numbers are masked unless the project sets ``show_full_phone``: an inbox is not a safe
place for full identifiers. Everything a participant wrote is escaped in the HTML part.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from html import escape
from zoneinfo import ZoneInfo

import phonenumbers

from bridge.config import ProjectConfig, SmtpConfig
from bridge.phones import mask_pretty

STOP, START, UNMATCHED, FAILED, HELP, REVIEW = (
    "stop", "start", "unmatched", "failed", "help", "review")
# Fold header lines only past SMTP's hard limit: folding at 78 characters may move a whole
# subject onto a continuation line, which some readers show with a leading space. 7-bit
# transfer encodings throughout: no need for the server to support 8BITMIME or SMTPUTF8.
_POLICY = SMTP.clone(max_line_length=998, cte_type="7bit")
# Subjects list at most this many record IDs; the body always lists all of them.
SUBJECT_RECORDS = 3


@dataclass(frozen=True)
class Notice:
    """One queued notification, as read from the store."""

    id: int
    project: str
    kind: str  # stop | start | unmatched | failed | help | review
    action: str  # the participant's request: stop | start | help | review
    phone: str  # E.164
    event_at: datetime  # when the text arrived
    created_at: datetime  # when the outcome was recorded (the notification fell due)
    records: tuple[str, ...] = ()
    value: str | None = None  # what was written to the opt-out field ("" when cleared)
    error: str | None = None  # REDCap's message, for failed
    body: str | None = None  # the message text, for help and review
    attempts: int = 0
    email_id: str | None = None


def message_id(project: str, notices: Sequence[Notice], from_addr: str) -> str:
    """A Message-ID that is the same whenever the same notifications are sent together.

    A retry of the same email (after a failure, or after a crash between the server's
    acceptance and our commit) then carries the same Message-ID, which lets mail systems that
    de-duplicate by Message-ID drop the second copy.
    """
    ids = sorted(notice.id for notice in notices)
    first = min(notices, key=lambda n: n.id)
    digest = hashlib.sha256(
        f"{project}|{','.join(map(str, ids))}|{first.created_at.isoformat()}".encode()
    ).hexdigest()[:20]
    domain = parseaddr(from_addr)[1].rpartition("@")[2] or "localhost"
    return f"<sms-bridge.{ids[0]}.{digest}@{domain}>"


def compose(project: ProjectConfig, smtp: SmtpConfig, notices: Sequence[Notice], *,
            email_id: str, now: datetime) -> EmailMessage:
    """The email for one notification, or a digest when there are several."""
    if not notices:
        raise ValueError("nothing to compose")
    if len(notices) == 1:
        subject, text, html = _single(project, notices[0])
    else:
        subject, text, html = _digest(project, notices)
    message = EmailMessage(policy=_POLICY)
    message["Subject"] = subject
    message["From"] = smtp.from_addr
    message["To"] = ", ".join(project.notify.emails if project.notify else ())
    message["Date"] = format_datetime(now.astimezone(UTC))
    message["Message-ID"] = email_id
    # RFC 3834: tells vacation responders and ticket systems not to answer a machine.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"  # the same, for Microsoft Exchange
    message.set_content(text)
    message.add_alternative(_html_document(subject, html), subtype="html")
    return message


# -- one notification --------------------------------------------------------------------------

def _single(project: ProjectConfig, notice: Notice) -> tuple[str, str, str]:
    phone = _phone(project, notice.phone)
    facts: list[tuple[str, str]] = [("Project", project.name)]
    prefix = f"[{project.name}]"
    if notice.kind in (STOP, START):
        opted_out = notice.kind == STOP
        subject = f"{prefix} {'Opt-out' if opted_out else 'Opt-in'}: {_subject_records(notice)}"
        lead = ("A participant opted out of text messages (replied STOP or similar)."
                if opted_out else
                "A participant opted back in to text messages (replied START or similar).")
        facts += [
            ("New status", "opted out" if opted_out else "opted back in"),
            ("REDCap records updated", ", ".join(notice.records)),
            *_written(project, notice),
        ]
        advice = ("Do not text this participant again. If the study also contacts them "
                  "another way (email surveys, calls), check whether that should stop too."
                  if opted_out else
                  "Texts to this participant are allowed again. If other contact was stopped "
                  "because of their opt-out, the team may want to review that.")
    elif notice.kind == UNMATCHED:
        what = _request(notice.action)
        subject = f"{prefix} Unmatched {what}: {phone}"
        lead = (f"An {what} arrived from a number that matches no record in this REDCap "
                "project, so nothing was written to REDCap.")
        facts.append(("Request", _action_label(notice.action)))
        advice = (f"The participant may have a different number on file, or none. Find their "
                  f"record and record the {what} by hand (field {project.opt_out_field}); "
                  f"the bridge looks numbers up in field {project.phone_field}.")
    elif notice.kind == FAILED:
        what = _request(notice.action)
        subject = f"{prefix} Failed {what}: {phone} not recorded in REDCap"
        lead = f"REDCap refused to record an {what}, so the participant's record does not show it."
        facts += [("Request", _action_label(notice.action)),
                  ("REDCap's message", notice.error or "(none)")]
        advice = _FAILED_ADVICE
    elif notice.kind == HELP:
        subject = f"{prefix} Help request: {phone}"
        lead = "A participant asked for help by text message."
        facts.append(("Message", notice.body or ""))
        advice = ("The bridge does not reply; Twilio answers HELP with the Messaging "
                  "Service's help text when Advanced Opt-Out is on. Reach out to the "
                  "participant if they need more.")
    elif notice.kind == REVIEW:
        subject = f"{prefix} Review: possible consent revocation from {phone}"
        lead = ("A participant sent a message that may revoke their consent to text messages. "
                "It was NOT applied: this project leaves such messages to a person "
                "(revocation_phrases: review).")
        facts.append(("Message", notice.body or ""))
        advice = ("Read the message. If it withdraws consent, record the opt-out in REDCap "
                  f"(field {project.opt_out_field}) and stop texting this participant; the "
                  "participant can also reply STOP.")
    else:
        raise ValueError(f"unknown notification kind {notice.kind!r}")
    facts += [("Phone", phone), ("Received", _when(project, notice.event_at))]
    text = "\n".join([lead, "", *_text_facts(facts), "", advice, "", _FOOTER])
    html = (f"<p>{escape(lead)}</p>\n{_html_facts(facts)}\n<p>{escape(advice)}</p>\n"
            f"<p style=\"color:#666;font-size:small\">{escape(_FOOTER)}</p>")
    return subject, text, html


def _written(project: ProjectConfig, notice: Notice) -> list[tuple[str, str]]:
    if notice.kind == STOP:
        rows = [(f"Written to {project.opt_out_field}",
                 f"{notice.value or ''} ({project.timezone})")]
        if project.opt_out_checkbox:
            rows.append((f"Checkbox {project.opt_out_checkbox}", "ticked"))
        return rows
    rows = [(f"Written to {project.opt_out_field}", "cleared")]
    if project.opt_out_checkbox:
        rows.append((f"Checkbox {project.opt_out_checkbox}", "cleared"))
    return rows


_FAILED_ADVICE = (
    "Until this is fixed the participant's REDCap record does not show their request: make "
    "sure nobody contacts them against their wishes. Fix the cause REDCap names (for example "
    "the API token's rights, a deleted field, or a value REDCap does not accept), then re-queue "
    "the failed job with the bridge's retry command."
)
_FOOTER = "Sent automatically by the REDCap SMS bridge. Replies to this address are not read."


# -- a digest ----------------------------------------------------------------------------------

def _digest(project: ProjectConfig, notices: Sequence[Notice]) -> tuple[str, str, str]:
    ordered = sorted(notices, key=lambda n: (n.created_at, n.id))
    counts = Counter(_event_label(n) for n in ordered)
    summary = ", ".join(f"{count} {label.lower()}" for label, count in counts.most_common())
    subject = f"[{project.name}] Digest: {len(ordered)} events ({summary})"
    first, last = ordered[0].event_at, ordered[-1].event_at
    notify = project.notify
    if notify is not None and notify.digest_minutes > 0:
        why = (f"This project collects notifications into one email every "
               f"{notify.digest_minutes} minutes (notify.digest_minutes).")
    else:
        limit = notify.burst_limit if notify is not None else 0
        why = (f"They are combined into one email because more than {limit} fell due within a "
               "minute (notify.burst_limit), or because they waited for the mail server.")
    lead = [f"{len(ordered)} events for project {project.name}, received between "
            f"{_when(project, first)} and {_when(project, last)}: {summary}.", why]
    actions = _digest_actions(project, ordered)
    header = ("Received", "Event", "Phone", "REDCap records", "Detail")
    rows = [(_local(project, n.event_at), _event_label(n), _phone(project, n.phone),
             ", ".join(n.records) or "-", _detail(project, n)) for n in ordered]
    text = "\n".join([*lead, "", *actions, *([""] if actions else []), *_text_table(header, rows),
                      "", f"Times are {project.timezone}.", "", _FOOTER])
    html = "\n".join([
        *(f"<p>{escape(line)}</p>" for line in lead),
        *(f"<p><strong>{escape(line)}</strong></p>" for line in actions),
        _html_table(header, rows),
        f"<p>Times are {escape(project.timezone)}.</p>",
        f"<p style=\"color:#666;font-size:small\">{escape(_FOOTER)}</p>",
    ])
    return subject, text, html


def _digest_actions(project: ProjectConfig, notices: Sequence[Notice]) -> list[str]:
    """What the team must do, first: failures by REDCap message, then unmatched and review."""
    lines: list[str] = []
    failures = Counter(n.error or "(no message)" for n in notices if n.kind == FAILED)
    for error, count in failures.most_common():
        lines.append(f"ACTION NEEDED: REDCap refused {count} update{'s' * (count > 1)}: {error}")
    if failures:
        lines.append(_FAILED_ADVICE)
    unmatched = sum(1 for n in notices if n.kind == UNMATCHED)
    if unmatched:
        lines.append(f"From numbers that match no record (field {project.phone_field}): "
                     f"{unmatched}. Find those participants and record their request by hand.")
    review = sum(1 for n in notices if n.kind == REVIEW)
    if review:
        lines.append(f"Messages that may revoke consent, NOT applied: {review}. Read them and "
                     "decide.")
    return lines


def _event_label(notice: Notice) -> str:
    if notice.kind == STOP:
        return "Opted out"
    if notice.kind == START:
        return "Opted back in"
    if notice.kind == UNMATCHED:
        return f"Unmatched {_request(notice.action)}"
    if notice.kind == FAILED:
        return f"FAILED {_request(notice.action)}"
    if notice.kind == HELP:
        return "Help request"
    return "Review"


def _detail(project: ProjectConfig, notice: Notice) -> str:
    if notice.kind == STOP:
        return f"{project.opt_out_field} = {notice.value or ''}"
    if notice.kind == START:
        return f"{project.opt_out_field} cleared"
    if notice.kind == UNMATCHED:
        return "no record has this number"
    if notice.kind == FAILED:
        return f"REDCap: {notice.error or '(no message)'}"
    return f"Message: {notice.body or ''}"


# -- formatting helpers ------------------------------------------------------------------------

def _request(action: str) -> str:
    return {STOP: "opt-out", START: "opt-in"}.get(action, action)


def _action_label(action: str) -> str:
    return {STOP: "opt out (STOP)", START: "opt back in (START)"}.get(action, action)


def _subject_records(notice: Notice) -> str:
    records = notice.records
    if len(records) == 1:
        return f"record {records[0]}"
    shown = ", ".join(records[:SUBJECT_RECORDS])
    more = len(records) - SUBJECT_RECORDS
    return f"records {shown}" + (f" +{more} more" if more > 0 else "")


def _phone(project: ProjectConfig, e164: str) -> str:
    if project.notify is not None and project.notify.show_full_phone:
        try:
            number = phonenumbers.parse(e164, None)
        except phonenumbers.NumberParseException:
            return e164
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return mask_pretty(e164)


def _local(project: ProjectConfig, moment: datetime) -> str:
    return moment.astimezone(ZoneInfo(project.timezone)).strftime("%Y-%m-%d %H:%M:%S")


def _when(project: ProjectConfig, moment: datetime) -> str:
    local = moment.astimezone(ZoneInfo(project.timezone))
    utc = moment.astimezone(UTC)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} ({utc:%Y-%m-%d %H:%M:%S} UTC)"


def _text_facts(facts: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(label) for label, _ in facts) + 1
    return [f"{label + ':':<{width}} {value}" for label, value in facts]


def _html_facts(facts: Sequence[tuple[str, str]]) -> str:
    rows = "\n".join(
        f"<tr><th style=\"text-align:left;padding-right:1em\">{escape(label)}</th>"
        f"<td>{escape(value)}</td></tr>" for label, value in facts)
    return f"<table>\n{rows}\n</table>"


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned columns; the last column (free text) is left unpadded."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]

    def line(row: Sequence[str]) -> str:
        cells = [f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False)]
        return "  ".join([*cells, row[-1]]).rstrip()

    return [line(header), line(["-" * w for w in widths] + ["-" * len(header[-1])]),
            *(line(row) for row in rows)]


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(name)}</th>" for name in header)
    body = "\n".join("<tr>" + "".join(f"<td>{escape(value)}</td>" for value in row) + "</tr>"
                     for row in rows)
    return (f"<table class=\"digest\">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n"
            "</tbody>\n</table>")


# One style block rather than a style on every cell keeps a 1000-row digest small.
_STYLE = ("table.digest{border-collapse:collapse}"
          "table.digest th,table.digest td{border:1px solid #ccc;padding:2px 6px;"
          "text-align:left;vertical-align:top}")


def _html_document(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{escape(title)}"
            f"</title><style>{_STYLE}</style></head>\n"
            f"<body style=\"font-family:sans-serif\">\n{body}\n</body></html>\n")
