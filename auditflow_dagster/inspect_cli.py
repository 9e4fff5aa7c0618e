"""``auditflow inspect-fiche`` and ``auditflow renormalize``: look inside the fiche cache.

``inspect_fiche`` shows what is stored for one fiche (the ``fiche_cache`` row, each section table
with its row count and size, the ``raw_data`` remainder, recordings) and what
``GET /api/fiches/{id}`` would do with it (the same decision function the API uses).
``renormalize`` rewrites stored fiches from their own rebuilt payload — after a schema change, or
to move sections that older code kept in ``raw_data`` into their tables — in resumable batches
ordered by ``fiche_id``. It never calls the CRM and leaves timestamps, envelope and recordings alone.

Wire-up (cli.py): ``inspect_cli.register(sub)``; each subcommand sets ``fn`` like the others.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

_API_ANSWER = {
    "missing": "no row: launches a fetch_fiche run (404 if the CRM has no such fiche, 502 if it fails)",
    "not_found": "404 NOT_FOUND (not-found marker within its TTL; no CRM call unless refresh=true)",
    "not_ready": "refetch through a fetch_fiche run; no fallback (404/502 if it fails)",
    "expired": "refetch through a fetch_fiche run; serves the cached payload below if it fails",
    "needs_mail_devis": "refetch with include_mail_devis=true; serves the cached payload below if it fails",
    "fresh": "200 from the cache (payload below)",
}


def _size(obj: Any) -> int:
    return len(json.dumps(obj, ensure_ascii=False, default=str).encode())


def inspect_fiche(fiche_id: str, *, include_mail_devis: bool = True, show_payload: bool = False) -> str:
    """A text report of the stored sections of ``fiche_id`` and of the API's answer."""
    from sqlalchemy import func, select

    from auditflow_dagster.db import fiches as fiche_db
    from auditflow_dagster.db.clock import iso, now_utc
    from auditflow_dagster.db.models import Recording
    from auditflow_dagster.db.session import session_scope

    fiche_id = str(fiche_id).strip()
    query = "?include_mail_devis=true" if include_mail_devis else ""
    with session_scope() as s:
        row = fiche_db.get_row(s, fiche_id)
        state, data = fiche_db.cached_details(s, fiche_id, include_mail_devis=include_mail_devis)
        lines = [f"fiche {fiche_id}"]
        if row is None:
            lines.append("  not cached")
        else:
            kind = (
                "not-found marker" if fiche_db.is_not_found_marker(row)
                else "sales-list-only" if fiche_db.is_sales_list_only(row)
                else "full details" if fiche_db.details_ready(s, row)
                else "incomplete"
            )
            expired = row.expires_at <= now_utc()
            lines += [
                f"  fiche_cache.id {row.id}  kind: {kind}  sales_date: {row.sales_date}",
                f"  details_success: {row.details_success}  details_message: {row.details_message!r}  cle: {row.cle!r}",
                f"  fetched_at {iso(row.fetched_at)}  expires_at {iso(row.expires_at)}"
                f" ({'expired' if expired else 'fresh'})  last_revalidated_at {iso(row.last_revalidated_at)}",
                f"  groupe: {row.groupe!r}  agence: {row.agence_nom!r}"
                f"  prospect: {row.prospect_prenom!r} {row.prospect_nom!r}",
                f"  raw_data: {len(row.raw_data or {})} keys, {_size(row.raw_data or {})} bytes"
                + (f" ({', '.join(sorted(row.raw_data))})" if row.raw_data else ""),
            ]
            n_rec, blank = s.execute(
                select(func.count(), func.count().filter(Recording.recording_url == ""))
                .where(Recording.fiche_cache_id == row.id)
            ).one()
            lines.append(f"  recordings: {n_rec} rows ({blank} without URL), recordings_count {row.recordings_count}")
            stats = fiche_db.section_stats(s, row.id)
            width = max(len(t) for t in stats)
            lines.append(f"  {'section table':<{width}}  {'rows':>5}  {'bytes':>7}")
            for table, (n, size) in stats.items():
                lines.append(f"  {table:<{width}}  {n:>5}  {size:>7}")
            lines.append(f"  {'total':<{width}}  {sum(n for n, _ in stats.values()):>5}  {sum(b for _, b in stats.values()):>7}")
        lines.append(f"API GET /api/fiches/{fiche_id}{query}: {state} → {_API_ANSWER[state]}")
        if data is not None:
            summary = []
            for k, v in data.items():
                summary.append(f"{k}[{len(v)}]" if isinstance(v, (list, dict)) else f"{k}={v!r}")
            lines.append("  payload: " + ", ".join(summary))
            lines.append(f"  payload size: {_size(data)} bytes")
            if show_payload:
                lines.append(json.dumps(data, ensure_ascii=False, indent=2))
    return "\n".join(lines)


