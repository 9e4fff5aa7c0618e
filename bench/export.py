"""Benchmark: the audit export (issue 10 §2) — CSV and XLSX downloads of a sales-day range over real
HTTP, with the API process's peak RSS.

    .venv/bin/python -m bench.export [--audits 10000] [--days 31] [--small-days 3]
    .venv/bin/python -m bench.export --database-url postgresql://postgres@127.0.0.1:5432/postgres

What it does
------------
1. Creates a fresh database ``af_bench_<random>`` on the server of ``--database-url`` /
   ``AUDITFLOW_BENCH_DATABASE_URL`` (else an embedded pgserver), migrates it, drops it at the end.
2. Imports the 18-step audit config (the shared 18-point fixture: 92 control points in all, so ~5
   a step) and bulk-loads ``--audits`` completed audits spread evenly over ``--days`` sales days
   ending on ``--last-day``: one fiche (groupe, advisor) per audit, every step row, control point
   and citation as the engine's writer stores them, ~1 % of steps with a human override in force
   and ~1 % of control points with a review (:func:`bench.populate.populate_audits`). One audit is
   re-written through ``upsert_step_result`` (rolled back) and must export identically, else exit 3.
3. Starts the real API (``uvicorn api.app:create_app --factory``, auth off) in its own process, warms
   it up with an export of an empty day in each format (imports, pools), and then downloads, one at
   a time over one HTTP connection, streaming the body to a temporary file:
   the ``--small-days`` range (the last days) as CSV then XLSX, then the whole range as CSV then XLSX.
   For each: rows (CSV lines; XLSX ``<row>`` elements of the sheets, minus headers), bytes,
   time to first byte, seconds, rows/s, and the API process's RSS just before and its peak while the
   download runs (sampled every 20 ms with psutil), plus the process's VmHWM afterwards.
4. Prints one JSON line (``{"bench": "export", ...}``) then a human summary.

The rows of each download are checked against an SQL count of what the export must contain. RSS is
the API process only (PostgreSQL's backend sorting the rows is another process). Benchmarks are not
tests: nothing asserts a threshold here (the goal noted in the summary is < +100 MB over idle for
both formats, independent of the range). The machine's load average is recorded at start and end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._db import BenchDatabase
from bench._util import ApiServer

RSS_GOAL_MB = 100
EXPECTED_ROWS_SQL = """
SELECT count(*) FROM audits a
JOIN fiche_cache f ON f.id = a.fiche_cache_id
LEFT JOIN audit_step_results r ON r.audit_id = a.id
LEFT JOIN audit_step_result_control_points cp ON cp.audit_id = r.audit_id AND cp.step_position = r.step_position
WHERE f.sales_date BETWEEN %s AND %s AND a.is_latest AND a.deleted_at IS NULL
"""


class RssSampler:
    """Peak RSS of one process, sampled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, self.rss())


def vm_hwm(pid: int) -> int:
    """The process's RSS high-water mark (``VmHWM``), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def count_xlsx_rows(path: str) -> tuple[int, int]:
    """(data rows, sheets) of a workbook, reading each sheet's XML as a stream."""
    rows = sheets = 0
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if not (name.startswith("xl/worksheets/sheet") and name.endswith(".xml")):
                continue
            sheets += 1
            tail = b""
            with z.open(name) as fh:
                while chunk := fh.read(1 << 20):
                    data = tail + chunk
                    rows += data.count(b"<row ")
                    tail = data[-4:]  # shorter than "<row ": a tag split across chunks counts once, here
            rows -= 1  # the header row
    return rows, sheets


