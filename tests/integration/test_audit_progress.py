"""``audit.progress`` during the step fan-out counts every committed step: the values climb one by
one to ``total_steps`` (steps finishing together used to report the same count and end at 9/10)."""

from __future__ import annotations

import datetime as dt

from dagster import materialize
from sqlalchemy import select

from auditflow_dagster.assets.audits import audit_step_results
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import Event
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sample import generator
from tests.integration.test_assets import DAY, _resources


def test_step_progress_climbs_to_the_total(db, dagster_instance):
    fiches = [f["id"] for f in generator.fiches_for_day(dt.date.fromisoformat(DAY))
              if generator.expected_audit(f["id"])["auditable"]][:3]
    with session_scope() as s:
        ensure_bundled_config(s)
    dagster_instance.add_dynamic_partitions("fiches", fiches)
    for fiche_id in fiches:
        assert materialize([fiche_details, transcripts, audit_step_results], partition_key=fiche_id,
                           instance=dagster_instance, resources=_resources()).success
    with session_scope() as s:
        payloads = [p for (p,) in s.execute(select(Event.payload).where(Event.name == "audit.progress")
                                            .order_by(Event.id))]
    by_audit: dict[str, list[dict]] = {}
    for p in payloads:
        if p.get("current_phase") == "analysis":
            by_audit.setdefault(p["audit_id"], []).append(p)
    assert len(by_audit) == len(fiches)
    for events in by_audit.values():
        total = events[0]["total_steps"]
        assert [e["completed_steps"] for e in events] == list(range(1, total + 1))
        assert events[-1]["progress_percentage"] == 100
