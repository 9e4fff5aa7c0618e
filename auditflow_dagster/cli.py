"""``auditflow`` command line: the demo, migrations, and the single-service entry points."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import time
from typing import Any
from zoneinfo import ZoneInfo

import httpx


def _yesterday(tz: str) -> dt.date:
    return dt.datetime.now(ZoneInfo(tz)).date() - dt.timedelta(days=1)


def day_progress(day: str) -> dict[str, Any]:
    """Counts for one sales day, read from the application database."""
    from sqlalchemy import text

    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        row = s.execute(text("""
            SELECT
              (SELECT count(*) FROM fiche_cache f WHERE f.sales_date = :d) AS fiches,
              (SELECT count(*) FROM recordings r JOIN fiche_cache f ON f.id = r.fiche_cache_id WHERE f.sales_date = :d) AS recordings,
              (SELECT count(*) FROM recordings r JOIN fiche_cache f ON f.id = r.fiche_cache_id
                 WHERE f.sales_date = :d AND r.has_transcription) AS transcribed,
              (SELECT count(DISTINCT a.fiche_cache_id) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                 WHERE f.sales_date = :d AND a.status IN ('completed','failed')) AS fiches_audited,
              (SELECT count(*) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                 WHERE f.sales_date = :d AND a.status = 'completed') AS completed,
              (SELECT count(*) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                 WHERE f.sales_date = :d AND a.status = 'failed') AS failed,
              (SELECT count(*) FROM fiche_sales_days WHERE sales_date = :d) AS day_done
        """), {"d": day}).mappings().one()
        niveaux = dict(s.execute(text("""
            SELECT a.niveau, count(*) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
            WHERE f.sales_date = :d AND a.status = 'completed' AND a.is_latest GROUP BY a.niveau ORDER BY a.niveau
        """), {"d": day}).all())
        mean = s.execute(text("""
            SELECT avg(a.score_percentage) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
            WHERE f.sales_date = :d AND a.status = 'completed' AND a.is_latest
        """), {"d": day}).scalar()
    return {**dict(row), "niveaux": niveaux, "mean_score": float(mean) if mean is not None else None}


def run_summary(dagster_graphql: str) -> dict[str, Any]:
    """Runs of the instance: total, how many belong to backfills, how many are still in flight."""
    q = """query { runsOrError { __typename ... on Runs { results { runId status jobName tags { key value } } } } }"""
    runs = httpx.post(dagster_graphql, json={"query": q}, timeout=10).json()["data"]["runsOrError"]["results"]
    backfill = [r for r in runs if any(t["key"] == "dagster/backfill" for t in r["tags"])]
    active = [r for r in runs if r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")]
    return {"total": len(runs), "backfill": len(backfill), "active": len(active)}


def follow_live_audit(api_url: str, fiche_id: str, config_id: int) -> dict[str, float]:
    """POST an audit and follow its run's SSE stream; returns latencies in seconds."""
    t0 = time.monotonic()
    resp = httpx.post(f"{api_url}/api/audits/run", json={"fiche_id": fiche_id, "audit_config_id": config_id}, timeout=30)
    resp.raise_for_status()
    body = resp.json()
    out: dict[str, Any] = {"run_id": body["run_id"], "tracking_id": body["audit_id"]}
    event = None
    with httpx.stream("GET", f"{api_url}/api/runs/{body['run_id']}/events", timeout=httpx.Timeout(300, read=120)) as s:
        for line in s.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "STEP_START" and "first_step" not in out:
                    out["first_step"] = time.monotonic() - t0
                if event in ("RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED"):
                    out["terminal"] = time.monotonic() - t0
                    out["outcome"] = event
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    # The offline demo serves its API without authentication (the API warns at start); export
    # AUDITFLOW_AUTH=on to try it with API keys (`auditflow api-key create`).
    os.environ.setdefault("AUDITFLOW_AUTH", "off")
    os.environ.setdefault("AUDITFLOW_CRM", "http")
    os.environ.setdefault("AUDITFLOW_STT", "sample")
    os.environ.setdefault("AUDITFLOW_LLM", "offline")
    from api.dagster_client import DagsterClient
    from auditflow_dagster.settings import get_settings
    from auditflow_dagster.stack import Stack

    get_settings.cache_clear()
    settings = get_settings()
    day = args.day or _yesterday(settings.business_timezone).isoformat()
    crm_opts = ["--fiches-per-day", str(args.fiches)]
    stack = Stack(crm_options=crm_opts)
    if args.api_port:
        stack.api_port = args.api_port
    if args.dagster_port:
        stack.dagster_port = args.dagster_port
    t0 = time.monotonic()
    print(f"AuditFlow demo — auditing sales day {day} ({args.fiches} synthetic fiches), logs in {stack.log_dir}")
    if not settings.auth_enabled:
        print("  WARNING: AUDITFLOW_AUTH=off — the demo API accepts every request without credentials "
              "(offline demo only)", file=sys.stderr)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    stack.start()
    try:
        stack.wait_ready()
        print(f"  stack ready in {time.monotonic() - t0:.1f}s")
        graphql = f"{stack.dagster_url}/graphql"

        async def launch_day() -> str:
            client = DagsterClient(graphql)
            try:
                return await client.launch_job("sales_day", run_config={}, tags={"dagster/partition": day,
                                                                                 "auditflow/trigger": "demo"})
            finally:
                await client.aclose()

        run_id = asyncio.run(launch_day())
        print(f"  launched sales_day[{day}] run {run_id}; the sensor backfills its fiches through the chain")
        deadline = time.monotonic() + args.timeout
        last = None
        while not stopping:
            p = day_progress(day)
            line = (f"  fiches {p['fiches']:>3} · recordings {p['transcribed']}/{p['recordings']} transcribed · "
                    f"audits {p['completed']} completed, {p['failed']} failed")
            if line != last:
                print(line, flush=True)
                last = line
            if p["day_done"] and p["fiches"] and p["fiches_audited"] >= p["fiches"]:
                break
            if time.monotonic() > deadline:
                print(f"  timed out after {args.timeout}s", file=sys.stderr)
                return 1
            time.sleep(1.0)
        if stopping:
            return 130
        wall = time.monotonic() - t0
        p = day_progress(day)
        while run_summary(graphql)["active"] and not stopping:
            time.sleep(0.5)  # let the backfill's runs finish (asset checks) before counting them
        runs = run_summary(graphql)
        print()
        print("═" * 76)
        print(f" Audited day {day}: {wall:.1f}s wall from start (stack start-up included)")
        print(f"   Dagster runs: {runs['total']} (1 sales_day + {runs['backfill']} backfill run(s) for {p['fiches']} fiches)")
        print(f"   fiches: {p['fiches']}   recordings: {p['recordings']} ({p['transcribed']} transcribed)")
        print(f"   audits: {p['completed']} completed, {p['failed']} failed (no usable recording)")
        mean = f"{p['mean_score']:.2f} %" if p["mean_score"] is not None else "n/a"
        print("   niveau: " + ", ".join(f"{k} {v}" for k, v in p["niveaux"].items()) + f"   mean score: {mean}")
        print("═" * 76)
        print(f" Dagster UI : {stack.dagster_url}   (asset lineage: {stack.dagster_url}/asset-groups)")
        print(f" API        : {stack.api_url}   OpenAPI: {stack.api_url}/api/openapi.json")
        fiche = _one_audited_fiche(day)
        if fiche:
            live = follow_live_audit(stack.api_url, *fiche)
            print(f" Live audit : POST /api/audits/run (fiche {fiche[0]}) → first step event after "
                  f"{live.get('first_step', float('nan')):.2f}s, {live.get('outcome')} after {live.get('terminal', float('nan')):.2f}s")
            print(f"   replay its events:  curl -N {stack.api_url}/api/runs/{live['run_id']}/events")
        print(f"   day status:         curl -s '{stack.api_url}/api/fiches/status/by-date?date={day}'")
        if args.exit:
            return 0
        print("\nRunning — Ctrl-C stops every process.")
        while not stopping:
            time.sleep(0.5)
        return 0
    finally:
        print("stopping…", flush=True)
        stack.stop()


