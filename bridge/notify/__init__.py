"""Email notifications for study teams: composition, the queue, planning, SMTP delivery.

``Mailer.tick`` is the scheduled entry point; see ``mailer`` for the delivery guarantees and
``plan`` for when notifications are combined into a digest.
"""

from bridge.notify.mailer import POLL_SECONDS, Mailer
from bridge.notify.smtp import SmtpError, SmtpTransport

__all__ = ["POLL_SECONDS", "Mailer", "SmtpError", "SmtpTransport"]
