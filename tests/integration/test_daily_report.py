"""The compliance report assets on the synthetic day (issue 10, "What it must show"): the day is
audited in process (sample CRM and STT, offline auditor), then ``daily_compliance_report`` is
materialized; its metadata holds the markdown tables and PNG charts, and its numbers equal a
pandas-free SQL recomputation. Then the weekly roll-up and ``GET /api/reports/daily/{date}``
(400/404, scope ALL, permission ``audits.read``)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
from collections import Counter
from decimal import Decimal

import pytest
from dagster import materialize
from PIL import Image
from sqlalchemy import select, text, update
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.assets.reports import (
    compliance_weeks,
    daily_compliance_report,
    weekly_compliance_report,
)
from auditflow_dagster.core import reports as core
from auditflow_dagster.db import api_keys
from auditflow_dagster.db import reports as store
from auditflow_dagster.db.models import (
    Audit,
    DailyComplianceReport,
    FicheCache,
    WeeklyComplianceReport,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sample import generator
from tests.integration.test_assets import CHAIN, DAY, _resources

IMAGE = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")
UNREACHABLE_DAGSTER = "http://127.0.0.1:9/graphql"

# --------------------------------------------------------------------------------------------- #
# The pandas-free recomputation: plain SQL over the stored rows
# --------------------------------------------------------------------------------------------- #

SELECTED = """
WITH ranked AS (
    SELECT a.*, row_number() OVER (PARTITION BY a.fiche_cache_id, a.audit_config_id
                                   ORDER BY a.completed_at DESC, a.id DESC) AS rn
    FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
    WHERE f.sales_date = :day AND a.status = 'completed' AND a.deleted_at IS NULL
), sel AS (SELECT * FROM ranked WHERE rn = 1)
"""


def sql_niveau_counts(s) -> dict[str, int]:
    rows = s.execute(text(SELECTED + "SELECT niveau, count(*) FROM sel GROUP BY niveau"), {"day": DAY}).all()
    return {n: c for n, c in rows}


def sql_per_groupe(s) -> dict[str, tuple[int, Decimal, int]]:
    rows = s.execute(text(SELECTED + """
        SELECT coalesce(nullif(trim(coalesce(i.groupe, f.groupe)), ''), '(sans groupe)') AS g, count(*),
               round(avg(sel.score_percentage), 2), sum(CASE WHEN sel.is_compliant THEN 1 ELSE 0 END)
        FROM sel JOIN fiche_cache f ON f.id = sel.fiche_cache_id
        LEFT JOIN fiche_cache_information i ON i.fiche_cache_id = f.id
        GROUP BY g"""), {"day": DAY}).all()
    return {g: (n, mean, compliant) for g, n, mean, compliant in rows}


def sql_per_advisor(s) -> dict[str, tuple[int, Decimal]]:
    rows = s.execute(text(SELECTED + """
        SELECT coalesce(nullif(trim(i.attribution_user_nom), ''), '(non attribué)') AS adv, count(*),
               round(avg(sel.score_percentage), 2)
        FROM sel LEFT JOIN fiche_cache_information i ON i.fiche_cache_id = sel.fiche_cache_id
        GROUP BY adv"""), {"day": DAY}).all()
    return {a: (n, mean) for a, n, mean in rows}


def sql_top_missed(s) -> list[tuple[str, str, int, int]]:
    rows = s.execute(text(SELECTED + """
        SELECT r.step_name, cp.point, sum(CASE WHEN cp.statut = 'ABSENT' THEN 1 ELSE 0 END) AS missed,
               sum(CASE WHEN cp.statut = 'PARTIEL' THEN 1 ELSE 0 END) AS partial, min(cp.step_position) AS pos
        FROM audit_step_result_control_points cp
        JOIN audit_step_results r ON r.audit_id = cp.audit_id AND r.step_position = cp.step_position
        WHERE cp.audit_id IN (SELECT id FROM sel)
        GROUP BY r.step_name, cp.point
        HAVING sum(CASE WHEN cp.statut IN ('ABSENT', 'PARTIEL') THEN 1 ELSE 0 END) > 0
        ORDER BY missed DESC, partial DESC, pos, r.step_name COLLATE "C", cp.point COLLATE "C"
        LIMIT 10"""), {"day": DAY}).all()
    return [(name, p, int(m), int(pa)) for name, p, m, pa, _ in rows]


def sql_critical_failures(s) -> int:
    return s.scalar(text(SELECTED + """
        SELECT count(*) FROM audit_step_results r
        WHERE r.audit_id IN (SELECT id FROM sel) AND r.is_critical AND r.conforme <> 'CONFORME'"""), {"day": DAY})


def sql_gating(s) -> tuple[int, int]:
    return tuple(s.execute(text(SELECTED + """
        SELECT sum((result_data->'metadata'->'evidence_gating'->>'removed_citations')::int),
               sum((result_data->'metadata'->'evidence_gating'->>'downgraded_control_points')::int)
        FROM sel"""), {"day": DAY}).one())


# --------------------------------------------------------------------------------------------- #
# The synthetic day, audited, with a deleted audit, an older verdict and gating counters
# --------------------------------------------------------------------------------------------- #


def _audit_the_day(instance) -> dict[str, object]:
    from auditflow_dagster.assets.sales import sales_list
    from auditflow_dagster.db.configs import ensure_bundled_config

    with session_scope() as s:
        ensure_bundled_config(s)
    assert materialize([sales_list], partition_key=DAY, instance=instance, resources=_resources()).success
    keys = list(instance.get_dynamic_partitions("fiches"))
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    assert materialize(CHAIN, instance=instance, resources=_resources(), tags=tags).success
    auditable = [f for f in keys if generator.expected_audit(f)["auditable"]]
    deleted_fiche, older_fiche, gated_fiche = auditable[0], auditable[1], auditable[2]
    with session_scope() as s:
        def audit_of(fiche_id: str) -> Audit:
            return s.scalar(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                            .where(FicheCache.fiche_id == fiche_id, Audit.status == "completed"))

        # a deleted audit is not reported
        s.execute(update(Audit).where(Audit.id == audit_of(deleted_fiche).id).values(deleted_at=dt.datetime(2026, 3, 12)))
        # an older completed verdict of the same fiche × config is superseded by the latest one
        newer = audit_of(older_fiche)
        s.add(Audit(fiche_cache_id=newer.fiche_cache_id, audit_config_id=newer.audit_config_id,
                    tracking_id=f"audit-{older_fiche}-older", status="completed", niveau="INSUFFISANT",
                    score_percentage=Decimal("55.55"), overall_score=Decimal("55.55"), is_compliant=True,
                    completed_at=newer.completed_at - dt.timedelta(days=1), is_latest=False, version=0))
        # evidence gating that changed something
        gated = audit_of(gated_fiche)
        data = dict(gated.result_data)
        data["metadata"] = {**data["metadata"], "evidence_gating": {
            **data["metadata"]["evidence_gating"], "removed_citations": 3, "downgraded_control_points": 2}}
        gated.result_data = data
    expected = Counter(generator.expected_audit(f)["compliance"].niveau for f in auditable if f != deleted_fiche)
    return {"keys": keys, "expected_niveaux": expected, "reported": len(auditable) - 1}


def _md(metadata, key: str) -> str:
    return metadata[key].value


def test_daily_report_on_the_synthetic_day(db, dagster_instance):
    day = _audit_the_day(dagster_instance)
    result = materialize([daily_compliance_report], partition_key=DAY, instance=dagster_instance,
                         resources=_resources())
    assert result.success
    [mat] = result.asset_materializations_for_node("daily_compliance_report")
    metadata = mat.metadata

    # -- the numbers equal the SQL recomputation and the synthetic ground truth
    with session_scope() as s:
        row = s.get(DailyComplianceReport, DAY)
        niveaux, groupes, advisors = sql_niveau_counts(s), sql_per_groupe(s), sql_per_advisor(s)
        top, critical, gating = sql_top_missed(s), sql_critical_failures(s), sql_gating(s)
    assert row is not None and row.audits_count == day["reported"] == metadata["audits"].value
    assert {k: v for k, v in row.niveau_counts.items() if v} == niveaux == dict(day["expected_niveaux"])
    assert len(niveaux) >= 2  # the synthetic day has good and rejected calls
    assert {g["groupe"]: (g["audits"], Decimal(str(g["mean_score"])), g["compliant"]) for g in row.per_groupe} == groupes
    assert len(groupes) >= 2
    per_advisor: dict[str, tuple[int, int]] = {}
    for a in row.per_advisor:  # advisor × groupe rows; the SQL groups by advisor
        n, cents = per_advisor.get(a["advisor"], (0, 0))
        per_advisor[a["advisor"]] = (n + a["audits"], cents + round(a["score_sum"] * 100))
    assert {a: n for a, (n, _) in per_advisor.items()} == {a: n for a, (n, _) in advisors.items()}
    for a, (n, cents) in per_advisor.items():
        assert Decimal(cents) / 100 / n == pytest.approx(advisors[a][1], abs=Decimal("0.005")), a
    assert [(p["step_name"], p["point"], p["missed"], p["partial"]) for p in row.top_missed_points] == top
    assert top and len(top) <= 10
    assert sum(c["failed"] for c in row.critical_steps) == critical
    assert (row.gating["removed_citations"], row.gating["downgraded_control_points"]) == gating == (3, 2)
    assert row.totals["audits_with_critical_failure"] == day["expected_niveaux"]["REJET"]
    assert "INSUFFISANT" not in niveaux  # the older verdict was superseded

    # -- the metadata: markdown tables and charts
    for key, header in (("niveau_counts", "| niveau | audits | share |"), ("per_groupe", "| groupe | audits |"),
                        ("advisors_top_bottom", "| rank | advisor | groupe |"),
                        ("top_missed_control_points", "| # | step | control point |"),
                        ("critical_step_failures", "| step | evaluated | failed |"),
                        ("evidence_gating", "| evidence gating | count |")):
        assert header in _md(metadata, key), key
    for niveau, count in niveaux.items():
        assert f"| {niveau} | {count} |" in _md(metadata, "niveau_counts")
    first = row.top_missed_points[0]
    assert f"| 1 | {first['step_position']}. {first['step_name']} | {first['point']} | {first['missed']} |" in _md(
        metadata, "top_missed_control_points")
    assert "| citations removed | 3 |" in _md(metadata, "evidence_gating")
    charts = [m for m in (IMAGE.fullmatch(str(getattr(v, "value", ""))) for v in metadata.values()) if m]
    assert len(charts) >= 2
    for match in charts:
        png = base64.b64decode(match.group(1))
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        Image.open(io.BytesIO(png)).verify()
    assert metadata["mean_score"].value == row.mean_score == row.totals["mean_score"]

    # -- idempotent: a rematerialization rewrites the same row
    assert materialize([daily_compliance_report], partition_key=DAY, instance=dagster_instance,
                       resources=_resources()).success
    with session_scope() as s:
        again = store.daily_view(s, DAY)
    assert again["totals"] == row.totals and again["top_missed_points"] == row.top_missed_points

    # -- the weekly roll-up of the day's week
    week_key = next(k for k in compliance_weeks.get_partition_keys()
                    if k <= DAY < (dt.date.fromisoformat(k) + dt.timedelta(days=7)).isoformat())
    assert materialize([weekly_compliance_report], partition_key=week_key, instance=dagster_instance,
                       resources=_resources()).success
    with session_scope() as s:
        weekly = s.get(WeeklyComplianceReport, core.iso_week_key(DAY))
        assert weekly is not None and weekly.week_start == week_key and weekly.days == [DAY]
        assert weekly.totals == row.totals and weekly.per_groupe == row.per_groupe
        assert weekly.top_missed_points == row.top_missed_points and weekly.niveau_counts == row.niveau_counts

    # -- the API returns the stored report
    with TestClient(create_app(dagster_url=UNREACHABLE_DAGSTER), raise_server_exceptions=False) as client:
        reply = client.get(f"/api/reports/daily/{DAY}")
        assert reply.status_code == 200, reply.text
        data = reply.json()["data"]
        assert data["day"] == DAY and data["totals"] == row.totals and data["niveau_counts"] == row.niveau_counts
        assert data["per_groupe"] == row.per_groupe and data["top_missed_points"] == row.top_missed_points


# --------------------------------------------------------------------------------------------- #
# The endpoint's errors and authorization (a stored report, no pipeline needed)
# --------------------------------------------------------------------------------------------- #


@pytest.fixture()
def stored_report(db) -> dict:
    report = core.daily_report([{"audit_id": 1, "fiche_id": "1", "groupe": "Azur", "advisor": "Jean", "score": 91,
                                 "niveau": "EXCELLENT", "is_compliant": True, "critical_passed": 1,
                                 "critical_total": 1}])
    with session_scope() as s:
        store.upsert_daily(s, "2026-03-10", report, "run-1")
    return report


@pytest.fixture()
def client(db):
    with TestClient(create_app(dagster_url=UNREACHABLE_DAGSTER), raise_server_exceptions=False) as c:
        yield c


def test_endpoint_errors(stored_report, client):
    ok = client.get("/api/reports/daily/2026-03-10")
    assert ok.status_code == 200 and ok.json()["success"] is True
    assert ok.json()["data"]["totals"] == stored_report["totals"] and ok.json()["data"]["dagsterRunId"] == "run-1"
    missing = client.get("/api/reports/daily/2026-03-09")
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    for bad in ("2026-02-30", "2026-13-01", "20260310", "yesterday", "2026-3-10"):
        reply = client.get(f"/api/reports/daily/{bad}")
        assert reply.status_code == 400 and reply.json()["code"] == "VALIDATION_ERROR", bad


def test_endpoint_needs_audits_read_and_scope_all(stored_report, auth_on):
    def key(permissions: list[str], scope: str = "ALL", **kw) -> dict[str, str]:
        with session_scope() as s:
            _, token = api_keys.create_key(s, name=f"k-{scope}-{len(permissions)}", permissions=permissions,
                                           scope=scope, **kw)
        return {"Authorization": f"Bearer {token}"}

    url = "/api/reports/daily/2026-03-10"
    with TestClient(create_app(dagster_url=UNREACHABLE_DAGSTER), raise_server_exceptions=False) as client:
        assert client.get(url).status_code == 401
        assert client.get(url, headers=key(["audits.read"])).status_code == 200
        assert client.get(url, headers=key(["fiches.read", "audits.write"])).status_code == 403
        group = client.get(url, headers=key(["*"], "GROUP", groupes=["Azur"]))
        assert group.status_code == 403 and group.json()["error"] == "Compliance reports need scope ALL"
        assert client.get(url, headers=key(["*"], "SELF", crm_user_id="u1")).status_code == 403
        # authorization comes before input validation: a bad date does not tell a GROUP key anything
        assert client.get("/api/reports/daily/nope", headers=key(["audits.read"], "GROUP",
                                                                 groupes=["B"])).status_code == 403