def _one_audited_fiche(day: str) -> tuple[str, int] | None:
    from sqlalchemy import text

    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        row = s.execute(text("""
            SELECT f.fiche_id, a.audit_config_id FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
            WHERE f.sales_date = :d AND a.status = 'completed' ORDER BY a.id LIMIT 1"""), {"d": day}).first()
    return (row[0], int(row[1])) if row else None


def cmd_migrate(args: argparse.Namespace) -> int:
    from auditflow_dagster.stack import prepare_database

    app, _ = prepare_database()
    print("migrations applied")
    return 0


def cmd_import_config(args: argparse.Namespace) -> int:
    import json

    from auditflow_dagster.db.configs import import_legacy_json
    from auditflow_dagster.db.session import session_scope
    from auditflow_dagster.stack import prepare_database

    prepare_database()
    with open(args.path, encoding="utf-8") as fh:
        data = json.load(fh)
    with session_scope() as s:
        row = import_legacy_json(s, data, created_by="cli")
        print(f"imported config {row.id}: {row.name}")
    return 0


def _key_db() -> None:
    from auditflow_dagster.db.embedded import ensure_database_env
    from auditflow_dagster.db.migrate import upgrade

    ensure_database_env()
    upgrade()


def cmd_api_key_create(args: argparse.Namespace) -> int:
    """Create an API key; the token is printed once (stdout) and stored nowhere."""
    from auditflow_dagster.db import api_keys
    from auditflow_dagster.db.session import session_scope

    perms = [p.strip() for chunk in args.permission for p in chunk.split(",") if p.strip()]
    groupes = [g.strip() for chunk in args.groupe for g in chunk.split(",") if g.strip()]
    expires_at = None
    if args.expires_in_days is not None:
        expires_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=args.expires_in_days)
    _key_db()
    try:
        with session_scope() as s:
            view, token = api_keys.create_key(s, name=args.name, permissions=perms, scope=args.scope, groupes=groupes,
                                              crm_user_id=args.crm_user_id, created_by="cli", expires_at=expires_at)
    except api_keys.InvalidKeyDefinition as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.token_only:
        print(token)
        return 0
    scope = view["scope"] + (f" {','.join(view['groupes'])}" if view["groupes"] else "") + (
        f" crm_user_id={view['crmUserId']}" if view["crmUserId"] else "")
    print(f"created API key {view['id']} ({view['keyPrefix']}) '{view['name']}'")
    print(f"  permissions: {', '.join(view['permissions'])}")
    print(f"  scope:       {scope}")
    if view["expiresAt"]:
        print(f"  expires at:  {view['expiresAt']}")
    print("  token (shown once, store it now):")
    print(token)
    return 0


