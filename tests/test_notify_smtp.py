"""SMTP sessions against real loopback servers: TLS both ways, AUTH, and every setup mistake
reported in words that name the setting to fix."""

from __future__ import annotations

import socket
from email.message import EmailMessage

import pytest

from bridge.config import SmtpConfig
from bridge.notify import SmtpError, SmtpTransport
from tests.process import free_port
from tests.smtp_server import CERT, Inbox, smtp_server

FROM = "REDCap SMS bridge <redcap-sms@example.edu>"
USERS = {"bridge": "correct horse"}


def config(port: int, **changes: object) -> SmtpConfig:
    values: dict = {"host": "127.0.0.1", "from_addr": FROM, "port": port, "starttls": False,
                    "timeout_seconds": 5.0}
    values.update(changes)
    return SmtpConfig(**values)


def send_one(smtp: SmtpConfig) -> dict[str, str]:
    message = EmailMessage()
    message["Subject"] = "[heart-study] test"
    message["From"] = FROM
    message["To"] = "team@example.edu"
    message.set_content("hello")
    with SmtpTransport(smtp).session() as session:
        return session.send(message, ("team@example.edu",))


def failure(smtp: SmtpConfig) -> SmtpError:
    with pytest.raises(SmtpError) as caught:
        send_one(smtp)
    return caught.value


@pytest.fixture
def trust_test_cert(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust the loopback certificate the way an operator trusts an internal CA."""
    monkeypatch.setenv("SSL_CERT_FILE", str(CERT))


@pytest.fixture
def system_trust_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)


def test_starttls_and_login(trust_test_cert: None) -> None:
    with smtp_server(starttls=True, users=USERS) as (inbox, port):
        assert send_one(config(port, starttls=True, username="bridge",
                               password="correct horse")) == {}
    [received] = inbox.messages
    assert received.tls and received.login == "bridge"


def test_tls_from_the_first_byte(trust_test_cert: None) -> None:
    # aiosmtpd counts only STARTTLS as TLS for its AUTH rule, so allow AUTH "over plain" here.
    with smtp_server(implicit_tls=True, users=USERS, auth_over_plain=True) as (inbox, port):
        send_one(config(port, ssl=True, starttls=False, username="bridge",
                        password="correct horse"))
    [received] = inbox.messages
    assert received.tls and received.login == "bridge"


def test_plain_without_login() -> None:
    with smtp_server() as (inbox, port):
        send_one(config(port))
    assert not inbox.messages[0].tls and inbox.messages[0].login is None


def test_starttls_required_but_not_offered() -> None:
    with smtp_server() as (inbox, port):
        error = failure(config(port, starttls=True))
    assert error.permanent and error.session
    assert "does not offer STARTTLS" in error.message and "smtp.starttls is true" in error.message
    assert inbox.messages == []


def test_untrusted_certificate(system_trust_only: None) -> None:
    with smtp_server(starttls=True) as (inbox, port):
        error = failure(config(port, starttls=True))
    assert error.permanent
    assert "not trusted" in error.message and "self-signed" in error.message
    assert "SSL_CERT_FILE" in error.message
    assert inbox.messages == []


def test_ssl_against_a_plain_port() -> None:
    with smtp_server() as (_, port):
        error = failure(config(port, ssl=True, starttls=False))
    assert error.permanent
    assert "ssl: true" in error.message and "465" in error.message


def test_wrong_password() -> None:
    with smtp_server(users=USERS, auth_over_plain=True) as (inbox, port):
        error = failure(config(port, username="bridge", password="wrong"))
    assert error.permanent and error.session
    assert "535" in error.message and "'bridge'" in error.message
    assert "check smtp.username and smtp.password" in error.message
    assert "wrong" not in error.message  # the password is never repeated
    assert inbox.messages == []


def test_login_offered_only_after_starttls() -> None:
    with smtp_server(starttls=True, users=USERS) as (_, port):
        error = failure(config(port, username="bridge", password="correct horse"))
    assert error.permanent
    assert "does not offer a login" in error.message and "TLS" in error.message


def test_server_wants_a_login_that_is_not_configured() -> None:
    with smtp_server(Inbox(require_login=True), users=USERS, auth_over_plain=True) as (_, port):
        error = failure(config(port))
    assert error.permanent and not error.session
    assert "530" in error.message and "set smtp.username and smtp.password" in error.message


def test_nothing_listening_is_transient() -> None:
    error = failure(config(free_port()))
    assert not error.permanent and error.session
    assert "connection refused" in error.message and "smtp.port" in error.message


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # connections complete in the backlog; no greeting ever comes
        error = failure(config(listener.getsockname()[1], timeout_seconds=0.3))
    assert not error.permanent
    assert "no answer" in error.message and "0.3 s" in error.message


def test_a_temporary_refusal_is_transient() -> None:
    with smtp_server(Inbox(defer_data=1)) as (inbox, port):
        error = failure(config(port))
        send_one(config(port))
    assert not error.permanent and not error.session and "451" in error.message
    assert len(inbox.messages) == 1
