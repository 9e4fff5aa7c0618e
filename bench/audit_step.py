"""One 18-step audit against a fake OpenAI-compatible LLM answering in 500 ms, LLM cap 8 (issue 5).

The ideal wall time of the step phase is ``ceil(18 / 8) × 0.5 s = 1.5 s``: three waves of calls
through the cap. The bench materializes ``audit_step_results`` + ``audits`` in process (the real
openai SDK over HTTP to the fake server, real Postgres for rows, locks and events) and reports:

* ``step_phase_s``: first ``audit.step_started`` → last ``audit.step_completed`` (from the outbox),
* ``asset_s``: the ``audit_step_results`` step as Dagster timed it (snapshot, fan-out, writes),
* ``materialize_s``: the whole in-process run (Dagster overhead included), and ``finalize_s``,
* the peak concurrency the fake server saw (must be ≤ the cap),

each as a ratio to the ideal, over ``--repeat`` runs (median reported).

    AUDITFLOW_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m bench.audit_step [--repeat 5] [--delay 0.5] [--cap 8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--delay", type=float, default=0.5)
    ap.add_argument("--cap", type=int, default=8)
    ap.add_argument("--database-url", default=os.environ.get("AUDITFLOW_BENCH_DATABASE_URL"))
    args = ap.parse_args(argv)
    os.environ["AUDITFLOW_LLM_CONCURRENCY"] = str(args.cap)
    os.environ["AUDIT_STEP_PER_AUDIT_CONCURRENCY"] = "18"

    from bench._db import BenchDatabase

    with BenchDatabase(args.database_url) as bdb:
        result = run(args)
        result["database_dropped"] = not bdb.keep
    print(json.dumps(result))
    print(f"\naudit_step — one 18-step audit, fake LLM {args.delay * 1000:.0f} ms/call, cap {args.cap}, "
          f"{args.repeat} runs (median)")
    print(f"  ideal step phase ceil(18/{args.cap}) × {args.delay}s = {result['ideal_s']:.2f} s")
    print(f"  step phase  {result['step_phase_s']:.2f} s  → {result['step_phase_ratio']:.2f} × ideal")
    print(f"  asset step  {result['asset_s']:.2f} s  → {result['asset_ratio']:.2f} × ideal "
          "(snapshot, fan-out, row writes)")
    print(f"  finalizer   {result['finalize_s']:.2f} s; whole in-process run {result['materialize_s']:.2f} s "
          f"({result['materialize_ratio']:.2f} × ideal, Dagster overhead included)")
    print(f"  LLM calls per run {result['llm_calls']}; peak concurrency at the fake server {result['peak']} (cap {args.cap})")


def run(args: argparse.Namespace) -> dict:
    import datetime as dt

    from dagster import DagsterInstance, materialize
    from sqlalchemy import select

    from auditflow_dagster.assets.audits import audit_step_results, audits
    from auditflow_dagster.assets.fiches import fiche_details
    from auditflow_dagster.assets.transcripts import transcripts
    from auditflow_dagster.db.configs import import_legacy_json
    from auditflow_dagster.db.models import Audit, Event
    from auditflow_dagster.db.session import session_scope
    from auditflow_dagster.resources.crm import CrmResource
    from auditflow_dagster.resources.database import DatabaseResource
    from auditflow_dagster.resources.llm import LlmResource
    from auditflow_dagster.resources.stt import SttResource
    from auditflow_dagster.sample import generator
    from tests.fakes.openai_timed import TimedFakeOpenAI
    from tests.fakes.server import serve_app

    fixtures = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "audit_config_18_points.json"
    with session_scope() as s:
        if fixtures.exists():
            config_id = import_legacy_json(s, json.loads(fixtures.read_text(encoding="utf-8"))).id
        else:  # an 18-step config built from the bundled checklist's steps, repeated
            from auditflow_dagster.core.audit_config import AuditConfigSpec
            from auditflow_dagster.db.configs import import_config

            base = generator.load_checklist()
            steps = [st.model_copy(update={"position": i + 1}) for i, st in enumerate((base.steps * 2)[:18])]
            config_id = import_config(s, AuditConfigSpec(name="bench 18", steps=steps)).id
    fiche = next(f["id"] for f in generator.fiches_for_day(dt.date(2026, 3, 18)) if generator.expected_audit(f["id"])["auditable"])
    sample = {"crm": CrmResource(mode="sample"), "stt": SttResource(mode="sample"), "db": DatabaseResource()}
    key = "sk-bench-fake-key-0000000000"
    fake = TimedFakeOpenAI(delay=args.delay, api_key=key)
    ideal = math.ceil(18 / args.cap) * args.delay
    rows = []
    with DagsterInstance.ephemeral() as instance, serve_app(fake.app) as base:
        instance.add_dynamic_partitions("fiches", [fiche])
        assert materialize([fiche_details, transcripts], partition_key=fiche, instance=instance, resources=sample).success
        llm = LlmResource(mode="openai", api_key=key, base_url=f"{base}/v1")
        for i in range(args.repeat + 1):  # the first run warms up (imports, SDK client, plans)
            tracking = f"bench-{i}"
            fake.peak, before = 0, len(fake.requests)
            t0 = time.perf_counter()
            result = materialize([audit_step_results, audits], partition_key=fiche, instance=instance,
                                 resources={**sample, "llm": llm}, run_config={"ops": {"audit_step_results": {"config": {
                                     "audit_config_ids": [config_id], "audit_tracking_ids": {fiche: tracking}}}}})
            wall = time.perf_counter() - t0
            assert result.success
            stats = {s.step_key: s for s in instance.get_run_step_stats(result.run_id)}
            with session_scope() as s:
                audit = s.scalar(select(Audit).where(Audit.tracking_id == tracking))
                times = s.execute(select(Event.name, Event.created_at).where(Event.channels.contains([f"audit-{tracking}"]))
                                  .where(Event.name.in_(["audit.step_started", "audit.step_completed", "audit.step_failed"]))
                                  ).all()
            starts = [t for n, t in times if n == "audit.step_started"]
            ends = [t for n, t in times if n != "audit.step_started"]
            if i == 0:
                continue
            rows.append({
                "materialize_s": wall,
                "asset_s": stats["audit_step_results"].end_time - stats["audit_step_results"].start_time,
                "finalize_s": stats["audits"].end_time - stats["audits"].start_time,
                "step_phase_s": (max(ends) - min(starts)).total_seconds(),
                "llm_calls": len(fake.requests) - before, "peak": fake.peak, "status": audit.status,
            })

    def med(k: str) -> float:
        return round(statistics.median(r[k] for r in rows), 3)

    return {
        "bench": "audit_step", "steps": 18, "delay_s": args.delay, "cap": args.cap, "runs": len(rows),
        "ideal_s": ideal, "step_phase_s": med("step_phase_s"), "step_phase_ratio": round(med("step_phase_s") / ideal, 3),
        "asset_s": med("asset_s"), "asset_ratio": round(med("asset_s") / ideal, 3), "finalize_s": med("finalize_s"),
        "materialize_s": med("materialize_s"), "materialize_ratio": round(med("materialize_s") / ideal, 3),
        "llm_calls": rows[0]["llm_calls"], "peak": max(r["peak"] for r in rows),
        "all_completed": all(r["status"] == "completed" for r in rows),
    }


if __name__ == "__main__":
    main()
