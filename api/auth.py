"""Authentication and authorization of the API (issue 8; spec 04 §7 and spec 06 §2.3–§2.4, §4, adapted).

**Credentials.** ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``; for ``GET`` on the SSE
routes only (``/api/realtime/*``, ``/api/runs/{run_id}/events``) also ``?access_token=<token>``,
since a browser ``EventSource`` cannot send headers — the parameter is removed from the request's
query string once read, so access logs never see it. A token is either a legacy machine token
(``API_AUTH_TOKEN(S)``, compared in constant time: every permission, scope ALL) or an API key
(:mod:`auditflow_dagster.db.api_keys`). ``AUDITFLOW_AUTH=off`` (demo/dev only) makes every request
an ALL-scope principal with every permission; the API warns loudly at start.

**Where.** :class:`AuthMiddleware` resolves the principal once per request and stores it on
``request.state.principal``; a request to ``/api/*`` without a valid credential gets 401 before
routing (public: ``/health*``, ``/api/openapi.json``, the docs). Each route then calls
:func:`authorize` with its permission — first thing, before validating input — and, for
fiche-linked data, with the fiche ids it touches.

**Scope.** ALL sees everything. GROUP: the fiche's effective groupe is one of the key's groupes.
SELF: the fiche's attribution user id equals the key's ``crm_user_id``. An uncached fiche is out of
every scope but ALL. Item endpoints answer an out-of-scope item exactly like a missing one (their
usual 404 body), so a key learns nothing about items it may not see; list endpoints leave such
items out; batch launches are refused whole with 403 (spec 06 §4.3, §4.5).

Replies: 401 ``{success:false, error:"Authentication required", code:"AUTHENTICATION_ERROR"}``, 403
``{success:false, error:"Missing permission", code:"AUTHORIZATION_ERROR"}``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import ApiError, not_found
from auditflow_dagster.db import api_keys
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.settings import Settings, get_settings

log = logging.getLogger("auditflow.api.auth")

AUTH_REQUIRED = "Authentication required"
MISSING_PERMISSION = "Missing permission"
PUBLIC_PATHS = frozenset({"/api/openapi.json", "/api-docs.json", "/api-docs", "/docs"})
_SSE_PATH = re.compile(r"^/api/(?:realtime/.+|runs/[^/]+/events)$")


def unauthorized() -> ApiError:
    return ApiError(401, AUTH_REQUIRED, "AUTHENTICATION_ERROR")


def forbidden(message: str = MISSING_PERMISSION) -> ApiError:
    return ApiError(403, message, "AUTHORIZATION_ERROR")


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``kind`` is ``api_key``, ``machine`` or ``auth_off``."""

    kind: str
    permissions: frozenset[str]
    scope: str = "ALL"
    groupes: tuple[str, ...] = ()
    crm_user_id: str | None = None
    key_id: int | None = None
    name: str | None = None

    def has(self, permission: str) -> bool:
        return "*" in self.permissions or permission in self.permissions

    @property
    def all_scope(self) -> bool:
        return self.scope == "ALL"

    @property
    def label(self) -> str:
        """How the principal is recorded (``created_by``): never a secret."""
        if self.kind == "api_key":
            return f"api-key:{self.key_id}:{self.name}"[:200]
        return self.kind


AUTH_OFF = Principal(kind="auth_off", permissions=frozenset({"*"}))
MACHINE = Principal(kind="machine", permissions=frozenset({"*"}))


def startup_warning(settings: Settings | None = None) -> None:
    """Called by :func:`api.app.create_app`: auth off is said loudly, once per app."""
    settings = settings or get_settings()
    if not settings.auth_enabled:
        log.warning("!" * 78)
        log.warning("!!  AUDITFLOW_AUTH=off: API AUTHENTICATION IS DISABLED. Every request has every permission")
        log.warning("!!  and scope ALL. This mode exists only for the offline demo and local development.")
        log.warning("!" * 78)


