"""CRM gateway client (spec 01 §1) and its in-process "sample" twin.

* :class:`CrmClient` speaks the real gateway protocol over HTTP (base URL rule, bearer rule,
  retries with ``Retry-After`` / exponential backoff, error mapping, row-level validation).
* :class:`SampleCrmClient` serves :mod:`auditflow_dagster.sample.generator` in-process with the same
  async methods and the same output normalisation, so assets cannot tell the two apart.
* :class:`CrmResource` is the Dagster resource that picks one of them from settings.

Security: error messages expose only the upstream status, the upstream error code and the resource
path — never full URLs, query strings, bodies or the bearer token.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from datetime import date, datetime
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import httpx
from dagster import ConfigurableResource
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from auditflow_dagster.resources.http_errors import (  # noqa: F401
    parse_retry_after,
    transport_code,
)
from auditflow_dagster.resources.secrets import resolve_secret, secret_field_value

logger = logging.getLogger(__name__)

SALES_STATUS_ID = "53"  # 53 = "sale" in the CRM
MAX_BACKOFF_SECONDS = 15.0
JITTER_RATIO = 0.2
HEALTH_TIMEOUT_SECONDS = 5.0
DIRECTORY_TIMEOUT_SECONDS = 60.0

SleepFn = Callable[[float], Awaitable[Any]]

# ---------------------------------------------------------------------------------------------
# Base URL and auth rules (spec 01 §1.1)
# ---------------------------------------------------------------------------------------------


def normalize_base_url(url: str) -> str:
    """Trailing slashes removed, then forced to end with exactly one ``/api``.

    Only the URL *path* is inspected, so a host literally named ``api`` is not mangled. Query strings
    and fragments are not meaningful for a base URL and are dropped.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("CRM base URL is empty (set FICHE_API_BASE_URL or FICHE_API_URL)")
    raw = url.strip()
    parts = urlsplit(raw)
    if not parts.scheme or not parts.netloc:
        raise ValueError("CRM base URL must be absolute (scheme://host[/path])")
    path = parts.path.rstrip("/")
    while path.endswith("/api"):
        path = path[: -len("/api")].rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/api", "", ""))


def root_url(base_url: str) -> str:
    """The gateway root (base without the trailing ``/api``); it serves only ``/health``."""
    return normalize_base_url(base_url)[: -len("/api")]


def auth_header_value(token: str | None) -> str | None:
    """``Bearer <token>`` for a non-empty trimmed token; sent unchanged if already ``bearer …``."""
    if not isinstance(token, str):
        return None
    t = token.strip()
    if not t:
        return None
    if t.lower().startswith("bearer "):
        return t
    return f"Bearer {t}"


def _resource_path(path: str) -> str:
    """Normalise a resource path: leading slash, no duplicated ``/api`` prefix, no query."""
    p = "/" + path.split("?", 1)[0].lstrip("/")
    if p == "/api":
        return "/"
    if p.startswith("/api/"):
        p = p[len("/api") :]
    return p


# ---------------------------------------------------------------------------------------------
# Errors (spec 01 §1.2 "Final mapping")
# ---------------------------------------------------------------------------------------------

EXTERNAL_API_ERROR = "EXTERNAL_API_ERROR"
NOT_FOUND = "NOT_FOUND"
AUTH_ERROR = "AUTH_ERROR"


