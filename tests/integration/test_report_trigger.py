"""The ``compliance_reports_trigger`` sensor on real Postgres and a real Dagster instance: a day whose
audits settled gets its daily report, then its week's roll-up; nothing is asked twice for the same
state; a later audit change (a rerun, an override) makes the day due again."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from dagster import build_sensor_context, materialize
from sqlalchemy import update

from auditflow_dagster.assets.reports import (
    daily_compliance_report,
    weekly_compliance_report,
)
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import (
    Audit,
    DailyComplianceReport,
    FicheCache,
    WeeklyComplianceReport,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sensors.reports import compliance_reports_trigger
from tests.integration.test_assets import _resources

DAY, OTHER_DAY = "2026-11-25", "2026-11-26"


def _audit(s, fiche_id: str, day: str, cfg: int, status: str, minutes_ago: float) -> int:
    row = FicheCache(fiche_id=fiche_id, groupe="G1", sales_date=day, expires_at=dt.datetime(2100, 1, 1),
                     details_success=True)
    s.add(row)
    s.flush()
    audit = Audit(fiche_cache_id=row.id, audit_config_id=cfg, tracking_id=f"audit-{fiche_id}", status=status,
                  niveau="BON" if status == "completed" else None, score_percentage=Decimal("88.00"),
                  is_compliant=True, completed_at=now_utc() if status == "completed" else None, is_latest=True)
    s.add(audit)
    s.flush()
    at = now_utc() - dt.timedelta(minutes=minutes_ago)
    s.execute(update(Audit).where(Audit.id == audit.id).values(updated_at=at))
    return audit.id


def _requests(instance) -> list[tuple[str, str, str]]:
    with build_sensor_context(instance=instance) as ctx:
        result = compliance_reports_trigger(ctx)
    runs = getattr(result, "run_requests", None) or []
    return [(r.asset_selection[0].to_user_string(), r.partition_key, r.run_key) for r in runs]


def test_reports_follow_settled_audits(db, dagster_instance, monkeypatch):
    monkeypatch.setenv("AUDITFLOW_REPORT_SETTLE_SECONDS", "120")
    from auditflow_dagster.settings import get_settings

    get_settings.cache_clear()
    with session_scope() as s:
        cfg = ensure_bundled_config(s)
        _audit(s, "5001", DAY, cfg, "completed", 10)
        _audit(s, "5002", DAY, cfg, "failed", 8)
        _audit(s, "6001", OTHER_DAY, cfg, "completed", 10)
        busy = _audit(s, "6002", OTHER_DAY, cfg, "running", 9)   # OTHER_DAY is still being audited
        _audit(s, "7001", "2019-06-01", cfg, "completed", 10)    # before the partitions start
        old = _audit(s, "8001", "2026-10-01", cfg, "completed", 0)
        s.execute(update(Audit).where(Audit.id == old).values(updated_at=now_utc() - dt.timedelta(days=30)))

    first = _requests(dagster_instance)
    assert [(a, p) for a, p, _ in first] == [("daily_compliance_report", DAY)]
    assert _requests(dagster_instance) == first  # same state, same run key: the daemon dedupes it

    assert materialize([daily_compliance_report], partition_key=DAY, instance=dagster_instance,
                       resources=_resources()).success
    with session_scope() as s:
        assert s.get(DailyComplianceReport, DAY).audits_count == 1
    # the day is current; its week (Monday 2026-11-23) now needs the roll-up
    assert [(a, p) for a, p, _ in _requests(dagster_instance)] == [("weekly_compliance_report", "2026-11-23")]
    assert materialize([weekly_compliance_report], partition_key="2026-11-23", instance=dagster_instance,
                       resources=_resources()).success
    with session_scope() as s:
        assert s.get(WeeklyComplianceReport, "2026-W48").days == [DAY]
    assert _requests(dagster_instance) == []

    # OTHER_DAY settles: its running audit completes (ten minutes ago, as far as the trigger knows)
    with session_scope() as s:
        s.execute(update(Audit).where(Audit.id == busy).values(
            status="completed", niveau="BON", updated_at=now_utc() - dt.timedelta(minutes=5)))
    assert [(a, p) for a, p, _ in _requests(dagster_instance)] == [("daily_compliance_report", OTHER_DAY)]

    # an audit of DAY changes after its report (a rerun just landed): due again, but only once settled
    with session_scope() as s:
        audit_id = s.query(Audit.id).join(FicheCache).filter(FicheCache.fiche_id == "5001").scalar()
        s.execute(update(Audit).where(Audit.id == audit_id).values(score_percentage=Decimal("40.00"),
                                                                    updated_at=now_utc()))
    assert DAY not in [p for _, p, _ in _requests(dagster_instance)]
    with session_scope() as s:  # three minutes later (moving the clock back instead of sleeping)
        s.execute(update(DailyComplianceReport).where(DailyComplianceReport.day == DAY).values(
            generated_at=now_utc() - dt.timedelta(minutes=10)))
        s.execute(update(Audit).where(Audit.id == audit_id).values(updated_at=now_utc() - dt.timedelta(minutes=3)))
    again = [(a, p, k) for a, p, k in _requests(dagster_instance) if p == DAY]
    assert len(again) == 1 and again[0][2] != first[0][2]
    get_settings.cache_clear()
