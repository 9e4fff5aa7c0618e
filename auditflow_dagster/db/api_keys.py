"""API keys (issue 8, spec 04 §7 adapted): create, list, revoke, verify, and the fiche-scope
lookups the API's authorization needs.

A key is ``afk_<prefix8>_<43 urlsafe chars>`` (256 random bits). It is returned once by
:func:`create_key`; the table keeps only its SHA-256 (hex) and the ``afk_<prefix8>`` prefix that
names it in listings. :func:`verify_key` hashes the presented token, finds the row by hash and
compares the stored hash in constant time; a revoked or expired key verifies to ``None``.
``last_used_at`` is written at most once a minute per key (:data:`TOUCH_INTERVAL`), not once per
request.

Permissions are ``<area>.read`` / ``<area>.write`` for the areas of :data:`AREAS`, the verbs
``audits.run`` and ``audits.rerun``, or ``*`` (everything). Scope: ``ALL``; ``GROUP`` — fiches
whose effective groupe (the information section's groupe, else the list's) is one of ``groupes``;
``SELF`` — fiches whose attribution user id equals ``crm_user_id``. An uncached fiche is in no
scope but ALL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import false, func, or_, select, update
from sqlalchemy.orm import Session

from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import ApiKey, Audit, FicheCache, FicheCacheInformation

TOKEN_PREFIX = "afk_"
TOKEN_RE = re.compile(r"^afk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$")
TOUCH_INTERVAL = dt.timedelta(minutes=1)
SCOPES = ("SELF", "GROUP", "ALL")
AREAS = ("fiches", "recordings", "transcriptions", "audit-configs", "audits", "automation", "chat", "realtime",
         "admin")
PERMISSIONS: tuple[str, ...] = ("*", *(f"{a}.{v}" for a in AREAS for v in ("read", "write")), "audits.run",
                                "audits.rerun")
MAX_NAME = 200


class InvalidKeyDefinition(ValueError):
    """An invalid key definition (unknown permission, bad scope…); the message says which."""


@dataclass(frozen=True)
class KeyGrant:
    """What a verified key may do (no secret in it)."""

    id: int
    name: str
    key_prefix: str
    permissions: frozenset[str]
    scope: str
    groupes: tuple[str, ...] = ()
    crm_user_id: str | None = None
    expires_at: dt.datetime | None = None
    touch: bool = field(default=False, compare=False)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """(token, display prefix ``afk_<8 hex>``)."""
    prefix = TOKEN_PREFIX + secrets.token_hex(4)
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


def validate_definition(*, name: str, permissions: Iterable[str], scope: str, groupes: Iterable[str] | None,
                        crm_user_id: str | None) -> tuple[str, list[str], str, list[str], str | None]:
    """Normalised (name, permissions, scope, groupes, crm_user_id); :class:`InvalidKeyDefinition` otherwise."""
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME:
        raise InvalidKeyDefinition(f"name must be a non-empty string of at most {MAX_NAME} characters")
    if not isinstance(permissions, (list, tuple, set, frozenset)) or not all(isinstance(p, str) for p in permissions):
        raise InvalidKeyDefinition("permissions must be a list of strings")
    perms: list[str] = []
    for p in (p.strip() for p in permissions):
        if p not in PERMISSIONS:
            raise InvalidKeyDefinition(f"unknown permission {p[:60]!r} (known: {', '.join(PERMISSIONS)})")
        if p not in perms:
            perms.append(p)
    if not perms:
        raise InvalidKeyDefinition("permissions must name at least one permission")
    scope = scope.strip().upper() if isinstance(scope, str) else scope
    if scope not in SCOPES:
        raise InvalidKeyDefinition("scope must be one of SELF, GROUP, ALL")
    if groupes is None:
        groupes = []
    if not isinstance(groupes, (list, tuple, set, frozenset)) or not all(isinstance(g, str) for g in groupes):
        raise InvalidKeyDefinition("groupes must be a list of strings")
    groups = list(dict.fromkeys(g.strip() for g in groupes if g.strip()))
    if crm_user_id is not None and (not isinstance(crm_user_id, str) or not crm_user_id.strip()):
        raise InvalidKeyDefinition("crm_user_id must be a non-empty string")
    crm_user_id = crm_user_id.strip() if crm_user_id else None
    if "\x00" in name or "\x00" in (crm_user_id or "") or any("\x00" in g for g in groups):
        raise InvalidKeyDefinition("name, groupes and crm_user_id must not contain NUL characters")
    if scope == "GROUP" and not groups:
        raise InvalidKeyDefinition("a GROUP key needs at least one groupe")
    if scope == "SELF" and not crm_user_id:
        raise InvalidKeyDefinition("a SELF key needs crm_user_id")
    return name.strip(), perms, scope, groups, crm_user_id


def key_view(row: ApiKey) -> dict[str, Any]:
    """The listing shape: never the hash, never the token."""
    now = now_utc()
    state = "revoked" if row.revoked_at else "expired" if row.expires_at and row.expires_at <= now else "active"
    return {
        "id": str(row.id), "name": row.name, "keyPrefix": row.key_prefix, "permissions": list(row.permissions),
        "scope": row.scope, "groupes": list(row.groupes), "crmUserId": row.crm_user_id, "createdBy": row.created_by,
        "createdAt": iso(row.created_at), "lastUsedAt": iso(row.last_used_at), "expiresAt": iso(row.expires_at),
        "revokedAt": iso(row.revoked_at), "status": state,
    }


def create_key(session: Session, *, name: str, permissions: Iterable[str], scope: str = "SELF",
               groupes: Iterable[str] | None = None, crm_user_id: str | None = None, created_by: str | None = None,
               expires_at: dt.datetime | None = None) -> tuple[dict[str, Any], str]:
    """(the key's listing view, the plain token — shown once, stored nowhere)."""
    name, perms, scope, groups, crm_user_id = validate_definition(
        name=name, permissions=permissions, scope=scope, groupes=groupes, crm_user_id=crm_user_id)
    if expires_at is not None:
        if expires_at.tzinfo is not None:
            expires_at = expires_at.astimezone(dt.UTC).replace(tzinfo=None)
        if expires_at <= now_utc():
            raise InvalidKeyDefinition("expires_at must be in the future")
    token, prefix = new_token()
    row = ApiKey(name=name, key_prefix=prefix, key_hash=hash_token(token), permissions=perms, scope=scope,
                 groupes=groups, crm_user_id=crm_user_id, created_by=created_by, expires_at=expires_at)
    session.add(row)
    session.flush()
    return key_view(row), token


def list_keys(session: Session, *, include_revoked: bool = True) -> list[dict[str, Any]]:
    q = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        q = q.where(ApiKey.revoked_at.is_(None))
    return [key_view(r) for r in session.scalars(q)]


def revoke_key(session: Session, key_id: int) -> dict[str, Any] | None:
    """Idempotent: a revoked key keeps its first ``revoked_at``. None when there is no such key."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = now_utc()
        session.flush()
    return key_view(row)


def verify_key(session: Session, token: str, now: dt.datetime | None = None) -> KeyGrant | None:
    """The grant of a live key, else None (malformed, unknown, revoked or expired). ``touch`` says
    that ``last_used_at`` is older than :data:`TOUCH_INTERVAL` (see :func:`touch_key`)."""
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        return None
    digest = hash_token(token)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None or not hmac.compare_digest(row.key_hash.encode(), digest.encode()):
        return None
    now = now or now_utc()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    return KeyGrant(id=row.id, name=row.name, key_prefix=row.key_prefix, permissions=frozenset(row.permissions),
                    scope=row.scope, groupes=tuple(row.groupes), crm_user_id=row.crm_user_id,
                    expires_at=row.expires_at,
                    touch=row.last_used_at is None or now - row.last_used_at >= TOUCH_INTERVAL)


def key_is_live(session: Session, key_id: int, now: dt.datetime | None = None) -> bool:
    """Still usable: exists, not revoked, not expired (an open SSE stream re-checks this)."""
    row = session.get(ApiKey, key_id)
    now = now or now_utc()
    return row is not None and row.revoked_at is None and (row.expires_at is None or row.expires_at > now)


def touch_key(session: Session, key_id: int, now: dt.datetime | None = None) -> bool:
    """Set ``last_used_at`` unless it was set less than a minute ago (a concurrent request may
    have done it); True when this call wrote it."""
    now = now or now_utc()
    result = session.execute(
        update(ApiKey).where(ApiKey.id == key_id,
                             or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - TOUCH_INTERVAL))
        .values(last_used_at=now))
    return bool(result.rowcount)


# --------------------------------------------------------------------------------------------- #
# Scope lookups
# --------------------------------------------------------------------------------------------- #


def _effective_groupe():
    return func.coalesce(FicheCacheInformation.groupe, FicheCache.groupe)


def scope_condition(scope: str, groupes: Iterable[str], crm_user_id: str | None) -> Any:
    """SQL condition over FicheCache ⟕ FicheCacheInformation: the fiche is in this scope."""
    if scope == "GROUP":
        groups = list(groupes)
        return _effective_groupe().in_(groups) if groups else false()
    if scope == "SELF":
        return FicheCacheInformation.attribution_user_id == crm_user_id if crm_user_id else false()
    raise ValueError(f"no condition for scope {scope}")


def fiches_in_scope(session: Session, fiche_ids: Iterable[str], scope: str, groupes: Iterable[str],
                    crm_user_id: str | None) -> set[str]:
    """The subset of ``fiche_ids`` that are cached and in the scope (ALL: all of them)."""
    ids = list(dict.fromkeys(str(f) for f in fiche_ids))
    if scope == "ALL":
        return set(ids)
    if not ids:
        return set()
    rows = session.scalars(
        select(FicheCache.fiche_id)
        .outerjoin(FicheCacheInformation, FicheCacheInformation.fiche_cache_id == FicheCache.id)
        .where(FicheCache.fiche_id.in_(ids), scope_condition(scope, groupes, crm_user_id)))
    return set(rows)


def audit_fiche_id(session: Session, audit_id: int) -> str | None:
    """The fiche id of an audit (deleted ones included), None when there is no such audit."""
    return session.scalar(select(FicheCache.fiche_id).join(Audit, Audit.fiche_cache_id == FicheCache.id)
                          .where(Audit.id == audit_id))


def audit_channel_fiche_id(session: Session, key: str) -> str | None:
    """The fiche behind realtime channel ``audit-<key>`` (spec 06 §2.3 step 4): a numeric key is
    the audit's DB id; a tracking id ``audit-<fiche>-<config>-<ms>`` names its fiche; otherwise the
    audit whose stored tracking id equals the key."""
    if key.isdigit():
        return audit_fiche_id(session, int(key)) if int(key) < 2**63 else None
    parts = key.split("-")
    if len(parts) >= 3 and parts[0] == "audit" and parts[1].isdigit():
        return parts[1]
    return session.scalar(select(FicheCache.fiche_id).join(Audit, Audit.fiche_cache_id == FicheCache.id)
                          .where(Audit.tracking_id == key))