def is_public(path: str) -> bool:
    if path.startswith("/health") or path in PUBLIC_PATHS:
        return True
    return not (path == "/api" or path.startswith("/api/"))


def _take_query_token(scope: Scope) -> str | None:
    """``access_token`` of the query string (SSE GETs only), removed from the scope once read."""
    raw = scope.get("query_string") or b""
    if b"access_token" not in raw:
        return None
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    tokens = [v for k, v in pairs if k == "access_token"]
    scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != "access_token"]).encode("latin-1")
    return tokens[0] if tokens else None


def presented_token(scope: Scope) -> str | None:
    headers = {k.lower(): v for k, v in scope.get("headers") or []}
    auth = headers.get(b"authorization")
    token: str | None = None
    if auth:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    if token is None and headers.get(b"x-api-key"):
        token = headers[b"x-api-key"].decode("latin-1").strip() or None
    if scope.get("method") == "GET" and _SSE_PATH.match(scope.get("path", "")):
        query_token = _take_query_token(scope)
        token = token or query_token
    return token


def _machine_match(token: str, tokens: list[str]) -> bool:
    matched = False
    for candidate in tokens:  # every candidate is compared: the time does not tell which matched
        matched |= hmac.compare_digest(token.encode("utf-8"), candidate.encode("utf-8"))
    return matched


def _verify(token: str) -> api_keys.KeyGrant | None:
    with session_scope() as s:
        grant = api_keys.verify_key(s, token)
        if grant is not None and grant.touch:
            api_keys.touch_key(s, grant.id)
        return grant


async def resolve_principal(scope: Scope) -> Principal | None:
    """The caller of this request, or None when it presents no valid credential."""
    settings = get_settings()
    token = presented_token(scope)  # read (and strip ?access_token) even when auth is off
    if not settings.auth_enabled:
        return AUTH_OFF
    if not token:
        return None
    if _machine_match(token, settings.machine_tokens):
        return MACHINE
    if not api_keys.TOKEN_RE.match(token):
        return None
    grant = await asyncio.to_thread(_verify, token)
    if grant is None:
        return None
    return Principal(kind="api_key", permissions=grant.permissions, scope=grant.scope, groupes=grant.groupes,
                     crm_user_id=grant.crm_user_id, key_id=grant.id, name=grant.name)


