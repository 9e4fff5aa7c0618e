"""Automation run emails over SMTP (spec 05 §5.4). Synchronous ``smtplib``; one call, one mail.

:func:`send_mail` is called from the run's finalizer, whose outcome must never depend on a mail
server: it never raises and reports what happened as a short string (``sent``, ``skipped: …``,
``failed: …``) that the caller may log as is — the SMTP password never appears in it, nor in this
module's log lines.

Configuration (already trimmed/unquoted and floored by :class:`~auditflow_dagster.settings.Settings`):
``SMTP_HOST`` (unset ⇒ skipped), sender ``SMTP_FROM`` else ``SMTP_USER`` (none ⇒ skipped),
``SMTP_PORT`` (587), implicit TLS when ``SMTP_SECURE`` is ``1``/``true`` or the port is 465, else a
plain connection upgraded with STARTTLS when the server offers it, login only when both
``SMTP_USER`` and ``SMTP_PASS`` are set, ``SMTP_TIMEOUT_MS`` per socket operation.
"""

from __future__ import annotations

import base64
import logging
import smtplib
import socket
import ssl
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from auditflow_dagster.settings import Settings

log = logging.getLogger(__name__)

SENT = "sent"
SKIPPED_NOT_CONFIGURED = "skipped: SMTP not configured"
SKIPPED_NO_RECIPIENTS = "skipped: no recipients"
ERROR_LIMIT = 300


def _secret_forms(user: str, password: str) -> list[str]:
    """The password as typed and as it travels in ``AUTH PLAIN`` / ``AUTH LOGIN`` (base64): a server
    echoing the exchange in an error reply must not leak it through our result string."""
    if not password:
        return []
    forms = [password, base64.b64encode(password.encode("utf-8")).decode("ascii")]
    plain = f"\0{user}\0{password}".encode()
    forms.append(base64.b64encode(plain).decode("ascii"))
    return [f for f in forms if f]


def _sanitize(text: str, secrets: Iterable[str]) -> str:
    out = " ".join(text.split())
    for s in sorted(secrets, key=len, reverse=True):
        out = out.replace(s, "[redacted]")
    return out[:ERROR_LIMIT]


def _describe(exc: BaseException) -> str:
    """A short, credential-free description: the exception type and the server's reply or the
    socket error (never the message object or the login arguments)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{type(exc).__name__} {exc.smtp_code} {reply}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return f"{type(exc).__name__}: all {len(exc.recipients)} recipient(s) refused"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _clean_recipients(recipients: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for r in recipients or ():
        if isinstance(r, str) and r.strip() and r.strip() not in seen:
            seen.append(r.strip())
    return seen


def send_mail(settings: Settings, recipients: list[str], subject: str, body: str) -> str:
    """Send one plain-text mail to every recipient (one message, ``To:`` lists them all).

    Returns ``sent``, ``skipped: SMTP not configured``, ``skipped: no recipients`` or
    ``failed: <reason>`` (sanitized, never the password). Never raises.
    """
    host = (settings.smtp_host or "").strip()
    user = (settings.smtp_user or "").strip()
    password = settings.smtp_pass.get_secret_value() if settings.smtp_pass is not None else ""
    sender = (settings.smtp_from or "").strip() or user
    secrets = _secret_forms(user, password)
    if not host or not sender:
        log.info("automation email %s", SKIPPED_NOT_CONFIGURED)
        return SKIPPED_NOT_CONFIGURED
    to = _clean_recipients(recipients)
    if not to:
        log.info("automation email %s", SKIPPED_NO_RECIPIENTS)
        return SKIPPED_NO_RECIPIENTS

    port = int(settings.smtp_port)
    implicit_tls = (settings.smtp_secure or "").strip().lower() in ("1", "true") or port == 465
    timeout = max(1.0, settings.smtp_timeout_ms / 1000.0)
    try:
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = ", ".join(to)
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        # an explicit domain: make_msgid would otherwise call getfqdn (a reverse DNS lookup)
        domain = sender.rpartition("@")[2].strip("<> ") if "@" in sender else ""
        msg["Message-ID"] = make_msgid(domain=domain or "localhost")
        msg.set_content(body)

        context = ssl.create_default_context()
        # gethostname, not getfqdn: no reverse DNS lookup (which can stall) before the HELO.
        local_name = socket.gethostname() or "localhost"
        client: smtplib.SMTP
        if implicit_tls:
            client = smtplib.SMTP_SSL(host, port, local_hostname=local_name, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, local_hostname=local_name, timeout=timeout)
        try:
            client.ehlo_or_helo_if_needed()
            if not implicit_tls and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            if user and password:
                client.login(user, password)
            refused = client.send_message(msg, from_addr=sender, to_addrs=to)
        finally:
            try:
                client.quit()
            except Exception:  # noqa: BLE001 - the mail is already accepted (or the error reported)
                client.close()
    except Exception as exc:  # noqa: BLE001 - a mail outage must never affect the run
        reason = _sanitize(_describe(exc), secrets)
        log.warning("automation email failed: %s", reason)
        return f"failed: {reason}"
    if refused:
        log.warning("automation email sent; %d of %d recipient(s) refused", len(refused), len(to))
    else:
        log.info("automation email sent to %d recipient(s)", len(to))
    return SENT