class CrmError(Exception):
    """A failed gateway call.

    ``status`` is the *upstream* HTTP status (``None`` for network/schema failures), ``code`` the
    app-level code and ``path`` the resource path (never the full URL or query). ``http_status`` is
    what the API should answer with (404 for not found, else 502).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = EXTERNAL_API_ERROR,
        path: str = "",
        upstream_code: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.path = path
        self.upstream_code = upstream_code
        self.retryable = retryable

    @property
    def http_status(self) -> int:
        return 404 if self.code == NOT_FOUND else 502

    def __str__(self) -> str:
        return self.message


class CrmNotFound(CrmError):
    def __init__(self, message: str, *, status: int | None = 404, path: str = "", upstream_code: str | None = None):
        super().__init__(message, status=status, code=NOT_FOUND, path=path, upstream_code=upstream_code)


_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _upstream_code(response: httpx.Response) -> str | None:
    """A short machine code from an error body (``code``/``error_code``), if it looks like one."""
    try:
        body = response.json()
    except Exception:
        return None
    if isinstance(body, dict):
        for key in ("code", "error_code"):
            v = body.get(key)
            if isinstance(v, str) and _SAFE_CODE.match(v):
                return v
    return None


# ---------------------------------------------------------------------------------------------
# Row models (spec 01 §1.3 / §1.4). Unknown keys dropped, rows validated one by one.
# ---------------------------------------------------------------------------------------------


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


def _none_to_empty(v: Any) -> Any:
    return "" if v is None else v


class TranscriptionRef(_Row):
    duration_formatted: str | None = None
    speakers: list[str] = Field(default_factory=list)
    conversation: str | list[dict[str, Any]] | None = None


class RecordingRow(_Row):
    call_id: str = Field(min_length=1)
    start_time: str = ""
    duration_seconds: int = 0
    direction: str = ""
    from_number: str = ""
    to_number: str = ""
    answered: bool = False
    recording_url: str | None = None
    transcription: TranscriptionRef | None = None

    @field_validator("start_time", "direction", "from_number", "to_number", mode="before")
    @classmethod
    def _str_default(cls, v: Any) -> Any:
        return _none_to_empty(v)

    @field_validator("duration_seconds", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if v is None:
            return 0
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    @field_validator("answered", mode="before")
    @classmethod
    def _answered(cls, v: Any) -> Any:
        return False if v is None else v


class SalesFicheRow(_Row):
    id: str = Field(min_length=1)
    cle: str | None = None
    nom: str = ""
    prenom: str = ""
    telephone: str = ""
    telephone_2: str | None = None
    email: str = ""
    statut: str = ""
    date_insertion: str = ""
    date_modification: str | None = None
    recordings: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("nom", "prenom", "telephone", "email", "statut", "date_insertion", mode="before")
    @classmethod
    def _str_default(cls, v: Any) -> Any:
        return _none_to_empty(v)

    @field_validator("recordings", mode="before")
    @classmethod
    def _recordings_default(cls, v: Any) -> Any:
        return [] if v is None else v


def _validate_recordings(rows: Any, *, context: str) -> list[dict[str, Any]]:
    if rows is None:
        return []
    if not isinstance(rows, list):
        logger.warning("CRM %s: recordings is not a list; treated as empty", context)
        return []
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        try:
            out.append(RecordingRow.model_validate(row).model_dump())
        except ValidationError as exc:
            logger.warning("CRM %s: skipping invalid recording #%d (%s)", context, i, _short_validation(exc))
    return out


def _short_validation(exc: ValidationError) -> str:
    """Field locations and error types only — never the offending values (they may be PII)."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}:{e['type']}" for e in exc.errors()[:5]]
    return ", ".join(parts)


def validate_sales_payload(body: Any, *, path: str = "/fiches/sales-with-calls") -> dict[str, Any]:
    """``{"fiches": [...], "total": int}`` with invalid rows skipped and logged."""
    if not isinstance(body, dict):
        raise CrmError(f"CRM gateway GET {path} failed: invalid response body", path=path)
    raw_fiches = body.get("fiches")
    if raw_fiches is None:
        raw_fiches = []
    if not isinstance(raw_fiches, list):
        raise CrmError(f"CRM gateway GET {path} failed: invalid response body (fiches)", path=path)
    fiches: list[dict[str, Any]] = []
    for i, row in enumerate(raw_fiches):
        try:
            fiche = SalesFicheRow.model_validate(row).model_dump()
        except ValidationError as exc:
            logger.warning("CRM sales list: skipping invalid fiche row #%d (%s)", i, _short_validation(exc))
            continue
        fiche["recordings"] = _validate_recordings(fiche["recordings"], context=f"fiche {fiche['id']}")
        fiches.append(fiche)
    total = body.get("total")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        total = len(fiches)
    return {"fiches": fiches, "total": total}


