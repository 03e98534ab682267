"""SMTP: the server answers, TLS works as configured, and the login is accepted.

Connects exactly as the mailer will (implicit TLS or STARTTLS with certificate checks) and
sends no mail. The password is never part of a result or a log line.
"""

from __future__ import annotations

import smtplib
import ssl

from bridge.check.report import CheckResult, Status
from bridge.config import SmtpConfig

SECTION_PREFIX = "smtp"


def check_smtp(smtp: SmtpConfig, timeout: float | None = None) -> list[CheckResult]:
    section = f"{SECTION_PREFIX} {smtp.host}:{smtp.port}"
    results: list[CheckResult] = []

    def add(name: str, status: Status, summary: str, hint: str = "") -> None:
        results.append(CheckResult(section, name, status, summary, hint))

    wait = min(smtp.timeout_seconds, timeout or smtp.timeout_seconds)
    context = ssl.create_default_context()
    tls = "TLS" if smtp.ssl else "STARTTLS" if smtp.starttls else "no TLS"
    try:
        conn: smtplib.SMTP = (smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=wait,
                                               context=context) if smtp.ssl
                              else smtplib.SMTP(smtp.host, smtp.port, timeout=wait))
    except (OSError, smtplib.SMTPException) as exc:
        add("smtp.reachable", Status.FAIL, f"cannot connect: {_describe(exc)}",
            "check smtp.host and smtp.port, and that this machine may connect to the mail"
            " server (firewall); port 465 needs ssl: true, 587 needs starttls: true")
        if smtp.username:
            add("smtp.login", Status.SKIP, "login: not checked (no connection)")
        return results
    try:
        conn.ehlo()
        if smtp.starttls:
            if not conn.has_extn("starttls"):
                add("smtp.reachable", Status.FAIL, "the server does not offer STARTTLS",
                    "use the port where the server offers STARTTLS (usually 587), or ssl: true"
                    " for implicit TLS (usually 465); starttls: false sends the password and"
                    " notifications unencrypted")
                if smtp.username:
                    add("smtp.login", Status.SKIP, "login: not checked (no TLS)")
                return results
            conn.starttls(context=context)
            conn.ehlo()
        add("smtp.reachable", Status.OK, f"the mail server answers ({tls})")
        if smtp.username:
            try:
                conn.login(smtp.username, smtp.password or "")
            except smtplib.SMTPAuthenticationError as exc:
                add("smtp.login", Status.FAIL,
                    f"login refused for {smtp.username!r}: {exc.smtp_code} {_text(exc.smtp_error)}",
                    "check smtp.username and the password variable; some servers need an"
                    " app password or a relay permission for this host")
            except smtplib.SMTPNotSupportedError:
                add("smtp.login", Status.FAIL, "the server offers no login (AUTH)",
                    "remove smtp.username and smtp.password if the server relays for this host"
                    " without a login, or use the server's submission port")
            else:
                add("smtp.login", Status.OK, f"login accepted for {smtp.username!r}")
    except (OSError, smtplib.SMTPException) as exc:
        add("smtp.reachable", Status.FAIL, f"the conversation failed: {_describe(exc)}",
            "a certificate error means the server's certificate is not trusted for"
            f" {smtp.host}; anything else: try again, then ask the mail administrator")
    finally:
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()
    return results


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _text(message: bytes | str) -> str:
    return message.decode(errors="replace") if isinstance(message, bytes) else message
