"""Automation run notifications end to end (spec 05 §5.2–§5.4, §3.10).

Email: a real SMTP server (aiosmtpd) on loopback receives what :func:`send_mail` sends; AUTH runs
against it; the password never shows in the result or our logs; outages and missing configuration
are reported, never raised. Webhook: an automation delivery goes through the real outbox and drain
to a local receiver, carrying the stored payload, signed with ``AUTOMATION_WEBHOOK_SECRET``;
a private-address URL is refused at send time.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import logging
import socket
import threading

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from auditflow_dagster.core.automation_notify import (
    email_body,
    email_subject,
    failure_webhook_payload,
    webhook_payload,
)
from auditflow_dagster.core.signing import sign_v1, sign_v2
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.models import (
    AutomationRun,
    AutomationSchedule,
    WebhookDelivery,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.db.webhooks import enqueue_automation_webhook
from auditflow_dagster.resources.mailer import send_mail
from auditflow_dagster.resources.notifier import WebhookSender
from auditflow_dagster.sensors.webhooks import drain_due_webhooks
from auditflow_dagster.settings import Settings, get_settings
from tests.fakes.server import serve_app

PASSWORD = "s3cr3t-SMTP-pa55-9d1e"
USER = "mailer@example.test"
AUTOMATION_SECRET = "whsec-automation-4b1c77e0"


# ---------------------------------------------------------------------------------------------
# SMTP
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    """aiosmtpd handler keeping every accepted envelope."""

    def __init__(self) -> None:
        self.envelopes: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        self.envelopes.append({"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                               "content": envelope.original_content or envelope.content})
        return "250 Message accepted"


class Authenticator:
    """Accepts only USER/PASSWORD and records what the client presented."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.seen.append((mechanism, login, password))
        # handled=False: aiosmtpd itself answers (235 / 535)
        return AuthResult(success=login == USER and password == PASSWORD, handled=False)


@pytest.fixture()
def smtp_server():
    """A loopback SMTP server; AUTH offered without TLS (test only)."""
    collector, auth = Collector(), Authenticator()
    controller = Controller(collector, hostname="127.0.0.1", port=_free_port(), auth_require_tls=False,
                            authenticator=auth)
    controller.start()
    try:
        yield controller.port, collector, auth
    finally:
        controller.stop()


@pytest.fixture()
def smtp_env(monkeypatch):
    """Clears every SMTP variable; tests set what they need, then call ``_settings()``."""
    for name in ("SMTP_HOST", "SMTP_PORT", "SMTP_SECURE", "SMTP_USER", "SMTP_PASS", "SMTP_FROM", "SMTP_TIMEOUT_MS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMTP_TIMEOUT_MS", "5000")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def _settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()


def _parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


COUNTS = {"total_fiches": 3, "successful_fiches": 1, "failed_fiches": 2, "ignored_fiches": 1,
          "transcriptions_run": 1, "audits_run": 1}
FAILURES = [{"ficheId": "1001", "error": "CRM timeout"}, {"ficheId": "1002", "error": "LLM refused"}]


def test_one_mail_to_every_recipient_with_subject_and_body(smtp_server, smtp_env):
    port, collector, auth = smtp_server
    smtp_env.setenv("SMTP_HOST", "127.0.0.1")
    smtp_env.setenv("SMTP_PORT", str(port))
    smtp_env.setenv("SMTP_FROM", '"robot@auditflow.test"')  # surrounding quotes are stripped
    subject = email_subject("Nightly audit", "partial")
    body = email_body("partial", COUNTS, 42_400, FAILURES)

    result = send_mail(_settings(), ["ops@example.test", " qa@example.test "], subject, body)

    assert result == "sent"
    assert auth.seen == []  # no user/pass configured: no AUTH
    assert len(collector.envelopes) == 1
    env = collector.envelopes[0]
    assert env["mail_from"] == "robot@auditflow.test"
    assert env["rcpt_tos"] == ["ops@example.test", "qa@example.test"]
    msg = _parse(env["content"])
    assert msg["Subject"] == "Automation Nightly audit - PARTIAL"
    assert msg["To"] == "ops@example.test, qa@example.test"
    assert msg["From"] == "robot@auditflow.test"
    assert msg.get_content_type() == "text/plain"
    text = msg.get_content().replace("\r\n", "\n")  # SMTP line endings are CRLF
    assert text.rstrip("\n") == body
    assert "- 1001: CRM timeout\n- 1002: LLM refused" in text


