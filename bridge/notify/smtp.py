"""SMTP delivery on ``smtplib``: one session per batch, every failure as a typed ``SmtpError``.

The only module that talks to the mail server. Each failure says what went wrong in words an
operator can act on (which setting to check), and whether it is ``permanent`` (the server
refused: a bad password, a refused sender or recipient, no STARTTLS, an untrusted
certificate; retrying will not help until a person fixes the configuration) or transient (the
server is down, slow, or answered 4xx). ``session`` says whether the connection is unusable,
so the rest of the batch waits too, or only this one message failed.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import parseaddr

from bridge.config import SmtpConfig

logger = logging.getLogger(__name__)


class SmtpError(Exception):
    def __init__(self, message: str, *, permanent: bool, session: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.session = session


@functools.cache
def _local_hostname() -> str:
    """The name given in EHLO, looked up once (``getfqdn`` may wait on DNS)."""
    return socket.getfqdn()


class SmtpSession:
    """An open, authenticated connection; ``send`` one message after another."""

    def __init__(self, client: smtplib.SMTP, config: SmtpConfig) -> None:
        self._client = client
        self._config = config

    def send(self, message: EmailMessage, recipients: tuple[str, ...]) -> dict[str, str]:
        """Hand one message over; returns the recipients the server refused (others got it).

        Raises ``SmtpError`` when the server took it for nobody.
        """
        sender = parseaddr(self._config.from_addr)[1]
        try:
            refused = self._client.send_message(message, from_addr=sender,
                                                to_addrs=list(recipients))
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise SmtpError(
                f"the mail server refused every recipient ({_refusals(exc.recipients)});"
                " check the project's notify.emails",
                permanent=any(code >= 500 for code in codes), session=False) from exc
        except smtplib.SMTPSenderRefused as exc:
            if exc.smtp_code in (530, 550) and b"auth" in exc.smtp_error.lower():
                hint = "the server wants a login: set smtp.username and smtp.password"
            else:
                hint = "check smtp.from (the server may only accept its own domain)"
            raise SmtpError(f"the mail server refused the sender {sender} "
                            f"({_reply(exc.smtp_code, exc.smtp_error)}): {hint}",
                            permanent=exc.smtp_code >= 500, session=False) from exc
        except smtplib.SMTPDataError as exc:
            raise SmtpError(f"the mail server refused the message "
                            f"({_reply(exc.smtp_code, exc.smtp_error)})",
                            permanent=exc.smtp_code >= 500, session=False) from exc
        except smtplib.SMTPResponseException as exc:
            raise SmtpError(f"the mail server answered {_reply(exc.smtp_code, exc.smtp_error)}",
                            permanent=exc.smtp_code >= 500, session=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise SmtpError(f"the connection to {self._where} broke while sending: "
                            f"{_describe(exc)}", permanent=False, session=True) from exc
        return {address: _reply(code, text) for address, (code, text) in refused.items()}

    @property
    def _where(self) -> str:
        return f"{self._config.host}:{self._config.port}"


class SmtpTransport:
    """Opens sessions as ``SmtpConfig`` says: implicit TLS, STARTTLS or plain; optional login.

    Certificates are checked against the system's trusted CAs (``ssl.create_default_context``,
    which honours ``SSL_CERT_FILE`` for a server signed by an internal CA).
    """

    def __init__(self, config: SmtpConfig,
                 tls_context: Callable[[], ssl.SSLContext] = ssl.create_default_context) -> None:
        self.config = config
        self._tls_context = tls_context
        if config.username and not (config.ssl or config.starttls):
            logger.warning("smtp: the password for %s is sent without TLS (ssl and starttls"
                           " are both false)", config.username)

    @contextmanager
    def session(self) -> Iterator[SmtpSession]:
        client = self._open()
        try:
            yield SmtpSession(client, self.config)
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()

    def _open(self) -> smtplib.SMTP:
        config = self.config
        where = f"{config.host}:{config.port}"
        client: smtplib.SMTP | None = None
        stage = "connect"
        try:
            if config.ssl:
                client = smtplib.SMTP_SSL(config.host, config.port,
                                          local_hostname=_local_hostname(),
                                          timeout=config.timeout_seconds,
                                          context=self._tls_context())
            else:
                client = smtplib.SMTP(config.host, config.port, local_hostname=_local_hostname(),
                                      timeout=config.timeout_seconds)
            if config.starttls:
                stage = "starttls"
                client.ehlo()
                client.starttls(context=self._tls_context())
                client.ehlo()
            if config.username and config.password is not None:
                stage = "login"
                client.login(config.username, config.password)
        except (smtplib.SMTPException, OSError) as exc:
            if client is not None:
                client.close()
            raise _open_error(exc, stage, where, config) from exc
        except BaseException:
            if client is not None:
                client.close()
            raise
        return client


def _open_error(exc: BaseException, stage: str, where: str, config: SmtpConfig) -> SmtpError:
    """Name the problem and the setting to check, for each way opening a session fails."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SmtpError(
            f"the TLS certificate of {where} is not trusted ({exc.verify_message}); if the "
            "server uses an internal certificate authority, point the SSL_CERT_FILE environment"
            " variable at its certificate bundle", permanent=True, session=True)
    if isinstance(exc, ssl.SSLError):
        advice = ("with ssl: true the server must speak TLS from the first byte (usually port"
                  " 465); for port 587 use starttls: true instead") if config.ssl else \
            "the server's TLS setup does not work with this client"
        return SmtpError(f"TLS with {where} failed ({exc.reason or exc}): {advice}",
                         permanent=True, session=True)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        if stage == "starttls":
            return SmtpError(
                f"the mail server at {where} does not offer STARTTLS, and smtp.starttls is"
                " true: use ssl: true if it speaks TLS directly (usually port 465), or set"
                " starttls: false only if the network path to it is trusted",
                permanent=True, session=True)
        return SmtpError(
            f"the mail server at {where} does not offer a login (AUTH), and smtp.username is"
            " set: many servers offer it only over TLS (check starttls/ssl), or remove"
            " username and password if the server relays without one",
            permanent=True, session=True)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return SmtpError(
            f"the mail server at {where} refused the login for {config.username!r}"
            f" ({_reply(exc.smtp_code, exc.smtp_error)}): check smtp.username and smtp.password",
            permanent=True, session=True)
    if isinstance(exc, smtplib.SMTPResponseException):
        return SmtpError(f"the mail server at {where} answered "
                         f"{_reply(exc.smtp_code, exc.smtp_error)} during {stage}",
                         permanent=exc.smtp_code >= 500, session=True)
    if isinstance(exc, ConnectionRefusedError):
        return SmtpError(f"cannot connect to the mail server at {where}: connection refused"
                         " (is it running, and are smtp.host and smtp.port right?)",
                         permanent=False, session=True)
    if isinstance(exc, socket.gaierror):
        return SmtpError(f"cannot look up the mail server {config.host!r}: {exc.strerror}",
                         permanent=False, session=True)
    if _timed_out(exc):
        return SmtpError(f"no answer from the mail server at {where} within "
                         f"{config.timeout_seconds:g} s (during {stage})",
                         permanent=False, session=True)
    # smtplib's own complaints at login ("No suitable authentication method found") will not
    # go away by retrying; a dropped connection or a socket error may.
    permanent = stage == "login" and isinstance(exc, smtplib.SMTPException) and \
        not isinstance(exc, smtplib.SMTPServerDisconnected)
    return SmtpError(f"the mail server at {where} failed during {stage}: {_describe(exc)}",
                     permanent=permanent, session=True)


def _timed_out(exc: BaseException) -> bool:
    """A socket timeout, also when smtplib reports it as a dropped connection."""
    return isinstance(exc, TimeoutError) or (
        isinstance(exc, smtplib.SMTPServerDisconnected) and
        isinstance(exc.__context__, TimeoutError))


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


def _refusals(recipients: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{address}: {_reply(code, text)}"
                     for address, (code, text) in recipients.items())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