_DETAIL_OBJECT_SECTIONS = ("information", "prospect", "conjoint", "elements_souscription", "raw_sections")
_DETAIL_LIST_SECTIONS = (
    "enfants",
    "mails",
    "rendez_vous",
    "commentaires",
    "reclamations",
    "autres_contrats",
    "documents",
    "alertes",
    "tarification",
)
_NOT_FOUND_MESSAGE = re.compile(
    r"not[\s_-]*found|introuvable|n'existe pas|n’existe pas|inexistant|does not exist|no such fiche|aucune fiche",
    re.IGNORECASE,
)


def validate_details_payload(body: Any, *, fiche_id: str, path: str) -> dict[str, Any]:
    """Validate a ``by-id`` envelope (spec 01 §1.5).

    Known top-level sections are kept (unknown top-level keys dropped); object sections that are
    not objects become ``null``, list sections default to ``[]`` with non-object rows skipped, and
    recordings are validated row by row. ``mail_devis`` is kept only when present (its ``null``
    marker matters, spec 01 §2.6).
    """
    if not isinstance(body, dict):
        raise CrmError(f"CRM gateway GET {path} failed: invalid response body", path=path)
    if body.get("success") is not True:
        message = body.get("message")
        if isinstance(message, str) and _NOT_FOUND_MESSAGE.search(message):
            raise CrmNotFound(f"CRM fiche not found (path={path})", status=None, path=path)
        raise CrmError(f"CRM gateway GET {path} failed: success=false", path=path)
    out: dict[str, Any] = {"success": True, "message": body.get("message") if isinstance(body.get("message"), str) else ""}
    for key in _DETAIL_OBJECT_SECTIONS:
        v = body.get(key)
        if v is not None and not isinstance(v, dict):
            logger.warning("CRM fiche %s: section %s is not an object; set to null", fiche_id, key)
            v = None
        out[key] = v
    for key in _DETAIL_LIST_SECTIONS:
        v = body.get(key)
        if v is None:
            v = []
        if not isinstance(v, list):
            logger.warning("CRM fiche %s: section %s is not a list; set to []", fiche_id, key)
            v = []
        kept = [row for row in v if isinstance(row, dict)]
        if len(kept) != len(v):
            logger.warning("CRM fiche %s: skipped %d invalid %s rows", fiche_id, len(v) - len(kept), key)
        out[key] = kept
    out["recordings"] = _validate_recordings(body.get("recordings"), context=f"fiche {fiche_id}")
    if "mail_devis" in body:
        md = body["mail_devis"]
        out["mail_devis"] = md if isinstance(md, dict) else None
    return out