class AuthMiddleware:
    """Resolves the principal once per request; ``/api/*`` (but the public paths) needs one → 401."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        public = is_public(scope.get("path", ""))
        try:
            principal = await resolve_principal(scope)
        except Exception:  # noqa: BLE001 - the key store is down: no answer is better than a wrong one
            log.exception("API key verification failed on %s", scope.get("path"))
            if not public:
                await ApiError(503, "Authentication unavailable", "SERVICE_UNAVAILABLE").response()(
                    scope, receive, send)
                return
            principal = None
        if principal is None and not public:  # (the reply is logged once by api.app.HeadersAndLimits)
            response = unauthorized().response()
            response.headers["WWW-Authenticate"] = 'Bearer realm="auditflow"'
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def principal_of(request: Request) -> Principal:
    """The request's principal (set by :class:`AuthMiddleware`, resolved here when it did not
    run); no valid credential → 401."""
    if "principal" not in request.scope.get("state", {}):
        request.scope.setdefault("state", {})["principal"] = await resolve_principal(request.scope)
    principal = request.scope["state"]["principal"]
    if principal is None:
        raise unauthorized()
    return principal


class CredentialWatch:
    """For an open SSE stream (spec 06 §2.4: close it when the token expires): every
    ``AUDITFLOW_SSE_AUTH_RECHECK_SECONDS`` an API key is looked up again; revoked or expired ⇒
    the stream ends with a ``realtime.auth_expired`` frame. Machine tokens and auth-off streams
    have nothing to expire."""

    def __init__(self, request: Request) -> None:
        principal = request.scope.get("state", {}).get("principal")
        self.key_id = principal.key_id if principal is not None and principal.kind == "api_key" else None
        self.every = get_settings().sse_auth_recheck_seconds
        self.checked_at = asyncio.get_running_loop().time()

    async def expired(self) -> bool:
        if self.key_id is None:
            return False
        now = asyncio.get_running_loop().time()
        if now - self.checked_at < self.every:
            return False
        self.checked_at = now
        key_id = self.key_id

        def live() -> bool:
            with session_scope() as s:
                return api_keys.key_is_live(s, key_id)

        return not await asyncio.to_thread(live)


def current_principal(request: Request) -> Principal:
    """Sync access once :func:`authorize` ran (inside a DB thread, for instance)."""
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:
        raise unauthorized()
    return principal


# --------------------------------------------------------------------------------------------- #
# Scope
# --------------------------------------------------------------------------------------------- #


def allowed_fiches(session: Session, principal: Principal, fiche_ids: Iterable[str]) -> set[str]:
    return api_keys.fiches_in_scope(session, fiche_ids, principal.scope, principal.groupes, principal.crm_user_id)


def check_fiches(session: Session, request: Request, fiche_ids: Iterable[str], missing: ApiError | None = None) -> None:
    """Sync scope check inside an open session (the principal must be resolved already)."""
    principal = current_principal(request)
    ids = [str(f) for f in fiche_ids]
    if principal.all_scope:
        return
    allowed = allowed_fiches(session, principal, ids)
    if any(f not in allowed for f in ids):
        raise missing or not_found("Fiche not found")


async def _db(fn: Any) -> Any:
    def run() -> Any:
        with session_scope() as s:
            return fn(s)

    return await asyncio.to_thread(run)


async def scope_filter(request: Request, fiche_ids: Iterable[str]) -> set[str] | None:
    """None for an ALL-scope caller (no filtering); else the subset of ``fiche_ids`` it may see."""
    principal = await principal_of(request)
    if principal.all_scope:
        return None
    ids = list(fiche_ids)
    return await _db(lambda s: allowed_fiches(s, principal, ids))


async def filter_items(request: Request, items: list[dict[str, Any]], key: str = "ficheId") -> list[dict[str, Any]]:
    """``items`` whose ``key`` is a fiche in the caller's scope (all of them for ALL)."""
    allowed = await scope_filter(request, [str(i.get(key)) for i in items])
    return items if allowed is None else [i for i in items if str(i.get(key)) in allowed]


def scope_list_params(request: Request, params: Any) -> Any:
    """Narrow an audit :class:`~auditflow_dagster.db.audit_reads.ListParams` to the caller's scope."""
    principal = current_principal(request)
    if principal.scope == "GROUP":
        params.scope_groupes = list(principal.groupes)
    elif principal.scope == "SELF":
        if principal.crm_user_id:
            params.scope_attribution = principal.crm_user_id
        else:
            params.scope_groupes = []  # matches nothing
    return params


async def authorize(request: Request, permission: str | None, fiche_ids: list[str] | None = None, *,
                    missing: ApiError | None = None, out_of_scope: ApiError | None = None) -> Principal:
    """401 without a valid credential; 403 without ``permission`` (None: authentication only);
    with ``fiche_ids`` and a non-ALL scope, every fiche must be cached and in scope, else
    ``out_of_scope`` when given (batch launches: 403), else ``missing`` (the route's usual
    not-found reply; default ``404 Fiche not found``)."""
    principal = await principal_of(request)
    if permission is not None and not principal.has(permission):
        log.debug("%s %s: the caller lacks %s", request.method, request.url.path, permission)
        raise forbidden()
    if fiche_ids is not None and not principal.all_scope:
        ids = [str(f) for f in fiche_ids]
        allowed = await _db(lambda s: allowed_fiches(s, principal, ids))
        if any(f not in allowed for f in ids):
            raise out_of_scope or missing or not_found("Fiche not found")
    return principal


