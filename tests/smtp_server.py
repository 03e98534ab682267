"""A real SMTP server on loopback (aiosmtpd) that keeps every message it accepts.

Options cover what the bridge meets in the wild: STARTTLS (offered or required), TLS from the
first byte, AUTH with a user list, a server that insists on a login, refused recipients and
temporary refusals. The certificate in tests/data is for localhost and 127.0.0.1.
"""

from __future__ import annotations

import email
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.process import free_port

DATA = Path(__file__).resolve().parent / "data"
CERT = DATA / "smtp-localhost.crt"
KEY = DATA / "smtp-localhost.key"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool
    login: str | None


@dataclass
class Inbox:
    """The handler: records accepted messages; can refuse recipients or defer messages."""

    messages: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # recipients answered with 550
    defer_data: int = 0  # answer this many DATA commands with 451 first
    require_login: bool = False  # answer MAIL FROM with 530 until the client logged in

    async def handle_MAIL(self, server: Any, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if self.require_login and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.defer_data > 0:
            self.defer_data -= 1
            return "451 4.3.0 Try again later"
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=default_policy)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if isinstance(session.auth_data,
                                                               LoginPassword) else None
        # session.ssl is set by STARTTLS only; implicit TLS shows on the transport.
        tls = session.ssl is not None or \
            server.transport.get_extra_info("ssl_object") is not None
        self.messages.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos),
                                      message, raw, tls, login))
        return "250 Message accepted for delivery"

    def by_subject(self) -> dict[str, Received]:
        return {str(received.message["Subject"]): received for received in self.messages}


def server_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERT, KEY)
    return context


def authenticator(users: dict[str, str]) -> Any:
    def check(server: Any, session: Session, envelope: Envelope, mechanism: str,
              auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and \
            users.get(auth_data.login.decode()) == auth_data.password.decode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data)
    return check


@contextmanager
def smtp_server(inbox: Inbox | None = None, *, port: int | None = None, starttls: bool = False,
                require_starttls: bool = False, implicit_tls: bool = False,
                users: dict[str, str] | None = None,
                auth_over_plain: bool = False) -> Iterator[tuple[Inbox, int]]:
    """Run a server on 127.0.0.1 until the block ends; yields its inbox and port.

    ``users`` turns AUTH on (offered only after STARTTLS unless ``auth_over_plain``).
    """
    inbox = inbox or Inbox()
    port = port or free_port()
    options: dict[str, Any] = {}
    if starttls or require_starttls:
        options["tls_context"] = server_tls_context()
        options["require_starttls"] = require_starttls
    if users is not None:
        options["authenticator"] = authenticator(users)
        options["auth_require_tls"] = not auth_over_plain
    controller = Controller(inbox, hostname="127.0.0.1", port=port,
                            ssl_context=server_tls_context() if implicit_tls else None,
                            server_hostname="localhost", **options)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()