def renormalize(batch_size: int = 200, resume_after: str | None = None) -> dict[str, Any]:
    """Re-normalize every stored fiche (``fiche_id`` > ``resume_after``), one transaction per batch.

    Prints one progress line per batch; returns ``{"processed", "changed", "batches",
    "last_fiche_id"}`` — pass ``last_fiche_id`` as ``resume_after`` to continue after a stop.
    """
    from sqlalchemy import select, true

    from auditflow_dagster.db import fiches as fiche_db
    from auditflow_dagster.db.models import FicheCache
    from auditflow_dagster.db.session import session_scope

    batch_size = max(1, int(batch_size))
    last = resume_after
    processed = changed = batches = 0
    while True:
        with session_scope() as s:
            rows = list(
                s.scalars(
                    select(FicheCache)
                    .where(FicheCache.fiche_id > last if last is not None else true())
                    .order_by(FicheCache.fiche_id)
                    .limit(batch_size)
                    .with_for_update()
                )
            )
            if not rows:
                break
            for row in rows:
                changed += int(fiche_db.renormalize_row(s, row))
            processed += len(rows)
            last = rows[-1].fiche_id
        batches += 1
        print(f"renormalize: batch {batches}: {processed} fiches, {changed} rewritten, last fiche_id {last}", flush=True)
    print(f"renormalize: done: {processed} fiches, {changed} rewritten, last fiche_id {last}", flush=True)
    return {"processed": processed, "changed": changed, "batches": batches, "last_fiche_id": last}


def _prepare() -> None:
    from auditflow_dagster.stack import prepare_database

    prepare_database()


def cmd_inspect_fiche(args: argparse.Namespace) -> int:
    _prepare()
    print(inspect_fiche(args.fiche_id, include_mail_devis=not args.no_mail_devis, show_payload=args.payload))
    return 0


def cmd_renormalize(args: argparse.Namespace) -> int:
    _prepare()
    result = renormalize(batch_size=args.batch_size, resume_after=args.resume_after)
    print(json.dumps(result))
    return 0


def register(subparsers: Any) -> None:
    """Add ``inspect-fiche`` and ``renormalize`` to an argparse subparsers object (``fn`` default)."""
    p = subparsers.add_parser("inspect-fiche", help="show a cached fiche's stored sections and the API's answer")
    p.add_argument("fiche_id")
    p.add_argument("--payload", action="store_true", help="also print the payload the API would serve")
    p.add_argument("--no-mail-devis", action="store_true", help="inspect as a read without include_mail_devis")
    p.set_defaults(fn=cmd_inspect_fiche)
    r = subparsers.add_parser("renormalize", help="rewrite stored fiches' sections from their rebuilt payload")
    r.add_argument("--batch-size", type=int, default=200)
    r.add_argument("--resume-after", default=None, help="fiche_id to resume after (printed by a previous run)")
    r.set_defaults(fn=cmd_renormalize)