async def authorize_audit(request: Request, permission: str, audit_id: int, missing: ApiError) -> Principal:
    """``permission`` and, for a non-ALL scope, the audit's fiche in scope; an audit that does not
    exist answers ``missing`` as an out-of-scope one does."""
    principal = await authorize(request, permission)
    if principal.all_scope:
        return principal

    def check(s: Session) -> bool:
        fiche_id = api_keys.audit_fiche_id(s, audit_id)
        return fiche_id is not None and fiche_id in allowed_fiches(s, principal, [fiche_id])

    if not await _db(check):
        raise missing
    return principal


# --------------------------------------------------------------------------------------------- #
# SSE
# --------------------------------------------------------------------------------------------- #

CHANNEL_FORBIDDEN = "Forbidden"


async def authorize_channels(request: Request, channels: Iterable[str]) -> Principal:
    """Realtime channels (spec 06 §2.3 steps 3–4, §2.4), all checked before the stream opens.

    Every channel needs ``realtime.read``; ``audit-*`` also ``audits.read`` and ``fiche-*``
    ``fiches.read``; ``global`` needs scope ALL; ``job-*`` has no scope check (spec 06 §2.3).
    For a non-ALL scope, an audit or fiche channel must name a fiche in scope (the audit's fiche:
    DB id, tracking id ``audit-<fiche>-…``, or stored tracking id).

    A refusal is **403** ``Forbidden`` (code ``AUTHORIZATION_ERROR``), not 404: the spec answers channel
    refusals with JSON 401/403 before any stream opens, and a multi-channel subscription has no
    single item to be "not found". The same 403 answers a channel whose audit or fiche does not
    exist, so the status tells nothing about other groups' audits either.
    """
    principal = await authorize(request, "realtime.read")
    names = list(channels)
    for name in names:
        if name.startswith("audit-") and not principal.has("audits.read"):
            raise forbidden()
        if name.startswith("fiche-") and not principal.has("fiches.read"):
            raise forbidden()
    if principal.all_scope:
        return principal
    if "global" in names:
        raise forbidden(CHANNEL_FORBIDDEN)

    def check(s: Session) -> bool:
        fiches: list[str] = []
        for name in names:
            if name.startswith("audit-"):
                fiche_id = api_keys.audit_channel_fiche_id(s, name[len("audit-"):])
            elif name.startswith("fiche-"):
                fiche_id = name[len("fiche-"):]
            else:
                continue
            if fiche_id is None or not fiche_id.isdigit():
                return False
            fiches.append(fiche_id)
        allowed = allowed_fiches(s, principal, fiches)
        return all(f in allowed for f in fiches)

    if not await _db(check):
        raise forbidden(CHANNEL_FORBIDDEN)
    return principal


RUN_FICHE_QUERY = """
query($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { tags { key value } } } }
"""


async def authorize_run(request: Request, run_id: str, client: Any) -> Principal:
    """``GET /api/runs/{run_id}/events``: ``audits.read``; for a non-ALL scope the run's fiche
    partition (tag ``dagster/partition``) must be in scope, else the route's 404 — a run without
    a fiche partition (a day, an automation run) is out of every scope but ALL."""
    principal = await authorize(request, "audits.read")
    if principal.all_scope:
        return principal
    from api.dagster_client import DagsterUnavailable

    try:
        data = await client.query(RUN_FICHE_QUERY, {"runId": run_id})
    except DagsterUnavailable as exc:
        raise ApiError(503, f"Pipeline unavailable: {exc}", "SERVICE_UNAVAILABLE") from None
    run = (data or {}).get("runOrError") or {}
    tags = {t.get("key"): t.get("value") for t in run.get("tags") or []} if run.get("__typename") == "Run" else {}
    partition = tags.get("dagster/partition") or ""
    if not partition.isdigit() or partition not in await _db(lambda s: allowed_fiches(s, principal, [partition])):
        raise not_found(f"Run {run_id} not found")
    return principal