def download(client: httpx.Client, api: ApiServer, fmt: str, start: str, end: str) -> dict[str, Any]:
    """One export over HTTP, body streamed to a temporary file; RSS sampled meanwhile."""
    params = {"sales_date_from": start, "sales_date_to": end, "format": fmt}
    fd, path = tempfile.mkstemp(prefix="af_bench_export_", suffix=f".{fmt}")
    size = 0
    try:
        sampler = RssSampler(api.proc.pid)
        before = sampler.rss()
        t0 = time.perf_counter()
        ttfb = None
        with sampler, os.fdopen(fd, "wb") as out, \
                client.stream("GET", f"{api.url}/api/reports/audits/export", params=params) as r:
            if r.status_code != 200:
                raise RuntimeError(f"{fmt} {start}..{end}: HTTP {r.status_code} {r.read()[:300]!r}")
            for chunk in r.iter_raw(1 << 20):
                if ttfb is None:
                    ttfb = time.perf_counter() - t0
                out.write(chunk)
                size += len(chunk)
        seconds = time.perf_counter() - t0
        if fmt == "csv":
            with open(path, "rb") as fh:
                rows = sum(chunk.count(b"\r\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1
            sheets = None
        else:
            rows, sheets = count_xlsx_rows(path)
    finally:
        Path(path).unlink(missing_ok=True)
    return {"format": fmt, "from": start, "to": end, "rows": rows, "bytes": size, "sheets": sheets,
            "ttfb_s": round(ttfb or seconds, 3), "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
            "rss_before_mb": round(before / 2**20, 1), "rss_peak_mb": round(sampler.peak / 2**20, 1),
            "rss_delta_mb": round((sampler.peak - before) / 2**20, 1),
            "vm_hwm_after_mb": round(vm_hwm(api.proc.pid) / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--audits", type=int, default=10_000, help="completed audits to load (default 10000)")
    ap.add_argument("--days", type=int, default=31, help="sales days they span, the exported range (default 31)")
    ap.add_argument("--small-days", type=int, default=3, help="the small range exported first (default 3)")
    ap.add_argument("--last-day", default="2026-10-31", help="last sales day (default 2026-10-31)")
    ap.add_argument("--review-share", type=float, default=0.01, help="share of steps and points reviewed")
    ap.add_argument("--database-url", default=os.environ.get("AUDITFLOW_BENCH_DATABASE_URL"),
                    help="server to create the bench database on (env AUDITFLOW_BENCH_DATABASE_URL; unset: embedded)")
    ap.add_argument("--keep", action="store_true", help="do not drop the bench database")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"bench": "export", "cpus": os.cpu_count(),
                              "load_avg_1m_start": round(os.getloadavg()[0], 2)}
    notes: list[str] = []
    last = dt.date.fromisoformat(args.last_day)
    first = last - dt.timedelta(days=args.days - 1)
    small_first = last - dt.timedelta(days=args.small_days - 1)

    with BenchDatabase(args.database_url, keep=args.keep) as db:
        import psycopg

        from auditflow_dagster.db.session import session_scope
        from bench import populate as pop
        from bench._stack import eighteen_step_config

        print(f"database {db.name} on {db.server_url.split('@')[-1].split('?')[0]}"
              f"{' (embedded)' if args.database_url is None else ''}", file=sys.stderr)
        with session_scope() as s:
            config_id = eighteen_step_config(s)
        per_day, extra = divmod(args.audits, args.days)  # evenly: the first `extra` days get one more
        plan = [(first + dt.timedelta(days=k), per_day + (k < extra)) for k in range(args.days)]
        print(f"populating {args.audits:,} audits over {len(plan)} days …", file=sys.stderr, flush=True)
        p = pop.populate_audits(db.url, plan, config_id, review_share=args.review_share)
        result.update(audits=p["rows"]["audits"], days=len(plan), steps_per_audit=p["steps_per_audit"],
                      control_points_per_audit=p["control_points_per_audit"], populate_s=round(p["total_s"], 1),
                      db_mb=round(p["db_bytes"] / 2**20), rows_loaded=p["rows"])
        plain = db.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain) as conn:
            unreviewed = conn.execute(
                "SELECT a.id FROM audits a WHERE NOT EXISTS (SELECT 1 FROM audit_step_result_human_reviews h "
                "WHERE h.audit_id = a.id) ORDER BY a.id LIMIT 1").fetchone()[0]
            expected = {(a, b): conn.execute(EXPECTED_ROWS_SQL, (a, b)).fetchone()[0]
                        for a, b in ((small_first.isoformat(), last.isoformat()), (first.isoformat(), last.isoformat()))}
        v = pop.verify_audit_against_write_path(unreviewed)
        result.update(verify_ok=v["ok"], verify_records=v["records"])
        if not v["ok"]:
            print(json.dumps(result), flush=True)
            print("bulk audit differs from the write path:\n  " + "\n  ".join(v["diffs"][:10]), file=sys.stderr)
            return 3

        runs: list[dict[str, Any]] = []
        with ApiServer() as api, httpx.Client(timeout=httpx.Timeout(600.0)) as client:
            for fmt in ("csv", "xlsx"):  # warm-up: imports (xlsxwriter), pools, first queries
                download(client, api, fmt, "2000-01-01", "2000-01-01")
            result["rss_idle_mb"] = round(psutil.Process(api.proc.pid).memory_info().rss / 2**20, 1)
            for start in (small_first, first):
                for fmt in ("csv", "xlsx"):
                    print(f"export {fmt} {start}..{last} …", file=sys.stderr, flush=True)
                    run = download(client, api, fmt, start.isoformat(), last.isoformat())
                    run["expected_rows"] = expected[(start.isoformat(), last.isoformat())]
                    run["days"] = (last - start).days + 1
                    if run["rows"] != run["expected_rows"]:
                        notes.append(f"{fmt} {start}..{last}: {run['rows']} rows, {run['expected_rows']} expected")
                    runs.append(run)
            log_tail = api.log_tail(2000)
        if "Traceback" in log_tail:
            notes.append("the API logged a traceback: " + log_tail[-500:])
        result["runs"] = runs
        result["rss_goal_mb"] = RSS_GOAL_MB
        result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        result["database_dropped"] = not db.keep

    print(json.dumps(result, separators=(",", ":")), flush=True)
    _human(result, notes)
    return 0


def _human(r: dict[str, Any], notes: list[str]) -> None:
    lines = [
        "",
        f"export — {r['audits']:,} audits × {r['steps_per_audit']} steps ({r['control_points_per_audit']} control "
        f"points each) over {r['days']} days, database {r['db_mb']} MB; {r['cpus']} CPUs, load average "
        f"{r['load_avg_1m_start']} → {r['load_avg_1m_end']}",
        f"  populate: {r['populate_s']} s (COPY); one audit re-written through upsert_step_result exports identically: "
        f"{r['verify_ok']} ({r['verify_records']} records)",
        f"  API idle RSS after warm-up: {r['rss_idle_mb']} MB",
    ]
    for run in r["runs"]:
        ok = run["rss_delta_mb"] < r["rss_goal_mb"]
        sheets = f", {run['sheets']} sheet(s)" if run["sheets"] else ""
        lines.append(
            f"  {run['format'].upper():4} {run['days']:>2} days: {run['rows']:,} rows (expected {run['expected_rows']:,}), "
            f"{run['bytes'] / 2**20:,.1f} MB{sheets}, "
            f"first byte {run['ttfb_s']} s, total {run['seconds']} s, {run['rows_per_s']:,} rows/s; RSS {run['rss_before_mb']} → "
            f"peak {run['rss_peak_mb']} MB (+{run['rss_delta_mb']} MB, goal < +{r['rss_goal_mb']}: "
            f"{'MET' if ok else 'MISSED'}); VmHWM {run['vm_hwm_after_mb']} MB")
    lines.append(f"  database dropped: {r['database_dropped']}")
    lines += [f"  note: {n}" for n in notes]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