def cmd_api_key_list(args: argparse.Namespace) -> int:
    import json

    from auditflow_dagster.db import api_keys
    from auditflow_dagster.db.session import session_scope

    _key_db()
    with session_scope() as s:
        keys = api_keys.list_keys(s, include_revoked=not args.active)
    if args.json:
        print(json.dumps(keys, indent=2))
        return 0
    for k in keys:
        print(f"{k['id']:>5}  {k['keyPrefix']}  {k['status']:<8} {k['scope']:<5} {','.join(k['permissions'])}  "
              f"'{k['name']}'  last used {k['lastUsedAt'] or 'never'}")
    if not keys:
        print("no API keys")
    return 0


def cmd_api_key_revoke(args: argparse.Namespace) -> int:
    from auditflow_dagster.db import api_keys
    from auditflow_dagster.db.session import session_scope

    _key_db()
    with session_scope() as s:
        view = api_keys.revoke_key(s, args.id)
    if view is None:
        print(f"error: no API key {args.id}", file=sys.stderr)
        return 1
    print(f"revoked API key {view['id']} ({view['keyPrefix']}) at {view['revokedAt']}")
    return 0


def _register_api_key(sub: Any) -> None:
    from auditflow_dagster.db.api_keys import PERMISSIONS

    keys = sub.add_parser("api-key", help="create, list and revoke API keys")
    ksub = keys.add_subparsers(dest="api_key_command", required=True)
    create = ksub.add_parser("create", help="create a key; its token is printed once",
                             description="Permissions: " + ", ".join(PERMISSIONS))
    create.add_argument("--name", required=True)
    create.add_argument("--permission", "-p", action="append", default=[], required=True,
                        help="repeatable or comma-separated, e.g. -p audits.read,audits.run (* = everything)")
    create.add_argument("--scope", choices=["SELF", "GROUP", "ALL"], default="SELF")
    create.add_argument("--groupe", "-g", action="append", default=[], help="GROUP scope: repeatable or comma-separated")
    create.add_argument("--crm-user-id", help="SELF scope: the CRM attribution user id")
    create.add_argument("--expires-in-days", type=float)
    create.add_argument("--token-only", action="store_true", help="print only the token")
    create.set_defaults(fn=cmd_api_key_create)
    lst = ksub.add_parser("list", help="list keys (never a hash or a token)")
    lst.add_argument("--active", action="store_true", help="hide revoked keys")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(fn=cmd_api_key_list)
    rev = ksub.add_parser("revoke", help="revoke a key (idempotent)")
    rev.add_argument("id", type=int)
    rev.set_defaults(fn=cmd_api_key_revoke)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="auditflow", description="AuditFlow command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start everything offline and audit yesterday's sales")
    demo.add_argument("--day", help="sales day YYYY-MM-DD (default: yesterday, Europe/Paris)")
    demo.add_argument("--fiches", type=int, default=40, help="synthetic fiches per day (default 40)")
    demo.add_argument("--timeout", type=float, default=600, help="seconds to wait for the day (default 600)")
    demo.add_argument("--exit", action="store_true", help="stop after the summary instead of serving")
    demo.add_argument("--api-port", type=int, default=8000)
    demo.add_argument("--dagster-port", type=int, default=3000)
    demo.set_defaults(fn=cmd_demo)
    mig = sub.add_parser("migrate", help="apply database migrations (embedded server if no URL is set)")
    mig.set_defaults(fn=cmd_migrate)
    imp = sub.add_parser("import-config", help="import an audit config in the legacy JSON format")
    imp.add_argument("path")
    imp.set_defaults(fn=cmd_import_config)
    from auditflow_dagster import inspect_cli

    inspect_cli.register(sub)
    _register_api_key(sub)
    args = parser.parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
