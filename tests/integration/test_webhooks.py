"""Webhook outbox end to end: enqueue in the caller's transaction, drain (sensor function), real
HTTP to a local receiver that verifies both signatures, durable retries with the real attempt
number, dead state, SKIP LOCKED between concurrent drains, SSRF at send time (spec 01 §4.7, §5)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import uuid

import httpx
import pytest
from dagster import SkipReason, build_sensor_context
from sqlalchemy import select, text, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.models import ProgressiveFetchJob, WebhookDelivery, WebhookDeliveryPartialFiche
from auditflow_dagster.db.secret_box import seal, unseal
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.db.webhooks import enqueue_job_webhook, load_request
from auditflow_dagster.resources.notifier import NotifierResource, WebhookSender
from auditflow_dagster.sensors.webhooks import drain_due_webhooks, webhook_deliveries_sensor
from auditflow_dagster.settings import get_settings
from tests.fakes.server import free_port_refusing, serve_app

SECRET = "whsec-integration-7f3a9c1e55"
TS_FORMAT_LEN = len("2025-01-02T03:04:05.678Z")


@pytest.fixture()
def dev_env(monkeypatch):
    """Development mode, no allowlist (loopback receivers allowed), settings re-read."""
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.setenv("WEBHOOK_ALLOWED_ORIGINS", "")
    monkeypatch.setenv("WEBHOOK_TIMEOUT_MS", "5000")
    monkeypatch.delenv("NODE_ENV", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


class Receiver:
    """A webhook endpoint that verifies signatures and answers from a script of status codes."""

    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.statuses = list(statuses or [])
        self.delay = delay
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request) -> JSONResponse:
            import asyncio

            body = await request.body()
            h = request.headers
            ts = h.get("x-webhook-timestamp", "")
            v1 = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            v2 = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            with self.lock:
                status = self.statuses.pop(0) if self.statuses else 200
                self.requests.append({
                    "body": body,
                    "headers": dict(h),
                    "v1_ok": hmac.compare_digest(h.get("x-webhook-signature", ""), v1),
                    "v2_ok": hmac.compare_digest(h.get("x-webhook-signature-v2", ""), v2),
                })
            if self.delay:
                await asyncio.sleep(self.delay)
            return JSONResponse({"received": True, "status": status, "pad": "x" * 1500}, status_code=status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def _make_job(url: str, *, events: list[str] | None = None, secret: str | None = SECRET) -> str:
    job_id = "job_" + uuid.uuid4().hex[:12]
    with session_scope() as s:
        s.add(ProgressiveFetchJob(
            id=job_id, start_date="2025-01-01", end_date="2025-01-03", status="processing",
            webhook_url=url, webhook_secret_encrypted=seal(secret) if secret else None,
            webhook_events=events or [],
        ))
    return job_id


PARTIALS = [
    {"ficheId": "1001", "groupe": "G1", "prospectNom": "Durand", "prospectPrenom": "Anne", "recordingsCount": 2,
     "createdAt": "2025-01-01T09:00:00.000Z"},
    {"ficheId": "1002", "groupe": None, "prospectNom": None, "prospectPrenom": None, "recordingsCount": 0,
     "createdAt": "2025-01-01T10:00:00.000Z"},
    {"ficheId": 1003, "recordingsCount": 1, "createdAt": "2025-01-01T11:00:00.000Z"},  # non-string id: dropped
    {"ficheId": "1004", "recordingsCount": "3", "createdAt": "2025-01-01T11:00:00.000Z"},  # non-numeric: dropped
]
PROGRESS = {"status": "processing", "progress": 67, "completedDays": 2, "totalDays": 3, "totalFiches": 2,
            "currentFichesCount": 2, "latestDate": "2025-01-02"}


def _enqueue(job_id: str, event: str = "progress", data: dict | None = None, partials=PARTIALS) -> str | None:
    with session_scope() as s:
        job = s.get(ProgressiveFetchJob, job_id)
        return enqueue_job_webhook(s, job, event, data or PROGRESS, partials)


def _delivery(delivery_id: str) -> WebhookDelivery:
    with session_scope() as s:
        return s.get(WebhookDelivery, delivery_id)


def _job(job_id: str) -> ProgressiveFetchJob:
    with session_scope() as s:
        return s.get(ProgressiveFetchJob, job_id)


def _make_due(delivery_id: str) -> None:
    with session_scope() as s:
        s.execute(update(WebhookDelivery)
                  .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending")
                  .values(next_retry_at=now_utc() - dt.timedelta(seconds=1)))


def test_signed_delivery_is_verified_by_the_receiver(db, dev_env):
    rx = Receiver()
    with serve_app(rx.app()) as base:
        job_id = _make_job(f"{base}/hook")
        delivery_id = _enqueue(job_id)
        counts = drain_due_webhooks(limit=10)
    assert counts == {"claimed": 1, "sent": 1, "retrying": 0, "dead": 0, "stale": 0}
    assert len(rx.requests) == 1
    req = rx.requests[0]
    assert req["v1_ok"] and req["v2_ok"]
    h = req["headers"]
    assert h["content-type"] == "application/json"
    assert h["user-agent"] == "AI-Audit-Webhook/1.0"
    assert h["x-webhook-event"] == "progress"
    assert h["x-webhook-job-id"] == job_id
    assert h["x-webhook-delivery-id"] == delivery_id
    assert h["x-webhook-attempt"] == "1"
    body = json.loads(req["body"])
    d = _delivery(delivery_id)
    assert body["timestamp"] == h["x-webhook-timestamp"] == d.payload_timestamp
    assert len(d.payload_timestamp) == TS_FORMAT_LEN and d.payload_timestamp.endswith("Z")
    assert body == {
        "event": "progress", "jobId": job_id, "timestamp": d.payload_timestamp,
        "data": {**PROGRESS, "partialData": PARTIALS[:2]},
    }
    assert d.status == "sent" and d.status_code == 200 and d.sent_at is not None and d.next_retry_at is None
    assert d.response_body.startswith('{"received":true') and len(d.response_body) == 1000
    job = _job(job_id)
    assert job.webhook_attempts == 1 and job.webhook_last_error is None and job.last_webhook_sent_at is not None


def test_stored_secret_is_never_in_clear(db, dev_env):
    job_id = _make_job("https://hooks.example.test/hook")
    _enqueue(job_id)
    job = _job(job_id)
    assert job.webhook_secret_encrypted and SECRET not in job.webhook_secret_encrypted
    assert unseal(job.webhook_secret_encrypted) == SECRET
    with session_scope() as s:
        dump = json.dumps([
            [str(v) for v in row]
            for table in ("progressive_fetch_jobs", "webhook_deliveries", "webhook_delivery_partial_fiches")
            for row in s.execute(text(f"SELECT * FROM {table}")).all()
        ])
    assert SECRET not in dump


def test_failed_attempt_is_retried_after_next_retry_at_with_attempt_2_and_same_bytes(db, dev_env):
    rx = Receiver(statuses=[500, 200])
    with serve_app(rx.app()) as base:
        job_id = _make_job(f"{base}/hook")
        delivery_id = _enqueue(job_id, "complete", {"status": "complete", "progress": 100, "completedDays": 3,
                                                    "totalDays": 3, "totalFiches": 2, "dataUrl": "http://api/x"}, [])
        before = now_utc()
        assert drain_due_webhooks()["retrying"] == 1
        d = _delivery(delivery_id)
        assert d.status == "pending" and d.attempt == 2 and d.status_code == 500 and d.last_error == "HTTP 500"
        assert dt.timedelta(seconds=1.5) <= d.next_retry_at - before <= dt.timedelta(seconds=3)  # min(2^1, 30) s
        job = _job(job_id)
        assert job.webhook_attempts == 1 and job.webhook_last_error == "HTTP 500"

        # not due yet: nothing is sent
        assert drain_due_webhooks()["claimed"] == 0
        assert len(rx.requests) == 1

        _make_due(delivery_id)
        assert drain_due_webhooks()["sent"] == 1
    first, second = rx.requests
    assert [first["headers"]["x-webhook-attempt"], second["headers"]["x-webhook-attempt"]] == ["1", "2"]
    assert second["body"] == first["body"]
    assert second["headers"]["x-webhook-timestamp"] == first["headers"]["x-webhook-timestamp"]
    assert second["headers"]["x-webhook-delivery-id"] == first["headers"]["x-webhook-delivery-id"] == delivery_id
    assert all(r["v1_ok"] and r["v2_ok"] for r in rx.requests)
    d = _delivery(delivery_id)
    assert d.status == "sent" and d.attempt == 2 and d.status_code == 200 and d.last_error is None
    job = _job(job_id)
    assert job.webhook_attempts == 2 and job.webhook_last_error is None


def test_dead_after_max_attempts(db, dev_env):
    rx = Receiver(statuses=[503] * 10)
    with serve_app(rx.app()) as base:
        job_id = _make_job(f"{base}/hook")
        delivery_id = _enqueue(job_id, "failed", {"status": "failed", "error": "1 date(s) failed during progressive fetch"}, [])
        results = []
        for _ in range(5):
            results.append(drain_due_webhooks())
            _make_due(delivery_id)  # no effect once the delivery is final
    assert [r["retrying"] for r in results] == [1, 1, 0, 0, 0]
    assert [r["dead"] for r in results] == [0, 0, 1, 0, 0]
    assert [r["headers"]["x-webhook-attempt"] for r in rx.requests] == ["1", "2", "3"]
    d = _delivery(delivery_id)
    assert d.status == "dead" and d.attempt == d.max_attempts == 3 and d.next_retry_at is None
    assert d.status_code == 503 and d.last_error == "HTTP 503"
    job = _job(job_id)
    assert job.webhook_attempts == 3 and job.webhook_last_error == "HTTP 503"


def test_network_error_is_recorded_and_retried(db, dev_env):
    job_id = _make_job(f"{free_port_refusing()}/hook")
    delivery_id = _enqueue(job_id)
    assert drain_due_webhooks()["retrying"] == 1
    d = _delivery(delivery_id)
    assert d.status == "pending" and d.attempt == 2 and d.status_code is None
    assert d.last_error == "network error: ECONNREFUSED"
    job = _job(job_id)
    assert job.webhook_attempts == 1 and job.webhook_last_error == "network error: ECONNREFUSED"


def test_two_concurrent_drains_never_send_the_same_delivery_twice(db, dev_env):
    rx = Receiver(delay=0.05)
    with serve_app(rx.app()) as base:
        job_ids = [_make_job(f"{base}/hook") for _ in range(4)]
        ids = {_enqueue(job_ids[i % 4], "progress", {**PROGRESS, "progress": i}, []) for i in range(40)}
        barrier = threading.Barrier(2)
        outcomes: list[dict] = []

        def run() -> None:
            barrier.wait()
            outcomes.append(drain_due_webhooks(limit=40, batch_size=8))

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    sent_ids = [r["headers"]["x-webhook-delivery-id"] for r in rx.requests]
    assert len(sent_ids) == 40 and set(sent_ids) == ids  # each exactly once
    assert sum(o["sent"] for o in outcomes) == 40 and sum(o["claimed"] for o in outcomes) == 40
    assert all(o["claimed"] > 0 for o in outcomes), outcomes  # both drains really took part
    with session_scope() as s:
        assert set(s.scalars(select(WebhookDelivery.status))) == {"sent"}
        assert sum(s.scalars(select(ProgressiveFetchJob.webhook_attempts))) == 40


class CountingTransport(httpx.BaseTransport):
    calls: list[str] = []

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport(retries=0)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        CountingTransport.calls.append(str(request.url))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_name_now_resolving_to_a_private_address_is_never_sent(db, dev_env):
    """The URL passed the write-time check (a public-looking name); at send time its DNS answer is
    private: one dead delivery with the guard message, counters bumped, no request at all."""
    CountingTransport.calls = []
    rx = Receiver()
    sender = WebhookSender(production=False, resolve=lambda host, port: ["10.0.0.5"],
                           transport_factory=CountingTransport)
    with serve_app(rx.app()):
        job_id = _make_job("https://hooks.partner.example/hook")
        delivery_id = _enqueue(job_id)
        counts = drain_due_webhooks(sender=sender)
        _make_due(delivery_id)
        assert drain_due_webhooks(sender=sender)["claimed"] == 0  # dead: never retried
    assert counts["dead"] == 1
    assert CountingTransport.calls == [] and rx.requests == []
    d = _delivery(delivery_id)
    assert d.status == "dead" and d.status_code is None and d.sent_at is None
    assert d.response_body == "Webhook host hooks.partner.example is not allowed: it resolves to 10.0.0.5 (private address)"
    job = _job(job_id)
    assert job.webhook_attempts == 1 and job.webhook_last_error == d.response_body
    assert job.last_webhook_sent_at is None


def test_production_refuses_the_loopback_receiver_that_dev_accepts(db, dev_env):
    from cryptography.fernet import Fernet

    dev_env.setenv("AUDITFLOW_SECRET_KEY", Fernet.generate_key().decode())
    get_settings.cache_clear()
    rx = Receiver()
    with serve_app(rx.app()) as base:
        dev_job = _make_job(f"{base}/hook")
        dev_delivery = _enqueue(dev_job)
        assert drain_due_webhooks()["sent"] == 1
        assert len(rx.requests) == 1 and rx.requests[0]["v1_ok"]

        dev_env.setenv("APP_ENV", "production")
        get_settings.cache_clear()
        prod_job = _make_job(f"{base}/hook")
        prod_delivery = _enqueue(prod_job)
        assert drain_due_webhooks() == {"claimed": 1, "sent": 0, "retrying": 0, "dead": 1, "stale": 0}
    assert len(rx.requests) == 1  # the production delivery never reached the receiver
    assert _delivery(dev_delivery).status == "sent"
    d = _delivery(prod_delivery)
    assert d.status == "dead" and "loopback" in d.response_body and "production" in d.response_body


def test_allowlisted_name_is_sent_to_the_pinned_address(db, dev_env):
    """Production + allowlist: the host name does not exist in DNS; the sender resolves it once
    (fake resolver → 127.0.0.1), connects to that address and sends the original Host header."""
    rx = Receiver()
    with serve_app(rx.app()) as base:
        port = int(base.rsplit(":", 1)[1])
        origin = f"http://hooks.internal.test:{port}"
        dev_env.setenv("APP_ENV", "production")
        dev_env.setenv("WEBHOOK_ALLOWED_ORIGINS", f" {origin} , https://other.example ")
        from cryptography.fernet import Fernet

        dev_env.setenv("AUDITFLOW_SECRET_KEY", Fernet.generate_key().decode())
        get_settings.cache_clear()
        resolved: list[tuple[str, int]] = []
        sender = NotifierResource().sender()
        sender._resolve = lambda host, p: resolved.append((host, p)) or ["127.0.0.1"]
        job_id = _make_job(f"{origin}/hook?team=a")
        delivery_id = _enqueue(job_id)
        assert drain_due_webhooks(sender=sender)["sent"] == 1
    assert resolved == [("hooks.internal.test", port)]
    assert rx.requests[0]["headers"]["host"] == f"hooks.internal.test:{port}"
    assert rx.requests[0]["v2_ok"]
    assert _delivery(delivery_id).status == "sent"


def test_redirects_are_not_followed(db, dev_env):
    hits: list[str] = []

    async def hook(request: Request) -> JSONResponse:
        hits.append(request.url.path)
        return JSONResponse({}, status_code=302, headers={"Location": "/elsewhere"})

    async def elsewhere(request: Request) -> JSONResponse:
        hits.append(request.url.path)
        return JSONResponse({})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/elsewhere", elsewhere, methods=["GET", "POST"])])
    with serve_app(app) as base:
        job_id = _make_job(f"{base}/hook")
        delivery_id = _enqueue(job_id)
        drain_due_webhooks()
    assert hits == ["/hook"]
    d = _delivery(delivery_id)
    assert d.status == "pending" and d.status_code == 302 and d.last_error == "HTTP 302"


def test_webhook_events_are_honoured_and_partial_rows_capped(db, dev_env):
    job_id = _make_job("https://hooks.partner.example/hook", events=["complete", "failed"])
    assert _enqueue(job_id, "progress") is None
    many = [{"ficheId": str(i), "recordingsCount": 1, "createdAt": "2025-01-01T00:00:00.000Z"} for i in range(600)]
    delivery_id = _enqueue(job_id, "complete", {"status": "complete", "progress": 100}, many)
    assert delivery_id is not None and len(delivery_id) == 32
    no_url = _make_job(None)  # type: ignore[arg-type]
    assert _enqueue(no_url, "complete", {"status": "complete"}) is None
    with session_scope() as s:
        assert s.scalar(select(text("count(*)")).select_from(WebhookDelivery)) == 1
        rows = s.scalars(select(WebhookDeliveryPartialFiche.row_index).where(
            WebhookDeliveryPartialFiche.delivery_id == delivery_id).order_by(WebhookDeliveryPartialFiche.row_index)).all()
        assert rows == list(range(1, 502))  # cap + 1 kept to know the payload is truncated
        req = load_request(s, s.get(WebhookDelivery, delivery_id))
    data = json.loads(req.body)["data"]
    assert len(data["partialData"]) == 500 and data["partialDataTruncated"] is True
    assert data["partialData"][0]["ficheId"] == "0" and data["partialData"][-1]["ficheId"] == "499"


def test_enqueue_rolls_back_with_the_callers_transaction(db, dev_env):
    job_id = _make_job("https://hooks.partner.example/hook")
    with pytest.raises(RuntimeError):
        with session_scope() as s:
            enqueue_job_webhook(s, s.get(ProgressiveFetchJob, job_id), "progress", PROGRESS, PARTIALS)
            raise RuntimeError("the state change failed")
    with session_scope() as s:
        assert s.scalar(text("SELECT count(*) FROM webhook_deliveries")) == 0
        assert s.scalar(text("SELECT count(*) FROM webhook_delivery_partial_fiches")) == 0


def test_undecryptable_secret_kills_the_delivery_without_sending(db, dev_env):
    from cryptography.fernet import Fernet

    rx = Receiver()
    with serve_app(rx.app()) as base:
        job_id = _make_job(f"{base}/hook", secret=None)
        with session_scope() as s:
            s.execute(update(ProgressiveFetchJob).where(ProgressiveFetchJob.id == job_id).values(
                webhook_secret_encrypted=Fernet(Fernet.generate_key()).encrypt(SECRET.encode()).decode()))
        delivery_id = _enqueue(job_id)
        assert drain_due_webhooks()["dead"] == 1
    assert rx.requests == []
    d = _delivery(delivery_id)
    assert d.status == "dead" and "cannot be decrypted" in d.response_body and SECRET not in d.response_body


def test_sensor_drains_and_reports_counts(db, dev_env):
    rx = Receiver()
    with serve_app(rx.app()) as base:
        job_id = _make_job(f"{base}/hook")
        _enqueue(job_id)
        _enqueue(job_id, "complete", {"status": "complete", "progress": 100}, [])
        result = webhook_deliveries_sensor(build_sensor_context(resources={"notifier": NotifierResource()}))
        again = webhook_deliveries_sensor(build_sensor_context(resources={"notifier": NotifierResource()}))
    assert isinstance(result, SkipReason)
    assert result.skip_message == "webhooks: claimed=2, sent=2, retrying=0, dead=0, stale=0"
    assert again.skip_message.startswith("webhooks: claimed=0")
    assert sorted(r["headers"]["x-webhook-event"] for r in rx.requests) == ["complete", "progress"]


# ---------------------------------------------------------------------------------------------
# https: connect to the pinned address, verify the certificate against the URL's host name (SNI)
# ---------------------------------------------------------------------------------------------


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
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _serve_tls(app, certfile: str, keyfile: str):
    import contextlib
    import socket
    import time

    import uvicorn

    @contextlib.contextmanager
    def run():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                               ssl_certfile=certfile, ssl_keyfile=keyfile))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()

    return run()


def test_https_is_verified_against_the_host_name_while_connecting_to_the_pinned_address(tmp_path):
    import ssl

    rx = Receiver()
    cert, key = _self_signed(tmp_path, "hooks.tls.test")
    other_cert, _ = _self_signed(tmp_path, "someone-else.test")
    with _serve_tls(rx.app(), cert, key) as port:
        origin = f"https://hooks.tls.test:{port}"

        def sender_trusting(cafile: str) -> WebhookSender:
            return WebhookSender(
                production=True, allowed_origins=[origin], resolve=lambda h, p: ["127.0.0.1"],
                transport_factory=lambda: httpx.HTTPTransport(verify=ssl.create_default_context(cafile=cafile)),
            )

        ok = sender_trusting(cert).send(f"{origin}/hook", b"{}", {"Content-Type": "application/json"})
        # a certificate for another name (or an untrusted one) fails the handshake: nothing is sent
        bad = sender_trusting(other_cert).send(f"{origin}/hook", b"{}", {"Content-Type": "application/json"})
    assert ok.status_code == 200 and ok.ok
    assert len(rx.requests) == 1 and rx.requests[0]["headers"]["host"] == f"hooks.tls.test:{port}"
    assert bad.status_code is None and bad.error == "network error: TLS certificate verification failed"
