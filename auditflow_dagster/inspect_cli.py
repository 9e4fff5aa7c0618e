"""``auditflow inspect-fiche`` and ``auditflow renormalize``: look inside the fiche cache.

``inspect_fiche`` shows what is stored for one fiche (the ``fiche_cache`` row, each section table
with its row count and size, the ``raw_data`` remainder, recordings) and what
``GET /api/fiches/{id}`` would do with it (the same decision function the API uses).
``renormalize`` rewrites stored fiches from their own rebuilt payload — after a schema change, or
to move sections that older code kept in ``raw_data`` into their tables — in resumable batches
ordered by ``fiche_id``. It never calls the CRM and leaves timestamps, envelope and recordings alone.

Wire-up (cli.py): the click commands :data:`inspect_fiche_cmd` and :data:`renormalize_cmd`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

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


def _print_batch(counts: dict[str, Any]) -> None:
    print(f"renormalize: batch {counts['batches']}: {counts['processed']} fiches, {counts['changed']} rewritten, "
          f"last fiche_id {counts['last_fiche_id']}", flush=True)


def renormalize(batch_size: int = 200, resume_after: str | None = None,
                on_batch: Callable[[dict[str, Any]], None] | None = _print_batch) -> dict[str, Any]:
    """Re-normalize every stored fiche (``fiche_id`` > ``resume_after``), one transaction per batch.

    Calls ``on_batch`` with the running counts after each batch (default: one progress line) and
    prints a final line; returns ``{"processed", "changed", "batches", "last_fiche_id"}`` — pass
    ``last_fiche_id`` as ``resume_after`` to continue after a stop.
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
        if on_batch is not None:
            on_batch({"processed": processed, "changed": changed, "batches": batches, "last_fiche_id": last})
    print(f"renormalize: done: {processed} fiches, {changed} rewritten, last fiche_id {last}", flush=True)
    return {"processed": processed, "changed": changed, "batches": batches, "last_fiche_id": last}


def fiches_after(resume_after: str | None) -> int:
    """How many stored fiches :func:`renormalize` would go through."""
    from sqlalchemy import func, select

    from auditflow_dagster.db.models import FicheCache
    from auditflow_dagster.db.session import session_scope

    query = select(func.count()).select_from(FicheCache)
    if resume_after is not None:
        query = query.where(FicheCache.fiche_id > resume_after)
    with session_scope() as s:
        return int(s.scalar(query) or 0)


def _prepare() -> None:
    from auditflow_dagster.stack import prepare_database

    prepare_database()


@click.command("inspect-fiche")
@click.argument("fiche_id")
@click.option("--payload", is_flag=True, help="also print the payload the API would serve")
@click.option("--no-mail-devis", is_flag=True, help="inspect as a read without include_mail_devis")
def inspect_fiche_cmd(fiche_id: str, payload: bool, no_mail_devis: bool) -> None:
    """Show a cached fiche's sections and the API's answer.

    The fiche_cache row, each section table with its row count and size, the raw_data remainder,
    the recordings, and what GET /api/fiches/FICHE_ID would do with them.
    """
    _prepare()
    click.echo(inspect_fiche(fiche_id, include_mail_devis=not no_mail_devis, show_payload=payload))


@click.command("renormalize")
@click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="fiches per transaction")
@click.option("--resume-after", default=None, metavar="FICHE_ID",
              help="fiche_id to resume after (printed by a previous run)")
def renormalize_cmd(batch_size: int, resume_after: str | None) -> None:
    """Rewrite stored fiches' sections from their payload.

    In resumable batches ordered by fiche_id, one transaction each. Never calls the CRM; timestamps, envelope and recordings are left alone. A progress bar counts
    the fiches; the last line is the JSON result (its last_fiche_id resumes an interrupted run).
    """
    from auditflow_dagster.cli_commands.common import ProgressReport

    _prepare()
    with ProgressReport() as report:
        task = report.add("renormalize", total=fiches_after(resume_after), info="fiches")

        def on_batch(counts: dict[str, Any]) -> None:
            report.update(task, completed=counts["processed"],
                          info=f"fiches ({counts['changed']} rewritten, last fiche_id {counts['last_fiche_id']})")

        result = renormalize(batch_size=batch_size, resume_after=resume_after, on_batch=on_batch)
    click.echo(json.dumps(result))