def test_login_with_user_and_password_never_exposes_the_password(smtp_server, smtp_env, caplog):
    port, collector, auth = smtp_server
    smtp_env.setenv("SMTP_HOST", "127.0.0.1")
    smtp_env.setenv("SMTP_PORT", str(port))
    smtp_env.setenv("SMTP_USER", USER)  # sender falls back to SMTP_USER
    smtp_env.setenv("SMTP_PASS", PASSWORD)
    caplog.set_level(logging.DEBUG, logger="auditflow_dagster")

    result = send_mail(_settings(), ["ops@example.test"], "s", "b")

    assert result == "sent"
    assert [(login, password) for _, login, password in auth.seen] == [(USER, PASSWORD)]
    assert collector.envelopes[0]["mail_from"] == USER
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("auditflow_dagster"))
    assert ours and PASSWORD not in ours and PASSWORD not in result


def test_rejected_login_fails_without_the_password(smtp_server, smtp_env, caplog):
    port, collector, auth = smtp_server
    wrong = "not-the-right-pa55word-77"
    smtp_env.setenv("SMTP_HOST", "127.0.0.1")
    smtp_env.setenv("SMTP_PORT", str(port))
    smtp_env.setenv("SMTP_USER", USER)
    smtp_env.setenv("SMTP_PASS", wrong)
    smtp_env.setenv("SMTP_FROM", "robot@auditflow.test")
    caplog.set_level(logging.DEBUG, logger="auditflow_dagster")

    result = send_mail(_settings(), ["ops@example.test"], "s", "b")

    assert result.startswith("failed: SMTPAuthenticationError 535"), result
    assert wrong not in result and wrong not in caplog.text
    assert auth.seen and collector.envelopes == []


def test_unconfigured_or_without_recipients_is_skipped(smtp_server, smtp_env):
    port, collector, _ = smtp_server
    assert send_mail(_settings(), ["ops@example.test"], "s", "b") == "skipped: SMTP not configured"
    smtp_env.setenv("SMTP_HOST", "127.0.0.1")
    smtp_env.setenv("SMTP_PORT", str(port))
    assert send_mail(_settings(), ["ops@example.test"], "s", "b") == "skipped: SMTP not configured"  # no sender
    smtp_env.setenv("SMTP_FROM", "robot@auditflow.test")
    assert send_mail(_settings(), [], "s", "b") == "skipped: no recipients"
    assert send_mail(_settings(), ["  "], "s", "b") == "skipped: no recipients"
    assert collector.envelopes == []


def test_connection_refused_is_reported_not_raised(smtp_env):
    smtp_env.setenv("SMTP_HOST", "127.0.0.1")
    smtp_env.setenv("SMTP_PORT", str(_free_port()))
    smtp_env.setenv("SMTP_USER", USER)
    smtp_env.setenv("SMTP_PASS", PASSWORD)
    result = send_mail(_settings(), ["ops@example.test"], "s", "b")
    assert result.startswith("failed: ") and "refused" in result.lower(), result
    assert PASSWORD not in result


def test_implicit_tls_is_used_when_smtp_secure_is_set(smtp_server, smtp_env):
    """SMTP_SECURE=1 ⇒ TLS from the first byte: a plain-text server cannot complete the handshake."""
    port, collector, auth = smtp_server
    smtp_env.setenv("SMTP_HOST", "127.0.0.1")
    smtp_env.setenv("SMTP_PORT", str(port))
    smtp_env.setenv("SMTP_SECURE", "true")
    smtp_env.setenv("SMTP_USER", USER)
    smtp_env.setenv("SMTP_PASS", PASSWORD)
    result = send_mail(_settings(), ["ops@example.test"], "s", "b")
    assert result.startswith("failed: "), result
    assert auth.seen == [] and collector.envelopes == []  # nothing went in clear


