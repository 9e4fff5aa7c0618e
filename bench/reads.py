"""Benchmark ``reads`` (issue 9 §1): fiche detail and audit detail over real HTTP at scale.

    python -m bench.reads [--fiches 100000] [--audits 100000] [--samples 2000] \\
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

1. A throw-away database (``bench._db.BenchDatabase``; ``--database-name`` uses and keeps a named
   one, re-using its data when it holds the same counts).
2. ``--fiches`` fully cached fiches, 40 a sales day ending yesterday, bulk-loaded by
   :func:`bench.populate.populate` (the loader of ``bench.fiche_reads``: the write path's own
   normalization, COPY), then ``--audits`` completed audits of the 18-step config, one per fiche,
   by :func:`bench.populate.populate_audits_for_fiches`: 18 step rows, ~5 control points a step,
   0–2 citations a point, ~1 % human reviews, ``result_data`` as the finalizer stores it (config
   snapshot included).
3. Checked, not assumed: a sample of fiches re-written through ``upsert_sales_list`` +
   ``write_full_details`` and a sample of audits re-written through ``create_audit`` →
   ``upsert_step_result`` → ``finalize_running_audit`` (both rolled back) must read identically; the
   bench stops (exit 3) otherwise.
4. The API as production runs it (``uvicorn api.app:create_app --factory``, auth off) and, one
   keep-alive client, ``--samples`` random ``GET /api/fiches/{id}`` and ``GET /api/audits/{id}``
   (after ``--warmup`` reads each): p50/p95/p99/max, bytes, errors, every audit answered with 18
   step results.
5. In process, what an audit detail read costs: ``audit_detail`` in a session (the route's body),
   its JSON encoding, SQL statements per read and their client time, ``EXPLAIN ANALYZE`` of one
   read's statements (server time, sequential scans) and a cProfile split by package.

One JSON line, then a human summary (goal: p50 ≤ 5 ms for both reads).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import random
import sys
import time
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bench._db import BenchDatabase
from bench._util import ApiServer, SqlCounter, pct, summary
from bench.fiche_reads import (
    _encode,
    _explain,
    _get,
    _profile_by_package,
    _refresh_expiry,
)

GOAL_P50_MS = 5.0


def _counts(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return (conn.execute("SELECT count(*) FROM fiche_cache").fetchone()[0],
                conn.execute("SELECT count(*) FROM audits").fetchone()[0])


def populate_all(args: argparse.Namespace, db: BenchDatabase, result: dict[str, Any], notes: list[str]) -> int | None:
    """Fiches then audits; returns the audit config id (None: the database holds something else)."""
    from sqlalchemy import select

    from auditflow_dagster.db.models import AuditConfig
    from auditflow_dagster.db.session import session_scope
    from auditflow_dagster.settings import get_settings
    from bench import populate as pop
    from bench._stack import eighteen_step_config

    settings = get_settings()
    fiches, audits = _counts(db.url)
    if fiches or audits:
        if (fiches, audits) != (args.fiches, args.audits):
            print(f"database {db.name} holds {fiches} fiches and {audits} audits, not {args.fiches} and {args.audits}",
                  file=sys.stderr)
            return None
        refreshed = _refresh_expiry(db.url, settings.cache_expiration_hours)
        notes.append(f"re-used populated database {db.name}" + (f" ({refreshed} expired rows made fresh)" if refreshed else ""))
        result.update(populate_mode="reused")
        with session_scope() as s:
            return s.scalar(select(AuditConfig.id).order_by(AuditConfig.id.desc()).limit(1))
    yesterday = dt.datetime.now(ZoneInfo(settings.business_timezone)).date() - dt.timedelta(days=1)
    plan = pop.day_plan(args.fiches, 40, yesterday)
    print(f"populating {args.fiches:,} fiches over {len(plan):,} days …", file=sys.stderr, flush=True)
    p = pop.populate(db.url, plan, ttl_hours=settings.cache_expiration_hours, workers=args.workers)
    with session_scope() as s:
        config_id = eighteen_step_config(s)
    print(f"populating {args.audits:,} audits …", file=sys.stderr, flush=True)
    a = pop.populate_audits_for_fiches(db.url, config_id, limit=args.audits, workers=args.workers)
    rows = a["rows"]
    result.update(populate_mode="bulk_copy", populate_fiches_s=round(p["total_s"], 1), populate_audits_s=round(a["total_s"], 1),
                  populate_workers=a["workers"], step_rows=rows.get("audit_step_results", 0),
                  control_point_rows=rows.get("audit_step_result_control_points", 0),
                  citation_rows=rows.get("audit_step_result_citations", 0),
                  review_rows=rows.get("audit_step_result_human_reviews", 0))
    return config_id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reads", description=__doc__.split("\n\n")[0])
    ap.add_argument("--fiches", type=int, default=100_000, help="cached fiches (default 100000)")
    ap.add_argument("--audits", type=int, default=100_000, help="completed audits, one per fiche (default 100000)")
    ap.add_argument("--samples", type=int, default=2000, help="measured reads of each kind (default 2000)")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured reads before each series")
    ap.add_argument("--verify-fiches", type=int, default=30, help="fiches checked against the real write path")
    ap.add_argument("--verify-audits", type=int, default=20, help="audits checked against the real write path")
    ap.add_argument("--profile-reads", type=int, default=200, help="in-process audit reads under cProfile (0: skip)")
    ap.add_argument("--workers", type=int, default=None, help="populate processes (default: CPU count)")
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--database-url", default=os.environ.get("AUDITFLOW_BENCH_DATABASE_URL"),
                    help="server to create the bench database on (env AUDITFLOW_BENCH_DATABASE_URL; unset: embedded)")
    ap.add_argument("--database-name", default=None, help="use (and keep) this database; re-use its data if populated")
    ap.add_argument("--keep", action="store_true", help="do not drop the bench database")
    args = ap.parse_args(argv)
    if args.audits > args.fiches:
        ap.error("--audits cannot exceed --fiches (one audit per fiche)")
    rng = random.Random(args.seed)
    result: dict[str, Any] = {"bench": "reads", "cpus": os.cpu_count(), "load_avg_1m_start": round(os.getloadavg()[0], 2)}
    notes: list[str] = []

    with BenchDatabase(args.database_url, name=args.database_name, keep=args.keep) as db:
        from sqlalchemy import func, select

        from auditflow_dagster.db import fiches as fiche_db
        from auditflow_dagster.db.audits import audit_detail
        from auditflow_dagster.db.models import Audit, FicheCache
        from auditflow_dagster.db.session import get_engine, session_scope
        from auditflow_dagster.settings import get_settings
        from bench import populate as pop

        print(f"database {db.name} on {db.server_url.split('@')[-1].split('?')[0]}", file=sys.stderr)
        if populate_all(args, db, result, notes) is None:
            return 2
        with session_scope() as s:
            fiche_ids = list(s.scalars(select(FicheCache.fiche_id).order_by(FicheCache.id)))
            audit_ids = list(s.scalars(select(Audit.id).order_by(Audit.id)))
            db_bytes = s.scalar(select(func.pg_database_size(func.current_database())))
            rd_bytes = s.scalar(select(func.avg(func.pg_column_size(Audit.result_data))).where(Audit.id.in_(audit_ids[:200])))
        result.update(fiches=len(fiche_ids), audits=len(audit_ids), db_mb=round(db_bytes / 2**20),
                      result_data_stored_bytes_avg=round(float(rd_bytes or 0)))

        # ---- the population reads like the write path's ----------------------------------------
        if args.verify_fiches > 0:
            sample = rng.sample(fiche_ids, min(args.verify_fiches, len(fiche_ids)))
            print(f"verifying {len(sample)} fiches against write_full_details …", file=sys.stderr, flush=True)
            v = pop.verify_against_write_path(sample, ttl_hours=get_settings().cache_expiration_hours, mail_devis_share=0.1)
            result.update(verify_fiches_ok=v["ok"], verify_fiches=v["fiches"])
            if not v["ok"]:
                print(json.dumps(result), flush=True)
                print("fiche population differs from the write path:\n  " + "\n  ".join(v["diffs"][:20]), file=sys.stderr)
                return 3
        if args.verify_audits > 0:
            candidates = rng.sample(audit_ids, min(len(audit_ids), args.verify_audits * 6))
            print(f"verifying up to {args.verify_audits} audits against the write path …", file=sys.stderr, flush=True)
            v = pop.verify_audit_details(candidates, limit=args.verify_audits)
            result.update(verify_audits_ok=v["ok"], verify_audits=v["audits"])
            if not v["ok"]:
                print(json.dumps(result), flush=True)
                print("audit population differs from the write path:\n  " + "\n  ".join(v["diffs"][:20]), file=sys.stderr)
                return 3

        fiche_sample = [rng.choice(fiche_ids) for _ in range(args.samples)]
        audit_sample = [rng.choice(audit_ids) for _ in range(args.samples)]
        warm_f = [rng.choice(fiche_ids) for _ in range(args.warmup)]
        warm_a = [rng.choice(audit_ids) for _ in range(args.warmup)]

        # ---- HTTP ---------------------------------------------------------------------------------
        print("measuring over HTTP …", file=sys.stderr, flush=True)
        with ApiServer() as api, httpx.Client(base_url=api.url, timeout=120.0) as client:
            for fid in warm_f:
                _get(client, f"/api/fiches/{fid}")
            lat_f, size_f, err_f = [], [], Counter()
            for fid in fiche_sample:
                ms, r = _get(client, f"/api/fiches/{fid}")
                lat_f.append(ms)
                size_f.append(len(r.content))
                if r.status_code != 200:
                    err_f[r.status_code] += 1
            for aid in warm_a:
                _get(client, f"/api/audits/{aid}")
            lat_a, size_a, err_a, short = [], [], Counter(), 0
            for aid in audit_sample:
                ms, r = _get(client, f"/api/audits/{aid}")
                lat_a.append(ms)
                size_a.append(len(r.content))
                if r.status_code != 200:
                    err_a[r.status_code] += 1
                elif len(r.json()["data"]["stepResults"]) != 18:
                    short += 1
            result.update(summary(lat_f, "fiche_http"))
            result.update(summary(lat_a, "audit_http"))
            result.update(fiche_http_bytes_avg=round(sum(size_f) / len(size_f)), fiche_http_errors=sum(err_f.values()),
                          audit_http_bytes_avg=round(sum(size_a) / len(size_a)), audit_http_errors=sum(err_a.values()),
                          audit_http_without_18_steps=short)
            if err_f or err_a:
                notes.append(f"HTTP errors: fiches {dict(err_f)}, audits {dict(err_a)}; API log tail:\n{api.log_tail(1500)}")

        # ---- in process: the audit detail route's body ------------------------------------------
        print("measuring in process …", file=sys.stderr, flush=True)
        engine = get_engine()

        def read_audit(aid: int) -> Any:
            with session_scope() as s:
                return audit_detail(s, aid)

        def read_fiche(fid: str) -> Any:
            with session_scope() as s:
                return fiche_db.cached_details(s, fid)

        for aid in warm_a:
            read_audit(aid)
        lat_in, lat_enc, sql_n, sql_ms = [], [], [], []
        with SqlCounter(engine) as sql:
            for aid in audit_sample:
                sql.reset()
                t0 = time.perf_counter()
                data = read_audit(aid)
                t1 = time.perf_counter()
                _encode({"success": True, "data": data})
                t2 = time.perf_counter()
                lat_in.append((t1 - t0) * 1000)
                lat_enc.append((t2 - t1) * 1000)
                sql_n.append(sql.count)
                sql_ms.append(sql.seconds * 1000)
        result.update({k: v for k, v in summary(lat_in, "audit_inproc").items() if "mean" not in k})
        result.update(audit_json_encode_p50_ms=round(pct(lat_enc, 50), 3),
                      audit_sql_per_read=round(sum(sql_n) / len(sql_n), 2), audit_sql_per_read_max=max(sql_n),
                      audit_sql_client_p50_ms=round(pct(sql_ms, 50), 3))
        with SqlCounter(engine) as sql:
            for fid in fiche_sample[:200]:
                read_fiche(fid)
        result["fiche_sql_per_read"] = round(sql.count / min(200, len(fiche_sample)), 2)
        with SqlCounter(engine, keep=True) as sql:
            read_audit(audit_sample[0])
        ex = _explain(db.url, sql.statements)
        result.update(audit_server_exec_ms=round(ex["exec_ms"], 3), audit_server_plan_ms=round(ex["plan_ms"], 3),
                      audit_seq_scans=ex["seq_scans"])
        if args.profile_reads > 0:
            prof = cProfile.Profile()
            prof.enable()
            for aid in audit_sample[: args.profile_reads]:
                _encode({"success": True, "data": read_audit(aid)})
            prof.disable()
            result["audit_profile_share_pct"] = {k: round(v, 1) for k, v in _profile_by_package(prof) if v >= 1}
        result["samples"] = args.samples
        result["goal_p50_ms"] = GOAL_P50_MS
        result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        result["database_dropped"] = not db.keep

    print(json.dumps(result, separators=(",", ":")), flush=True)
    _human(result, notes)
    return 0


def _human(r: dict[str, Any], notes: list[str]) -> None:
    def goal(v: float) -> str:
        return "MET" if v <= GOAL_P50_MS else "MISSED"

    pop_line = (f"  populate: fiches {r['populate_fiches_s']} s, audits {r['populate_audits_s']} s ({r['step_rows']:,} step rows, "
                f"{r['control_point_rows']:,} control points, {r['citation_rows']:,} citations, {r['review_rows']:,} reviews; "
                f"{r['populate_workers']} workers)" if r.get("populate_mode") == "bulk_copy" else "  populate: re-used database")
    lines = [
        "",
        f"reads — {r['fiches']:,} cached fiches and {r['audits']:,} audits (18 steps each), database {r['db_mb']:,} MB; "
        f"{r['cpus']} CPUs, load average {r['load_avg_1m_start']} → {r['load_avg_1m_end']}",
        pop_line,
        f"  verified against the write path: fiches {r.get('verify_fiches_ok')} ({r.get('verify_fiches')}), "
        f"audits {r.get('verify_audits_ok')} ({r.get('verify_audits')})",
        f"  GET /api/fiches/{{id}}  ({r['samples']} reads, {r['fiche_http_bytes_avg']:,} B avg): p50 {r['fiche_http_p50_ms']:.2f}  "
        f"p95 {r['fiche_http_p95_ms']:.2f}  p99 {r['fiche_http_p99_ms']:.2f}  max {r['fiche_http_max_ms']:.2f} ms "
        f"→ goal p50 ≤ {GOAL_P50_MS} ms: {goal(r['fiche_http_p50_ms'])} ({r['fiche_sql_per_read']} statements/read)",
        f"  GET /api/audits/{{id}}  ({r['samples']} reads, {r['audit_http_bytes_avg']:,} B avg): p50 {r['audit_http_p50_ms']:.2f}  "
        f"p95 {r['audit_http_p95_ms']:.2f}  p99 {r['audit_http_p99_ms']:.2f}  max {r['audit_http_max_ms']:.2f} ms "
        f"→ goal p50 ≤ {GOAL_P50_MS} ms: {goal(r['audit_http_p50_ms'])}; answers without 18 steps: "
        f"{r['audit_http_without_18_steps']}",
        f"    in process audit_detail: p50 {r['audit_inproc_p50_ms']:.2f}  p99 {r['audit_inproc_p99_ms']:.2f} ms, JSON encode "
        f"p50 {r['audit_json_encode_p50_ms']:.2f} ms; SQL {r['audit_sql_per_read']} statements/read (max "
        f"{r['audit_sql_per_read_max']}), client time p50 {r['audit_sql_client_p50_ms']:.2f} ms, server execution "
        f"{r['audit_server_exec_ms']:.2f} ms + planning {r['audit_server_plan_ms']:.2f} ms, sequential scans: "
        f"{r['audit_seq_scans'] or 'none'}; stored result_data {r['result_data_stored_bytes_avg']:,} B avg",
    ]
    if r.get("audit_profile_share_pct"):
        lines.append("    cProfile share of own time: " + "; ".join(f"{k} {v:.0f}%" for k, v in r["audit_profile_share_pct"].items()))
    lines.append(f"  database dropped: {r['database_dropped']}")
    lines += [f"  note: {n}" for n in notes]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