def _validate_directory(body: Any, *, list_key: str, path: str) -> dict[str, Any]:
    """Users/groups envelope: ``{success, message?, data: {<list_key>: [...], total_count?}, timestamp?}``."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise CrmError(f"CRM gateway GET {path} failed: invalid response body", path=path)
    if body.get("success") is not True:
        raise CrmError(f"CRM gateway GET {path} failed: success=false", path=path)
    data = body["data"]
    rows = data.get(list_key)
    if rows is None:
        rows = []
    if not isinstance(rows, list):
        raise CrmError(f"CRM gateway GET {path} failed: invalid response body ({list_key})", path=path)
    kept: list[dict[str, Any]] = []
    for row in rows:
        if isinstance(row, dict) and row.get("id") not in (None, ""):
            item = dict(row)
            item["id"] = str(item["id"])
            if list_key == "utilisateurs":
                item["nom"] = item.get("nom") or ""
                item["prenom"] = item.get("prenom") or ""
            kept.append(item)
    if len(kept) != len(rows):
        logger.warning("CRM %s: skipped %d invalid rows", path, len(rows) - len(kept))
    out_data: dict[str, Any] = {list_key: kept}
    if isinstance(data.get("total_count"), int):
        out_data["total_count"] = data["total_count"]
    out: dict[str, Any] = {"success": True, "data": out_data}
    if isinstance(body.get("message"), str):
        out["message"] = body["message"]
    if body.get("timestamp") is not None:
        out["timestamp"] = body["timestamp"]
    return out


def _date_str(d: date | str) -> str:
    if isinstance(d, datetime):
        return d.date().isoformat()
    if isinstance(d, date):
        return d.isoformat()
    return date.fromisoformat(str(d)).isoformat()


def _bool_str(v: bool) -> str:
    return "true" if v else "false"


# ---------------------------------------------------------------------------------------------
# HTTP client
# ---------------------------------------------------------------------------------------------

_RETRYABLE_STATUSES = frozenset({404, 408, 429})


def _is_retryable_status(status: int) -> bool:
    return status in _RETRYABLE_STATUSES or status >= 500


class CrmClient:
    """Async client for the CRM gateway. One instance per event loop; ``async with`` closes it."""

    def __init__(
        self,
        base_url: str,
        auth_token: str = "",
        *,
        timeout: float = 60.0,
        max_attempts: int = 3,
        backoff_base: float = 1.0,
        sleep: SleepFn = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.root_url = self.base_url[: -len("/api")]
        self._auth = auth_header_value(auth_token)
        self.timeout = float(timeout)
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_base = float(backoff_base)
        self._sleep = sleep
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # never show the token
        return f"CrmClient(base_url={self.base_url!r})"

    # -- plumbing -------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Accept": "application/json"}
            if self._auth:
                headers["Authorization"] = self._auth
            self._client = httpx.AsyncClient(
                headers=headers, transport=self._transport, timeout=self.timeout, follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> "CrmClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def url_for(self, path: str) -> str:
        return self.base_url + _resource_path(path)

    def retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """Delay before retry number ``attempt`` (1-based), spec 01 §1.2.

        ``Retry-After`` wins when present (capped at 15 s, no jitter so we never go *under* what the
        server asked); otherwise ``base × 2^(n−1)`` capped at 15 s with ±20 % jitter.
        """
        if retry_after is not None:
            return min(retry_after, MAX_BACKOFF_SECONDS)
        delay = min(self.backoff_base * (2 ** (attempt - 1)), MAX_BACKOFF_SECONDS)
        return max(0.0, delay * random.uniform(1 - JITTER_RATIO, 1 + JITTER_RATIO))

    async def _get(
        self,
        path: str,
        params: dict[str, str] | None,
        *,
        retry: bool,
        timeout: float | None = None,
        not_found_ok: bool = False,
    ) -> Any:
        rpath = _resource_path(path)
        url = self.base_url + rpath
        attempts = self.max_attempts if retry else 1
        last: CrmError | None = None
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            try:
                response = await self._http().get(url, params=params, timeout=timeout or self.timeout)
            except httpx.TransportError as exc:
                retryable = not isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL))
                last = CrmError(
                    f"CRM gateway GET {rpath} failed: network error code={transport_code(exc)}",
                    path=rpath,
                    retryable=retryable,
                )
                if not retryable:
                    raise last from None
            else:
                status = response.status_code
                if 200 <= status < 300:
                    try:
                        return response.json()
                    except ValueError:
                        raise CrmError(
                            f"CRM gateway GET {rpath} failed: status={status} invalid JSON body", status=status, path=rpath
                        ) from None
                up = _upstream_code(response)
                suffix = f" upstream_code={up}" if up else ""
                if status == 404:
                    last = CrmNotFound(f"CRM gateway GET {rpath} failed: status=404{suffix}", path=rpath, upstream_code=up)
                    last.retryable = True
                elif status in (401, 403):
                    raise CrmError(
                        f"CRM gateway GET {rpath} failed: status={status}{suffix} (check FICHE_API_AUTH_TOKEN)",
                        status=status,
                        code=AUTH_ERROR,
                        path=rpath,
                        upstream_code=up,
                    )
                else:
                    last = CrmError(
                        f"CRM gateway GET {rpath} failed: status={status}{suffix}",
                        status=status,
                        path=rpath,
                        upstream_code=up,
                        retryable=_is_retryable_status(status),
                    )
                    if not last.retryable:
                        raise last
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            assert last is not None
            if attempt < attempts:
                delay = self.retry_delay(attempt, retry_after)
                logger.info(
                    "CRM GET %s attempt %d/%d failed (%s); retrying in %.2fs",
                    rpath, attempt, attempts, last.status if last.status is not None else "network", delay,
                )
                await self._sleep(delay)
        assert last is not None
        raise last  # ``retryable`` still tells a caller whether a later retry could help

    # -- endpoints -------------------------------------------------------------------------------

    async def sales_with_calls(self, start_date: date, end_date: date, include_recordings: bool) -> dict[str, Any]:
        """``GET /fiches/sales-with-calls`` (status 53, inclusive window, never transcriptions)."""
        path = "/fiches/sales-with-calls"
        params = {
            "start_date": _date_str(start_date),
            "end_date": _date_str(end_date),
            "status_id": SALES_STATUS_ID,
            "include_recordings": _bool_str(include_recordings),
            "include_transcriptions": "false",
        }
        body = await self._get(path, params, retry=True)
        result = validate_sales_payload(body, path=path)
        if not result["fiches"]:
            # A stale token can yield an empty list rather than a 401 (spec 01 §1.1): make it visible.
            logger.info("CRM sales list %s..%s returned no fiches", params["start_date"], params["end_date"])
        return result

    async def fiche_details(self, fiche_id: str, include_mail_devis: bool = False) -> dict[str, Any]:
        """``GET /fiches/by-id/{id}`` with recordings, never transcriptions, never ``cle``."""
        fid = str(fiche_id).strip()
        if not fid.isdigit():
            raise CrmNotFound("CRM fiche id must be numeric", status=None, path="/fiches/by-id/")
        path = f"/fiches/by-id/{fid}"
        params = {
            "include_recordings": "true",
            "include_transcriptions": "false",
            "include_mail_devis": _bool_str(include_mail_devis),
        }
        body = await self._get(path, params, retry=True)
        return validate_details_payload(body, fiche_id=fid, path=path)

    async def users(self) -> dict[str, Any]:
        path = "/utilisateurs"
        body = await self._get(path, None, retry=False, timeout=min(self.timeout, DIRECTORY_TIMEOUT_SECONDS))
        return _validate_directory(body, list_key="utilisateurs", path=path)

    async def groups(self, include_users: bool = False) -> dict[str, Any]:
        path = "/utilisateurs/groupes"
        body = await self._get(
            path,
            {"include_users": _bool_str(include_users)},
            retry=False,
            timeout=min(self.timeout, DIRECTORY_TIMEOUT_SECONDS),
        )
        return _validate_directory(body, list_key="groupes", path=path)

    async def health(self) -> bool:
        """``GET {root}/health``; healthy iff 200. Never raises."""
        try:
            response = await self._http().get(self.root_url + "/health", timeout=HEALTH_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - health is a boolean probe
            logger.info("CRM health probe failed: %s", transport_code(exc))
            return False
        return response.status_code == 200


# ---------------------------------------------------------------------------------------------
# Sample twin
# ---------------------------------------------------------------------------------------------


class SampleCrmClient:
    """Same async surface as :class:`CrmClient`, backed by :mod:`auditflow_dagster.sample.generator`.

    Payloads go through the same validation as real gateway bodies so the twin cannot drift.
    """

    base_url = "sample://crm/api"

    def __init__(self, *, latency_seconds: float = 0.0) -> None:
        self.latency_seconds = max(0.0, float(latency_seconds))

    @staticmethod
    def _generator() -> Any:
        from auditflow_dagster.sample import generator

        return generator

    async def _pause(self) -> None:
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)

    async def sales_with_calls(self, start_date: date, end_date: date, include_recordings: bool) -> dict[str, Any]:
        await self._pause()
        start = date.fromisoformat(_date_str(start_date))
        end = date.fromisoformat(_date_str(end_date))
        body = self._generator().sales_list_payload(start, end, include_recordings)
        return validate_sales_payload(body)

    async def fiche_details(self, fiche_id: str, include_mail_devis: bool = False) -> dict[str, Any]:
        await self._pause()
        fid = str(fiche_id).strip()
        path = f"/fiches/by-id/{fid}"
        body = self._generator().fiche_details_payload(fid, include_mail_devis) if fid.isdigit() else None
        if body is None:
            raise CrmNotFound(f"CRM gateway GET {path} failed: status=404", path=path)
        return validate_details_payload(body, fiche_id=fid, path=path)

    async def users(self) -> dict[str, Any]:
        gen = self._generator()
        fn = getattr(gen, "users_payload", None)
        body = fn() if callable(fn) else {"success": True, "data": {"utilisateurs": [], "total_count": 0}}
        return _validate_directory(body, list_key="utilisateurs", path="/utilisateurs")

    async def groups(self, include_users: bool = False) -> dict[str, Any]:
        gen = self._generator()
        fn = getattr(gen, "groups_payload", None)
        body = fn(include_users) if callable(fn) else {"success": True, "data": {"groupes": []}}
        return _validate_directory(body, list_key="groupes", path="/utilisateurs/groupes")

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> "SampleCrmClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ---------------------------------------------------------------------------------------------
# Dagster resource
# ---------------------------------------------------------------------------------------------

CRM_MODES = ("http", "sample")


class CrmResource(ConfigurableResource):
    """Which CRM the pipeline talks to. ``auth_token`` is a secret: never logged, never in errors."""

    mode: str = "sample"
    base_url: str | None = None
    auth_token: str = Field(default="", repr=False, description="Bearer token (secret; prefer EnvVar)")
    timeout_seconds: float = 60.0
    max_attempts: int = 3
    sample_latency_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: Any | None = None) -> "CrmResource":
        if settings is None:
            from auditflow_dagster.settings import get_settings

            settings = get_settings()
        return cls(
            mode=settings.crm_mode,
            base_url=settings.fiche_api_base_url,
            auth_token=secret_field_value(settings.fiche_api_auth_token, "FICHE_API_AUTH_TOKEN"),
            timeout_seconds=float(settings.crm_timeout_seconds),
            max_attempts=max(1, int(settings.crm_max_attempts)),
        )

    def _check(self) -> None:
        if self.mode not in CRM_MODES:
            raise ValueError(f"CRM mode must be one of {CRM_MODES}, got {self.mode!r} (AUDITFLOW_CRM)")
        if self.mode == "http":
            if not self.base_url or not self.base_url.strip():
                raise ValueError(
                    "CRM mode 'http' needs a gateway base URL: set FICHE_API_BASE_URL (or FICHE_API_URL)"
                )
            normalize_base_url(self.base_url)

    def setup_for_execution(self, context: Any) -> None:  # fail at run start, not mid-pipeline
        self._check()

    def client(self, auth_token: str | None = None) -> CrmClient | SampleCrmClient:
        """``auth_token`` overrides the configured token (an automation schedule's own gateway
        key for its sales-list calls, spec 05 §1.1 ``external_api_key``)."""
        self._check()
        if self.mode == "sample":
            return SampleCrmClient(latency_seconds=self.sample_latency_seconds)
        assert self.base_url is not None
        return CrmClient(
            self.base_url,
            auth_token or resolve_secret(self.auth_token),
            timeout=self.timeout_seconds,
            max_attempts=self.max_attempts,
        )
