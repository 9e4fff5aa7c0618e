"""Benchmark: fiche detail reads and the day / date-range status answers from a large cache (issue 3).

    .venv/bin/python -m bench.fiche_reads [--fiches 100000] [--samples 2000]
    AUDITFLOW_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench.fiche_reads

What it does
------------
1. Creates a fresh database ``af_bench_<random>`` on the server of ``--database-url`` /
   ``AUDITFLOW_BENCH_DATABASE_URL`` (else an embedded pgserver in a temporary directory), migrates
   it, and drops it at the end (``--keep`` keeps it; ``--database-name`` uses/keeps a named one and
   re-uses its data when it is already populated).
2. Populates ``--fiches`` cached fiches with FULL details, 40 a day ending yesterday (so 100,000
   fiches span 2,500 days), plus the per-day ``fiche_sales_days`` markers. Row-by-row
   ``write_full_details`` was measured at ~22 ms/fiche (≈37 min for 100k) on the bench machine, so
   the rows are bulk-loaded by :mod:`bench.populate` (same normalization functions, COPY, id order
   and index shapes of the write path), then a sample is checked column by column against the real
   write path (rolled back). See that module's docstring.
3. Starts the real API (``uvicorn api.app:create_app --factory``, the command of ``stack.py``) on a
   free port with Dagster pointing at a closed port, so a read that is not served from the cache
   would fail fast instead of blending into the timings (every read is also checked to be
   ``fresh`` in-process).
4. Measures, sequentially with one keep-alive ``httpx.Client``:
   * ``GET /api/fiches/{id}`` (the default read, no query) on ``--samples`` random cached fiches;
     the same with ``include_mail_devis=true`` on fiches that have it stored;
   * the same detail read in-process (``session_scope`` + ``fiche_db.cached_details``, the body of
     the route), its JSON encoding, and its SQL (statements per read, client-side execute time,
     server execution time and plan nodes from ``EXPLAIN ANALYZE`` of every statement of one read),
     plus a cProfile breakdown by package, a per-phase split, a replay of the same statements on a
     raw psycopg connection, and a 3-statement prototype of the fix (:mod:`bench._prototype_read`,
     output checked identical);
   * ``GET /api/fiches/status/by-date-range?startDate&endDate`` over the last 31 fully cached days
     (``--range-repeats`` times), and ``GET /api/fiches/status/by-date?date`` for single days.
5. Prints one JSON line (``{"bench": "fiche_reads", ...}``) then a human summary.

Benchmarks are not tests: nothing here asserts a threshold (the goal noted in the summary is
detail p50 ≤ 5 ms). A population that differs from the write path aborts the run (exit 3);
non-fresh reads, HTTP errors or a range not answered from cache are reported as notes.
The machine's load average is recorded at start and end: timings on a shared 2-core box are noisy.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import json
import os
import pstats
import random
import sys
import time
from collections import Counter, defaultdict
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bench._db import BenchDatabase
from bench._util import ApiServer, SqlCounter, pct, summary

DETAIL_GOAL_P50_MS = 5.0


def _encode(content: Any) -> bytes:
    """What ``starlette.responses.JSONResponse.render`` does."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def _explain(url: str, statements: list[tuple[str, Any]]) -> dict[str, Any]:
    """EXPLAIN ANALYZE every statement of one read: server planning/execution time, plan nodes,
    sequential scans. (The app's connections auto-prepare repeated statements, so in steady state
    they mostly skip planning; execution is what the server spends per read.)"""
    import psycopg

    exec_ms = plan_ms = 0.0
    nodes: Counter[str] = Counter()
    seq_scans: list[str] = []
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for stmt, params in statements:
            plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + stmt, params).fetchone()[0][0]
            exec_ms += plan["Execution Time"]
            plan_ms += plan.get("Planning Time", 0.0)

            def walk(n: dict[str, Any]) -> None:
                nodes[n["Node Type"]] += 1
                if n["Node Type"] == "Seq Scan":
                    seq_scans.append(n.get("Relation Name", "?"))
                for c in n.get("Plans", []):
                    walk(c)

            walk(plan["Plan"])
        conn.rollback()
    return {"exec_ms": exec_ms, "plan_ms": plan_ms, "nodes": dict(nodes), "seq_scans": sorted(set(seq_scans))}


