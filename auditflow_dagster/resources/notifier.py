"""Outgoing webhook HTTP client (spec 01 §4.7, §5; spec 06 §3.1, §3.3).

:class:`WebhookSender` sends one prepared webhook request:

1. the SSRF guard runs again at send time with real DNS resolution (``getaddrinfo`` in a worker
   thread, bounded by a timeout): every address must be public, and the request then goes to the
   **pinned** address — the URL's host is never resolved a second time, so DNS rebinding cannot
   swap the target between check and connect. The original host travels in the ``Host`` header and,
   for https, as the TLS SNI name against which the certificate is verified;
2. POST with the configured timeout, **no redirects** (a 3xx is a failed attempt), no proxies from
   the environment (a proxy would defeat pinning), a fresh connection per delivery (a pooled TLS
   connection must never be reused for another host name on the same address);
3. the outcome is a :class:`~auditflow_dagster.db.webhooks.SendOutcome`; error texts are built from
   transport codes and sanitized (no secrets, no query strings).

:class:`NotifierResource` is the Dagster resource; ``sender()`` builds a sender from the settings.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping

import httpx
from dagster import ConfigurableResource

from auditflow_dagster.core.ssrf import SafeTarget, UnsafeUrl, check_url
from auditflow_dagster.db.webhooks import RESPONSE_BODY_LIMIT, SendOutcome
from auditflow_dagster.resources.http_errors import transport_code
from auditflow_dagster.settings import Settings, get_settings

Resolver = Callable[[str, int], list[str]]
TransportFactory = Callable[[], httpx.BaseTransport]

DNS_TIMEOUT_SECONDS = 5.0
_MAX_READ_BYTES = 4 * RESPONSE_BODY_LIMIT  # UTF-8: enough bytes for 1000 characters

_dns_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


class ResolutionError(OSError):
    """The host name could not be resolved (transient: the delivery is retried)."""


def system_resolve(host: str, port: int, *, timeout: float = DNS_TIMEOUT_SECONDS) -> list[str]:
    """Every address ``host`` resolves to (``getaddrinfo`` in a thread, bounded by ``timeout``)."""
    future = _dns_pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise ResolutionError("DNS resolution timed out") from None
    except socket.gaierror as exc:
        raise ResolutionError(f"DNS resolution failed ({_gai_code(exc)})") from None
    addresses: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            a = str(sockaddr[0]).split("%", 1)[0]
            if a not in addresses:
                addresses.append(a)
    if not addresses:
        raise ResolutionError("DNS resolution returned no address")
    return addresses


def _gai_code(exc: socket.gaierror) -> str:
    for name in ("EAI_NONAME", "EAI_AGAIN", "EAI_FAIL", "EAI_NODATA", "EAI_SERVICE"):
        if getattr(socket, name, object()) == exc.errno:
            return name
    return f"errno {exc.errno}"


_URL_QUERY_RE = re.compile(r"(https?://[^\s?#'\"<>]*)[?#][^\s'\"<>]*", re.IGNORECASE)


def sanitize_error(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove query strings/fragments from URLs and every given secret from ``text``."""
    out = _URL_QUERY_RE.sub(r"\1", text)
    for s in secrets:
        if s:
            out = out.replace(s, "[redacted]")
    return out[:RESPONSE_BODY_LIMIT]


def _default_transport() -> httpx.BaseTransport:
    return httpx.HTTPTransport(retries=0)


class WebhookSender:
    """Sends prepared webhook requests to pinned, SSRF-checked addresses."""

    def __init__(
        self,
        *,
        timeout_seconds: float = 10.0,
        allowed_origins: Iterable[str] = (),
        production: bool = True,
        resolve: Resolver | None = None,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self.timeout_seconds = float(timeout_seconds)
        self.allowed_origins = [o.strip() for o in allowed_origins if o and o.strip()]
        self.production = production
        self._resolve = resolve or system_resolve
        self._transport_factory = transport_factory or _default_transport

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, timeout_ms: int | None = None) -> WebhookSender:
        settings = settings or get_settings()
        return cls(
            timeout_seconds=(timeout_ms or settings.webhook_timeout_ms) / 1000.0,
            allowed_origins=settings.allowed_webhook_origins,
            production=settings.is_production,
        )

    def check(self, url: str) -> SafeTarget:
        """The send-time guard (raises :class:`UnsafeUrl`, or :class:`ResolutionError` for DNS)."""
        return check_url(url, allowed_origins=self.allowed_origins, production=self.production, resolve=self._resolve)

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendOutcome:
        secrets = _header_secrets(headers)
        try:
            target = self.check(url)
        except UnsafeUrl as exc:
            return SendOutcome(refused=sanitize_error(str(exc), secrets))
        except ResolutionError as exc:
            return SendOutcome(error=sanitize_error(str(exc), secrets))
        except OSError as exc:
            return SendOutcome(error=f"DNS resolution failed ({transport_code(exc)})")
        pinned = target.pinned_address or target.host
        ip_host = f"[{pinned}]" if ":" in pinned else pinned
        request_url = f"{target.scheme}://{ip_host}:{target.port}{target.path}"
        request_headers = {k: v for k, v in headers.items() if k.lower() != "host"}
        request_headers["Host"] = target.host_header
        extensions = {"sni_hostname": target.host} if target.scheme == "https" and not target.is_ip_literal else {}
        try:
            with httpx.Client(
                transport=self._transport_factory(),
                timeout=self.timeout_seconds,
                follow_redirects=False,
                trust_env=False,
            ) as client:
                request = client.build_request(
                    "POST", request_url, content=body, headers=request_headers, extensions=extensions
                )
                response = client.send(request, stream=True, follow_redirects=False)
                try:
                    raw = bytearray()
                    for chunk in response.iter_bytes():
                        raw.extend(chunk)
                        if len(raw) >= _MAX_READ_BYTES:
                            break
                finally:
                    response.close()
                text = bytes(raw[:_MAX_READ_BYTES]).decode("utf-8", errors="replace")[:RESPONSE_BODY_LIMIT]
                return SendOutcome(status_code=response.status_code, response_body=text)
        except (httpx.HTTPError, OSError) as exc:
            return SendOutcome(error=f"network error: {_error_code(exc)}")


def _error_code(exc: BaseException) -> str:
    """A URL-free code; TLS failures are named as such (not as the errno they carry)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return "TLS certificate verification failed"
        if isinstance(cur, ssl.SSLError):
            return "TLS handshake failed"
        cur = cur.__cause__ or cur.__context__
    return transport_code(exc)


def _header_secrets(headers: Mapping[str, str]) -> list[str]:
    return [v for k, v in headers.items() if k.lower().startswith("x-webhook-signature")]


class NotifierResource(ConfigurableResource):
    """Webhook notifier: ``sender()`` returns a :class:`WebhookSender` configured from settings
    (``WEBHOOK_TIMEOUT_MS``, ``WEBHOOK_ALLOWED_ORIGINS``, production mode), read at call time."""

    timeout_ms: int | None = None

    def sender(self) -> WebhookSender:
        return WebhookSender.from_settings(timeout_ms=self.timeout_ms)
