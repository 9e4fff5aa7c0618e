"""What the partition lifecycle reads from the application database (DESIGN §3.11). Read-only:
the lifecycle retires Dagster partitions and prunes Dagster runs, never our rows."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from auditflow_dagster.core.lifecycle import (
    FINAL_AUDIT_STATUSES,
    FicheActivity,
    chunked,
)
from auditflow_dagster.db.models import Audit, FicheCache


def fiche_activity(session: Session, fiche_ids: Sequence[str], *, chunk_size: int = 10_000) -> list[FicheActivity]:
    """One :class:`FicheActivity` per cached fiche among ``fiche_ids`` (ids without a row are absent).

    ``last_activity`` is the latest of the row's fetch/revalidation and its audits' creation,
    update and completion (``GREATEST`` ignores NULLs); ``has_open_audit`` is true when any audit
    of the fiche — soft-deleted ones included, their run may still be going — is not final.
    The ids are queried in bounded chunks.
    """
    open_audit = func.coalesce(func.bool_or(Audit.status.not_in(sorted(FINAL_AUDIT_STATUSES))), False)
    last_activity = func.greatest(
        FicheCache.fetched_at,
        FicheCache.last_revalidated_at,
        func.max(Audit.created_at),
        func.max(Audit.updated_at),
        func.max(Audit.completed_at),
    )
    out: list[FicheActivity] = []
    for chunk in chunked(list(dict.fromkeys(fiche_ids)), chunk_size):
        rows = session.execute(
            select(FicheCache.fiche_id, FicheCache.sales_date, last_activity, open_audit)
            .select_from(FicheCache)
            .outerjoin(Audit, Audit.fiche_cache_id == FicheCache.id)
            .where(FicheCache.fiche_id.in_(chunk))
            .group_by(FicheCache.id)
        ).all()
        out.extend(
            FicheActivity(fiche_id=fid, sales_date=day, last_activity=last, has_open_audit=bool(is_open))
            for fid, day, last, is_open in rows
        )
    return out