def _replay(url: str, statements: list[tuple[str, Any]], repeats: int = 300) -> dict[str, float]:
    """The exact statements of one read replayed on a raw psycopg connection (no SQLAlchemy, no
    session), one round trip each, then all in one pipeline (one network flush): separates driver
    round trips from SQLAlchemy/Python time."""
    import psycopg

    seq, piped = [], []
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        for i in range(repeats + 20):
            t0 = time.perf_counter()
            for stmt, params in statements:
                conn.execute(stmt, params).fetchall()
            t1 = time.perf_counter()
            with conn.pipeline():
                curs = [conn.execute(stmt, params) for stmt, params in statements]
            for c in curs:
                c.fetchall()
            t2 = time.perf_counter()
            if i >= 20:
                seq.append((t1 - t0) * 1000)
                piped.append((t2 - t1) * 1000)
        rt = []
        for i in range(repeats + 20):
            t0 = time.perf_counter()
            conn.execute("SELECT 1").fetchall()
            if i >= 20:
                rt.append((time.perf_counter() - t0) * 1000)
    return {"raw_seq_p50_ms": pct(seq, 50), "raw_pipeline_p50_ms": pct(piped, 50), "roundtrip_p50_ms": pct(rt, 50)}


def _profile_by_package(prof: cProfile.Profile) -> list[tuple[str, float]]:
    """Share (%) of own time (tottime) per package. cProfile inflates call-heavy Python code, so
    read these as shares, not as absolute costs."""
    st = pstats.Stats(prof)
    buckets: dict[str, float] = defaultdict(float)
    for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        f = file.replace("\\", "/")
        if "/psycopg/" in f or "psycopg_c" in f or "psycopg_binary" in f:
            key = "psycopg (driver incl. waiting on the server)"
        elif "/sqlalchemy/" in f:
            key = "sqlalchemy (ORM/Core: compile cache, rows, session)"
        elif "/auditflow_dagster/core/" in f:
            key = "auditflow core (pure rules, rebuild)"
        elif "/auditflow_dagster/" in f:
            key = "auditflow db layer (db/*.py)"
        elif file == "~":
            key = f"builtins ({func})" if func in ("<method 'acquire' of '_thread.lock' objects>",) else "builtins (C calls)"
        else:
            key = "other python (stdlib, json, datetime, ...)"
        buckets[key] += tt
    total = sum(buckets.values()) or 1.0
    return sorted(((k, 100 * v / total) for k, v in buckets.items()), key=lambda kv: -kv[1])


def _get(client: httpx.Client, path: str, params: dict[str, str] | None = None) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    resp = client.get(path, params=params)
    _ = resp.content
    return (time.perf_counter() - t0) * 1000, resp


def _plan_from_db() -> list[tuple[dt.date, int]]:
    from sqlalchemy import func, select

    from auditflow_dagster.db.models import FicheCache
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        rows = s.execute(select(FicheCache.sales_date, func.count()).group_by(FicheCache.sales_date)
                         .order_by(FicheCache.sales_date)).all()
    return [(dt.date.fromisoformat(d), n) for d, n in rows]