def test_starttls_offered_is_used_and_the_certificate_verified(smtp_env, tmp_path):
    """A server offering STARTTLS gets the upgrade (before any AUTH); its self-signed certificate
    is not trusted, so nothing — credentials included — is sent."""
    import ssl

    cert, key = _self_signed(tmp_path, "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    collector, auth = Collector(), Authenticator()
    controller = Controller(collector, hostname="127.0.0.1", port=_free_port(), tls_context=context,
                            auth_require_tls=True, authenticator=auth)
    controller.start()
    try:
        smtp_env.setenv("SMTP_HOST", "127.0.0.1")
        smtp_env.setenv("SMTP_PORT", str(controller.port))
        smtp_env.setenv("SMTP_USER", USER)
        smtp_env.setenv("SMTP_PASS", PASSWORD)
        result = send_mail(_settings(), ["ops@example.test"], "s", "b")
    finally:
        controller.stop()
    assert result.startswith("failed: ") and "certificate" in result.lower(), result
    assert auth.seen == [] and collector.envelopes == []


def _self_signed(tmp_path, name: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


# ---------------------------------------------------------------------------------------------
# Webhook through the outbox
# ---------------------------------------------------------------------------------------------


class Receiver:
    """Records every request; answers from a script of status codes (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            with self.lock:
                status = self.statuses.pop(0) if self.statuses else 200
                self.requests.append({"body": body, "headers": dict(request.headers)})
            return JSONResponse({"ok": status < 300}, status_code=status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture()
def hook_env(monkeypatch):
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.delenv("NODE_ENV", raising=False)
    monkeypatch.setenv("WEBHOOK_ALLOWED_ORIGINS", "")
    monkeypatch.setenv("WEBHOOK_TIMEOUT_MS", "5000")
    monkeypatch.setenv("AUTOMATION_WEBHOOK_SECRET", AUTOMATION_SECRET)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def _make_run() -> tuple[int, int]:
    with session_scope() as s:
        sched = AutomationSchedule(name="Nightly", schedule_type="MANUAL")
        s.add(sched)
        s.flush()
        run = AutomationRun(schedule_id=sched.id, config_snapshot={})
        s.add(run)
        s.flush()
        return sched.id, run.id


def _enqueue(run_id: int, url: str, event: str, payload: dict) -> str:
    with session_scope() as s:
        return enqueue_automation_webhook(s, run_id=run_id, url=url, event=event, payload=payload)


def _delivery(delivery_id: str) -> WebhookDelivery:
    with session_scope() as s:
        return s.get(WebhookDelivery, delivery_id)


def _make_due(delivery_id: str) -> None:
    with session_scope() as s:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                  .values(next_retry_at=now_utc() - dt.timedelta(seconds=1)))


def _verify(req: dict, secret: str) -> None:
    h = req["headers"]
    assert h["x-webhook-signature"] == sign_v1(secret, req["body"])
    assert h["x-webhook-signature-v2"] == sign_v2(secret, h["x-webhook-timestamp"], req["body"])


def test_automation_webhook_is_sent_signed_with_the_stored_payload(db, hook_env):
    schedule_id, run_id = _make_run()
    payload = webhook_payload(schedule_id=schedule_id, schedule_name="Nightly", run_id=run_id, status="partial",
                              duration_ms=42_400, failures=FAILURES, **COUNTS)
    rx = Receiver(statuses=[503])
    with serve_app(rx.app()) as base:
        hook_env.setenv("WEBHOOK_ALLOWED_ORIGINS", base)
        get_settings.cache_clear()
        delivery_id = _enqueue(run_id, f"{base}/hook", "automation.completed", payload)
        d = _delivery(delivery_id)
        assert (d.source, d.job_id, d.automation_run_id, d.event) == ("automation", None, run_id,
                                                                      "automation.completed")
        assert d.payload_status is None and d.payload_timestamp is None and d.attempt == 1
        assert d.max_attempts == get_settings().webhook_max_attempts

        first = drain_due_webhooks(limit=10)
        _make_due(delivery_id)
        second = drain_due_webhooks(limit=10)

    assert first["retrying"] == 1 and second["sent"] == 1
    assert len(rx.requests) == 2
    for attempt, req in enumerate(rx.requests, start=1):
        assert json.loads(req["body"]) == payload
        _verify(req, AUTOMATION_SECRET)
        h = req["headers"]
        assert h["x-webhook-event"] == "automation.completed"
        assert h["x-webhook-job-id"] == f"automation-run-{run_id}"
        assert h["x-webhook-delivery-id"] == delivery_id
        assert h["x-webhook-attempt"] == str(attempt)
        assert h["content-type"] == "application/json"
    # a retry carries the same bytes and timestamp
    assert rx.requests[0]["body"] == rx.requests[1]["body"]
    assert rx.requests[0]["headers"]["x-webhook-timestamp"] == rx.requests[1]["headers"]["x-webhook-timestamp"]
    d = _delivery(delivery_id)
    assert d.status == "sent" and d.status_code == 200 and d.attempt == 2


def test_failure_webhook_without_secret_is_unsigned(db, hook_env):
    hook_env.setenv("AUTOMATION_WEBHOOK_SECRET", "")
    schedule_id, run_id = _make_run()
    payload = failure_webhook_payload(schedule_id=schedule_id, schedule_name="Nightly", run_id=run_id,
                                      error="database gone", duration_ms=1_200)
    rx = Receiver()
    with serve_app(rx.app()) as base:
        hook_env.setenv("WEBHOOK_ALLOWED_ORIGINS", base)
        get_settings.cache_clear()
        delivery_id = _enqueue(run_id, f"{base}/hook", "automation.failed", payload)
        counts = drain_due_webhooks(limit=10)
    assert counts["sent"] == 1
    (req,) = rx.requests
    assert json.loads(req["body"]) == payload and payload["status"] == "failed"
    assert "x-webhook-signature" not in req["headers"] and "x-webhook-signature-v2" not in req["headers"]
    assert req["headers"]["x-webhook-event"] == "automation.failed"
    assert _delivery(delivery_id).status == "sent"


class CountingTransport(httpx.BaseTransport):
    calls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        CountingTransport.calls.append(str(request.url))
        return httpx.Response(200)


def test_private_address_is_refused_at_send_time(db, hook_env):
    """A URL that should never have been stored (private IP, no allowlist) is checked again when
    sent: dead, the guard's message recorded, no request made, never retried."""
    schedule_id, run_id = _make_run()
    payload = failure_webhook_payload(schedule_id=schedule_id, schedule_name="Nightly", run_id=run_id,
                                      error="x", duration_ms=0)
    delivery_id = _enqueue(run_id, "http://10.0.0.5/hook", "automation.failed", payload)
    CountingTransport.calls = []
    sender = WebhookSender.from_settings()
    sender._transport_factory = CountingTransport  # the send would be observable, not real
    counts = drain_due_webhooks(limit=10, sender=sender)
    _make_due(delivery_id)
    assert drain_due_webhooks(limit=10, sender=sender)["claimed"] == 0
    assert counts["dead"] == 1 and CountingTransport.calls == []
    d = _delivery(delivery_id)
    assert d.status == "dead" and d.sent_at is None and d.status_code is None
    assert d.response_body == "Webhook host 10.0.0.5 is not allowed: private address"


def test_unknown_automation_event_is_refused(db, hook_env):
    _, run_id = _make_run()
    with pytest.raises(ValueError):
        _enqueue(run_id, "https://hooks.example.test/x", "complete", {})