def _refresh_expiry(url: str, ttl_hours: int) -> int:
    """A re-used database may hold expired rows (TTL): make them fresh so reads stay cache reads."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        n = conn.execute("UPDATE fiche_cache SET expires_at = now() AT TIME ZONE 'UTC' + make_interval(hours => %s) "
                         "WHERE expires_at <= now() AT TIME ZONE 'UTC' + interval '2 hours'", (ttl_hours,)).rowcount
        if n:
            conn.execute("VACUUM (ANALYZE) fiche_cache")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fiche_reads", description=__doc__.split("\n\n")[0])
    ap.add_argument("--fiches", type=int, default=100_000, help="cached fiches to populate (default 100000)")
    ap.add_argument("--samples", type=int, default=2000, help="detail reads measured (default 2000)")
    ap.add_argument("--per-day", type=int, default=40, help="fiches per sales day (generator default 40)")
    ap.add_argument("--range-days", type=int, default=31, help="days of the by-date-range request (default 31)")
    ap.add_argument("--range-repeats", type=int, default=20)
    ap.add_argument("--by-date-repeats", type=int, default=50)
    ap.add_argument("--md-samples", type=int, default=300, help="detail reads with include_mail_devis=true")
    ap.add_argument("--mail-devis-share", type=float, default=0.1, help="share of fiches stored with a mail devis")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured reads before each series")
    ap.add_argument("--profile-reads", type=int, default=300, help="in-process reads under cProfile (0: skip)")
    ap.add_argument("--verify-sample", type=int, default=60, help="fiches checked against the real write path")
    ap.add_argument("--workers", type=int, default=None, help="populate processes (default: CPU count)")
    ap.add_argument("--seed", type=int, default=20240603)
    ap.add_argument("--database-url", default=os.environ.get("AUDITFLOW_BENCH_DATABASE_URL"),
                    help="server to create the bench database on (env AUDITFLOW_BENCH_DATABASE_URL; unset: embedded)")
    ap.add_argument("--database-name", default=None, help="use (and keep) this database; re-use its data if populated")
    ap.add_argument("--keep", action="store_true", help="do not drop the bench database")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    result: dict[str, Any] = {"bench": "fiche_reads", "cpus": os.cpu_count(), "load_avg_1m_start": round(os.getloadavg()[0], 2)}
    notes: list[str] = []

    with BenchDatabase(args.database_url, name=args.database_name, keep=args.keep) as db:
        from sqlalchemy import func, select

        from auditflow_dagster.db import fiches as fiche_db
        from auditflow_dagster.db import progressive
        from auditflow_dagster.db.models import FicheCache
        from auditflow_dagster.db.session import get_engine, session_scope
        from auditflow_dagster.settings import get_settings
        from bench import populate as pop

        settings = get_settings()
        ttl = settings.cache_expiration_hours
        with session_scope() as s:
            existing = s.scalar(select(func.count()).select_from(FicheCache)) or 0
        print(f"database {db.name} on {db.server_url.split('@')[-1].split('?')[0]}"
              f"{' (embedded)' if args.database_url is None else ''}", file=sys.stderr)
        if existing:
            if existing != args.fiches:
                print(f"database {db.name} holds {existing} fiches, not {args.fiches}", file=sys.stderr)
                return 2
            plan = _plan_from_db()
            refreshed = _refresh_expiry(db.url, ttl)
            result.update(populate_mode="reused", populate_s=0.0)
            notes.append(f"re-used populated database {db.name}" + (f" ({refreshed} expired rows made fresh)" if refreshed else ""))
        else:
            yesterday = dt.datetime.now(ZoneInfo(settings.business_timezone)).date() - dt.timedelta(days=1)
            plan = pop.day_plan(args.fiches, args.per_day, yesterday)
            print(f"populating {args.fiches:,} fiches over {len(plan):,} days …", file=sys.stderr, flush=True)
            p = pop.populate(db.url, plan, ttl_hours=ttl, mail_devis_share=args.mail_devis_share, workers=args.workers)
            result.update(populate_mode="bulk_copy", populate_s=round(p["total_s"], 1),
                          populate_load_s=round(p["load_s"], 1), populate_vacuum_analyze_s=round(p["vacuum_analyze_s"], 1),
                          populate_workers=p["workers"], section_rows=sum(v for k, v in p["rows"].items() if k != "fiche_cache"),
                          recordings_rows=p["rows"].get("recordings", 0))
        with session_scope() as s:
            all_ids = list(s.scalars(select(FicheCache.fiche_id).order_by(FicheCache.id)))
            db_bytes = s.scalar(select(func.pg_database_size(func.current_database())))
        result.update(fiches=len(all_ids), days=len(plan), per_day=args.per_day, db_mb=round(db_bytes / 2**20))

        # ---- population check against the real write path -------------------------------------
        md_ids = [f for f in all_ids if pop.has_mail_devis(f, args.mail_devis_share)]
        if args.verify_sample > 0:
            sample = rng.sample(all_ids, min(args.verify_sample, len(all_ids)))
            sample += [f for f in rng.sample(md_ids, min(10, len(md_ids))) if f not in sample]
            print(f"verifying {len(sample)} fiches against write_full_details …", file=sys.stderr, flush=True)
            v = pop.verify_against_write_path(sample, ttl_hours=ttl, mail_devis_share=args.mail_devis_share)
            result.update(verify_ok=v["ok"], verify_fiches=v["fiches"], verify_rows=v["rows_compared"])
            if not v["ok"]:
                print(json.dumps(result), flush=True)
                print("population differs from the write path:\n  " + "\n  ".join(v["diffs"][:20]), file=sys.stderr)
                return 3

        full_days = [d.isoformat() for d, n in plan if n == args.per_day]
        range_days = full_days[-args.range_days:]
        detail_ids = [rng.choice(all_ids) for _ in range(args.samples)]
        md_sample = [rng.choice(md_ids) for _ in range(args.md_samples)] if md_ids else []
        warm_ids = [rng.choice(all_ids) for _ in range(args.warmup)]

        # ---- HTTP ------------------------------------------------------------------------------
        print("measuring over HTTP …", file=sys.stderr, flush=True)
        with ApiServer() as api, httpx.Client(base_url=api.url, timeout=120.0) as client:
            for fid in warm_ids:
                _get(client, f"/api/fiches/{fid}")
            lat, sizes, errors = [], [], Counter()
            for fid in detail_ids:
                ms, r = _get(client, f"/api/fiches/{fid}")
                lat.append(ms)
                sizes.append(len(r.content))
                if r.status_code != 200:
                    errors[r.status_code] += 1
            result.update(summary(lat, "detail_http"))
            result.update(detail_http_bytes_avg=round(sum(sizes) / len(sizes)), detail_http_errors=sum(errors.values()))
            if md_sample:
                lat_md, errors_md = [], 0
                for fid in md_sample:
                    ms, r = _get(client, f"/api/fiches/{fid}", {"include_mail_devis": "true"})
                    lat_md.append(ms)
                    errors_md += r.status_code != 200 or "mail_devis" not in r.json()
                result.update({k: v for k, v in summary(lat_md, "detail_md_http").items() if "mean" not in k})
                result["detail_md_http_errors"] = errors_md

            # by-date-range over the last N fully cached days
            params = {"startDate": range_days[0], "endDate": range_days[-1]}
            _get(client, "/api/fiches/status/by-date-range", params)  # warm-up
            lat_r, body = [], {}
            for _ in range(args.range_repeats):
                ms, r = _get(client, "/api/fiches/status/by-date-range", params)
                lat_r.append(ms)
                if r.status_code != 200:
                    errors["range"] += 1
                body = r.json()
            meta = body.get("meta", {})
            if not meta.get("complete") or meta.get("backgroundJobId"):
                notes.append(f"by-date-range was NOT answered purely from cache: meta={meta}")
            result.update(range_days=len(range_days), range_start=range_days[0], range_end=range_days[-1],
                          range_fiches=body.get("total"), range_bytes=len(r.content),
                          range_complete=bool(meta.get("complete")) and not meta.get("backgroundJobId"))
            result.update({k: v for k, v in summary(lat_r, "range_http").items() if "p95" not in k})

            # by-date: single days
            lat_d, fiches_d, bytes_d = [], [], []
            _get(client, "/api/fiches/status/by-date", {"date": full_days[-1]})
            for _ in range(args.by_date_repeats):
                ms, r = _get(client, "/api/fiches/status/by-date", {"date": rng.choice(full_days)})
                lat_d.append(ms)
                if r.status_code != 200:
                    errors["by_date"] += 1
                fiches_d.append(r.json()["data"]["total"])
                bytes_d.append(len(r.content))
            result.update({k: v for k, v in summary(lat_d, "by_date_http").items() if "p95" not in k})
            result.update(by_date_fiches=round(sum(fiches_d) / len(fiches_d), 1), by_date_bytes=round(sum(bytes_d) / len(bytes_d)))
            if errors:
                notes.append(f"HTTP errors: {dict(errors)}; API log tail:\n{api.log_tail(1500)}")

        # ---- in-process: the route body without HTTP/ASGI/thread hop ---------------------------
        print("measuring in-process …", file=sys.stderr, flush=True)
        engine = get_engine()

        def read(fid: str, md: bool = False) -> tuple[str, Any]:
            with session_scope() as s:
                return fiche_db.cached_details(s, fid, include_mail_devis=md)

        for fid in warm_ids:
            read(fid)
        lat_in, lat_enc, states = [], [], Counter()
        with SqlCounter(engine) as sql:
            sql_counts, sql_ms = [], []
            for fid in detail_ids:
                sql.reset()
                t0 = time.perf_counter()
                state, data = read(fid)
                t1 = time.perf_counter()
                _encode(data)
                t2 = time.perf_counter()
                lat_in.append((t1 - t0) * 1000)
                lat_enc.append((t2 - t1) * 1000)
                sql_counts.append(sql.count)
                sql_ms.append(sql.seconds * 1000)
                states[state] += 1
        result.update({k: v for k, v in summary(lat_in, "detail_inproc").items() if "mean" not in k})
        result.update(detail_json_encode_p50_ms=round(pct(lat_enc, 50), 3),
                      detail_sql_per_read=round(sum(sql_counts) / len(sql_counts), 2),
                      detail_sql_per_read_max=max(sql_counts),
                      detail_sql_client_p50_ms=round(pct(sql_ms, 50), 3))
        if states["fresh"] != len(detail_ids):
            notes.append(f"NOT all sampled reads were fresh cache hits: {dict(states)}")
        result["detail_http_minus_inproc_p50_ms"] = round(result["detail_http_p50_ms"] - result["detail_inproc_p50_ms"], 3)

        # prototype of the suggested fix (bench/_prototype_read.py): same output, 3 statements
        from bench._prototype_read import cached_details_3

        def read3(fid: str, md: bool = False) -> tuple[str, Any]:
            with session_scope() as s:
                return cached_details_3(s, fid, include_mail_devis=md)

        mismatches = 0
        for fid, md in [(f, False) for f in detail_ids] + [(f, True) for f in md_sample[:100]]:
            a, b = read(fid, md), read3(fid, md)
            mismatches += a[0] != b[0] or _encode(a[1]) != _encode(b[1])
        for fid in warm_ids:
            read3(fid)
        lat3 = []
        with SqlCounter(engine) as sql3:
            for fid in detail_ids:
                sql3.reset()
                t0 = time.perf_counter()
                read3(fid)
                lat3.append((time.perf_counter() - t0) * 1000)
        result.update(proto3_inproc_p50_ms=round(pct(lat3, 50), 3), proto3_inproc_p99_ms=round(pct(lat3, 99), 3),
                      proto3_sql_per_read=sql3.count, proto3_identical_output=mismatches == 0)
        if md_sample:
            lat3md = []
            for fid in md_sample:
                t0 = time.perf_counter()
                read3(fid, True)
                lat3md.append((time.perf_counter() - t0) * 1000)
            lat_md_in = []
            for fid in md_sample:
                t0 = time.perf_counter()
                read(fid, True)
                lat_md_in.append((time.perf_counter() - t0) * 1000)
            result.update(detail_md_inproc_p50_ms=round(pct(lat_md_in, 50), 3), proto3_md_inproc_p50_ms=round(pct(lat3md, 50), 3))

        # phases of cached_details (same calls, timed one by one), p50 per phase
        from auditflow_dagster.core import fiche_sections as fs

        phases: dict[str, list[float]] = defaultdict(list)
        for fid in detail_ids[:500]:
            marks = [time.perf_counter()]
            with session_scope() as s:
                row = fiche_db.get_row(s, fid)
                marks.append(time.perf_counter())
                fiche_db.details_ready(s, row)
                marks.append(time.perf_counter())
                sections = fiche_db.load_sections(s, row.id, include_mail_devis=False)
                marks.append(time.perf_counter())
                fs.rebuild_details(fiche_db._fiche_columns(row), sections, include_mail_devis=False)
                marks.append(time.perf_counter())
                fiche_db._recordings_view(s, row.id)
                marks.append(time.perf_counter())
            marks.append(time.perf_counter())
            for name, a, b in zip(("session+get_row", "details_ready", "load_sections", "rebuild_details", "recordings",
                                   "commit+close"), marks[:-1], marks[1:], strict=True):
                phases[name].append((b - a) * 1000)
        result["detail_phase_p50_ms"] = {k: round(pct(v, 50), 3) for k, v in phases.items()}

        # session overhead alone: checkout (+pre-ping), BEGIN, one trivial SELECT, COMMIT
        lat_sess = []
        for _ in range(500):
            t0 = time.perf_counter()
            with session_scope() as s:
                s.execute(select(1)).scalar()
            lat_sess.append((time.perf_counter() - t0) * 1000)
        result["session_select1_p50_ms"] = round(pct(lat_sess, 50), 3)

        # EXPLAIN ANALYZE every statement of one typical read (the median statement count)
        probe = next((f for f, c in zip(detail_ids, sql_counts, strict=True) if c == sorted(sql_counts)[len(sql_counts) // 2]),
                     detail_ids[0])
        with SqlCounter(engine, keep=True) as sql:
            read(probe)
        ex = _explain(db.url, sql.statements)
        result.update(detail_server_exec_ms=round(ex["exec_ms"], 3), detail_server_plan_ms=round(ex["plan_ms"], 3),
                      detail_seq_scans=ex["seq_scans"], detail_plan_nodes=ex["nodes"])
        if md_sample:
            with SqlCounter(engine) as sql_md:
                read(md_sample[0], True)
            result["detail_md_sql_per_read"] = sql_md.count
        rp = _replay(db.url, sql.statements)
        result.update(detail_raw_replay_p50_ms=round(rp["raw_seq_p50_ms"], 3),
                      detail_raw_pipeline_p50_ms=round(rp["raw_pipeline_p50_ms"], 3),
                      pg_roundtrip_p50_ms=round(rp["roundtrip_p50_ms"], 3))

        # in-process by-date-range (what the route's plan() runs) with its SQL count
        lat_ri, lat_rsql, lat_renc, range_sql = [], [], [], 0
        with SqlCounter(engine) as sql:
            for _ in range(max(5, args.range_repeats // 2)):
                sql.reset()
                t0 = time.perf_counter()
                with session_scope() as s:
                    progressive._range_lock(s, range_days[0], range_days[-1])
                    progressive.find_reusable_job(s, range_days[0], range_days[-1])
                    progressive.days_with_data(s, range_days)
                    items = progressive.range_items(s, range_days)
                t1 = time.perf_counter()
                _encode({"fiches": items})
                t2 = time.perf_counter()
                lat_ri.append((t1 - t0) * 1000)
                lat_renc.append((t2 - t1) * 1000)
                lat_rsql.append(sql.seconds * 1000)
                range_sql = sql.count
        result.update(range_inproc_p50_ms=round(pct(lat_ri, 50), 1), range_inproc_max_ms=round(max(lat_ri), 1),
                      range_sql_per_request=range_sql,
                      range_sql_client_p50_ms=round(pct(lat_rsql, 50), 1), range_json_encode_p50_ms=round(pct(lat_renc, 50), 1))

        def range_once() -> None:
            with session_scope() as s:
                progressive._range_lock(s, range_days[0], range_days[-1])
                progressive.find_reusable_job(s, range_days[0], range_days[-1])
                progressive.days_with_data(s, range_days)
                progressive.range_items(s, range_days)

        # the same with the cyclic GC off: are the tail spikes GC pauses over the ORM objects?
        lat_nogc = []
        gc.disable()
        try:
            for _ in range(max(5, args.range_repeats // 2)):
                t0 = time.perf_counter()
                range_once()
                lat_nogc.append((time.perf_counter() - t0) * 1000)
        finally:
            gc.enable()
        result.update(range_inproc_gc_off_p50_ms=round(pct(lat_nogc, 50), 1), range_inproc_gc_off_max_ms=round(max(lat_nogc), 1))

        with SqlCounter(engine, keep=True) as sql:
            range_once()
        rex = _explain(db.url, sql.statements)
        result.update(range_server_exec_ms=round(rex["exec_ms"], 2), range_seq_scans=rex["seq_scans"])
        if args.profile_reads > 0:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(3):
                range_once()
            prof.disable()
            result["range_profile_share_pct"] = {k: round(v, 1) for k, v in _profile_by_package(prof)}

        # cProfile: where the in-process time of a detail read goes, by package
        prof_rows: list[tuple[str, float]] = []
        if args.profile_reads > 0:
            prof = cProfile.Profile()
            ids = detail_ids[: args.profile_reads]
            prof.enable()
            for fid in ids:
                read(fid)
            prof.disable()
            prof_rows = _profile_by_package(prof)
            top = pstats.Stats(prof)
            top_funcs = sorted(top.stats.items(), key=lambda kv: -kv[1][2])[:8]  # type: ignore[attr-defined]
            result["detail_profile_share_pct"] = {k: round(v, 1) for k, v in prof_rows}
            result["detail_profile_top_tottime"] = [
                f"{os.path.basename(f)}:{ln}:{fn} {1000 * tt / len(ids):.3f}ms" for (f, ln, fn), (_, _, tt, _, _) in top_funcs]

        result["samples"] = args.samples
        result["detail_goal_p50_ms"] = DETAIL_GOAL_P50_MS
        result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        result["database_dropped"] = not db.keep

    print(json.dumps(result, separators=(",", ":")), flush=True)
    _human(result, notes)
    return 0


def _human(r: dict[str, Any], notes: list[str]) -> None:
    ok = r["detail_http_p50_ms"] <= DETAIL_GOAL_P50_MS
    lines = [
        "",
        f"fiche_reads — {r['fiches']:,} cached fiches over {r['days']:,} days ({r['per_day']}/day), database {r['db_mb']} MB; "
        f"{r['cpus']} CPUs, load average {r['load_avg_1m_start']} → {r['load_avg_1m_end']}",
        f"  populate: {r['populate_s']} s ({r['populate_mode']}"
        + (f", {r.get('section_rows', 0):,} section rows, {r.get('recordings_rows', 0):,} recordings" if r["populate_mode"] == "bulk_copy" else "")
        + f"); verified vs write path: {r.get('verify_ok')} ({r.get('verify_fiches')} fiches, {r.get('verify_rows')} rows)",
        f"  detail GET /api/fiches/{{id}}  ({r['samples']} reads, {r['detail_http_bytes_avg']:,} B avg): "
        f"p50 {r['detail_http_p50_ms']:.2f}  p95 {r['detail_http_p95_ms']:.2f}  p99 {r['detail_http_p99_ms']:.2f}  "
        f"max {r['detail_http_max_ms']:.2f} ms  → goal p50 ≤ {DETAIL_GOAL_P50_MS} ms: {'MET' if ok else 'MISSED'}",
    ]
    if "detail_md_http_p50_ms" in r:
        lines.append(f"    with include_mail_devis=true: p50 {r['detail_md_http_p50_ms']:.2f}  p99 {r['detail_md_http_p99_ms']:.2f} ms"
                     f" ({r.get('detail_md_sql_per_read')} statements/read)")
    lines += [
        f"    in-process cached_details: p50 {r['detail_inproc_p50_ms']:.2f}  p99 {r['detail_inproc_p99_ms']:.2f} ms; "
        f"JSON encode p50 {r['detail_json_encode_p50_ms']:.2f} ms; HTTP+ASGI+thread hop ≈ {r['detail_http_minus_inproc_p50_ms']:.2f} ms",
        f"    SQL: {r['detail_sql_per_read']} statements/read (max {r['detail_sql_per_read_max']}), client-side execute p50 "
        f"{r['detail_sql_client_p50_ms']:.2f} ms; server (EXPLAIN ANALYZE sums) execution {r['detail_server_exec_ms']:.2f} ms"
        f" + planning {r['detail_server_plan_ms']:.2f} ms (skipped once auto-prepared)",
        f"    same statements on a raw psycopg connection: {r['detail_raw_replay_p50_ms']:.2f} ms one by one, "
        f"{r['detail_raw_pipeline_p50_ms']:.2f} ms pipelined; one round trip (SELECT 1) {r['pg_roundtrip_p50_ms']:.3f} ms; "
        f"empty session + SELECT 1: {r['session_select1_p50_ms']:.2f} ms",
        f"    plan nodes: {r['detail_plan_nodes']}; sequential scans: {r['detail_seq_scans'] or 'none'}",
    ]
    if "proto3_inproc_p50_ms" in r:
        lines.append(f"    prototype fix (bench/_prototype_read.py, sections in 1 statement, {r['proto3_sql_per_read']} statements/read, "
                     f"identical output: {r['proto3_identical_output']}): in-process p50 {r['proto3_inproc_p50_ms']:.2f}  "
                     f"p99 {r['proto3_inproc_p99_ms']:.2f} ms vs {r['detail_inproc_p50_ms']:.2f}  {r['detail_inproc_p99_ms']:.2f} ms today"
                     + (f"; with mail devis {r['proto3_md_inproc_p50_ms']:.2f} vs {r['detail_md_inproc_p50_ms']:.2f} ms"
                        if "proto3_md_inproc_p50_ms" in r else ""))
    lines.append("    phases p50: " + ", ".join(f"{k} {v:.2f}" for k, v in r["detail_phase_p50_ms"].items()) + " ms")
    if r.get("detail_profile_share_pct"):
        lines.append("    cProfile share of own time: " + "; ".join(f"{k} {v:.0f}%" for k, v in r["detail_profile_share_pct"].items() if v >= 1))
    lines += [
        f"  by-date-range {r['range_start']}..{r['range_end']} ({r['range_days']} cached days, {r['range_fiches']:,} fiches, "
        f"{r['range_bytes']:,} B, from cache: {r['range_complete']}): p50 {r['range_http_p50_ms']:.1f}  p99 {r['range_http_p99_ms']:.1f}  "
        f"max {r['range_http_max_ms']:.1f} ms",
        f"    in-process p50 {r['range_inproc_p50_ms']} max {r['range_inproc_max_ms']} ms (cyclic GC off: p50 "
        f"{r['range_inproc_gc_off_p50_ms']} max {r['range_inproc_gc_off_max_ms']} ms) ({r['range_sql_per_request']} statements, client-side SQL "
        f"{r['range_sql_client_p50_ms']} ms, server execution {r['range_server_exec_ms']} ms, sequential scans: "
        f"{r['range_seq_scans'] or 'none'}; rest is ORM + item building) + JSON encode {r['range_json_encode_p50_ms']} ms",
        *([("    cProfile share of own time: " + "; ".join(f"{k} {v:.0f}%" for k, v in r["range_profile_share_pct"].items() if v >= 1))]
          if r.get("range_profile_share_pct") else []),
        f"  by-date (one day, {r['by_date_fiches']} fiches, {r['by_date_bytes']:,} B): p50 {r['by_date_http_p50_ms']:.1f}  "
        f"p99 {r['by_date_http_p99_ms']:.1f} ms",
        f"  database dropped: {r['database_dropped']}",
    ]
    lines += [f"  note: {n}" for n in notes]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
