"""Audit read and maintenance APIs (spec 04 §4) over real audits: a whole sales day materialized in
process with the offline twins (37 completed, 3 failed audits), then list filters, pagination,
sort, grouped views, by-fiche, detail latest view, logs, PATCH and soft delete."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from dagster import materialize
from sqlalchemy import select, update
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import (
    Audit,
    AuditStepResultControlPoint,
    FicheCache,
    FicheCacheInformation,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator

DAY = "2026-03-11"
CHAIN = [fiche_details, transcripts, audit_step_results, audits]


def _resources() -> dict:
    return {"crm": CrmResource(mode="sample"), "stt": SttResource(mode="sample"),
            "llm": LlmResource(mode="offline"), "db": DatabaseResource()}


@pytest.fixture()
def client(db):
    with TestClient(create_app(dagster_url="http://127.0.0.1:9/graphql"), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture()
def day(db, dagster_instance) -> list[str]:
    with session_scope() as s:
        ensure_bundled_config(s)
    assert materialize([sales_list], partition_key=DAY, instance=dagster_instance, resources=_resources()).success
    keys = list(dagster_instance.get_dynamic_partitions("fiches"))
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    assert materialize(CHAIN, instance=dagster_instance, resources=_resources(), tags=tags).success
    return keys


def _ok(r) -> dict:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    return body


def _rows() -> list[tuple]:
    with session_scope() as s:
        return s.execute(select(Audit.id, FicheCache.fiche_id, Audit.status, Audit.score_percentage, Audit.is_compliant,
                                Audit.niveau, FicheCacheInformation.groupe, Audit.created_at)
                         .join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                         .outerjoin(FicheCacheInformation, FicheCacheInformation.fiche_cache_id == FicheCache.id)).all()


def test_list_filters_pagination_sort_grouped(client, day):
    rows = _rows()
    assert len(rows) == 40
    completed = [r for r in rows if r.status == "completed"]
    failed = [r for r in rows if r.status == "failed"]
    assert len(completed) == sum(1 for f in day if generator.expected_audit(f)["auditable"]) and failed

    body = _ok(client.get("/api/audits"))
    assert body["pagination"] == {"total": 40, "limit": 100, "offset": 0, "current_page": 1, "total_pages": 1,
                                  "has_next_page": False, "has_prev_page": False}
    item = body["data"][0]
    assert {"id", "ficheCacheId", "auditConfigId", "status", "niveau", "scorePercentage", "resultData",
            "auditConfig", "ficheCache", "automationSchedule", "automationRun"} <= set(item)
    assert set(item["ficheCache"]) == {"ficheId", "groupe", "prospectNom", "prospectPrenom"}
    assert "steps" not in (item["resultData"].get("audit") or {}).get("results", {})  # stored snapshot only
    # default sort created_at desc, id desc
    ids = [int(a["id"]) for a in body["data"]]
    assert ids == [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)]

    # pagination
    page = _ok(client.get("/api/audits?limit=15&offset=30"))
    assert len(page["data"]) == 10
    assert page["pagination"] == {"total": 40, "limit": 15, "offset": 30, "current_page": 3, "total_pages": 3,
                                  "has_next_page": False, "has_prev_page": True}
    assert _ok(client.get("/api/audits?limit=9999"))["pagination"]["limit"] == 500
    assert _ok(client.get("/api/audits?limit=0"))["pagination"]["limit"] == 1

    # sort by score asc
    by_score = _ok(client.get("/api/audits?sort_by=score_percentage&sort_order=asc"))["data"]
    scores = [Decimal(a["scorePercentage"]) for a in by_score]
    assert scores == sorted(scores)

    # status / niveau (invalid values dropped; nothing valid → no filter)
    assert _ok(client.get("/api/audits?status=failed,bogus"))["pagination"]["total"] == len(failed)
    assert _ok(client.get("/api/audits?status=bogus"))["pagination"]["total"] == 40
    niveau = completed[0].niveau
    assert _ok(client.get(f"/api/audits?niveau={niveau}, ,XX"))["pagination"]["total"] == \
        sum(1 for r in rows if r.niveau == niveau)
    # fiche ids (CSV trimmed), compliance, score range, has_failed_steps
    two = [rows[0].fiche_id, rows[1].fiche_id]
    got = _ok(client.get(f"/api/audits?fiche_ids= {two[0]} ,{two[1]},"))["data"]
    assert sorted(a["ficheCache"]["ficheId"] for a in got) == sorted(two)
    assert _ok(client.get("/api/audits?is_compliant=true"))["pagination"]["total"] == sum(r.is_compliant for r in rows)
    assert _ok(client.get("/api/audits?is_compliant=yes"))["pagination"]["total"] == sum(not r.is_compliant for r in rows)
    assert _ok(client.get("/api/audits?score_min=50&score_max=90"))["pagination"]["total"] == \
        sum(1 for r in rows if 50 <= r.score_percentage <= 90)
    # groupes (effective groupe) and groupe_query (contains, case-insensitive) are ANDed
    groupe = rows[0].groupe
    n_groupe = sum(1 for r in rows if r.groupe == groupe)
    assert _ok(client.get("/api/audits", params={"groupes": groupe}))["pagination"]["total"] == n_groupe
    assert _ok(client.get("/api/audits", params={"groupe_query": groupe[2:-1].lower()}))["pagination"]["total"] >= n_groupe
    assert _ok(client.get("/api/audits", params={"groupes": groupe, "groupe_query": "zzz-nothing"}))["pagination"]["total"] == 0
    # q: exact id, fiche id
    assert str(rows[5].id) in [a["id"] for a in _ok(client.get(f"/api/audits?q={rows[5].id}"))["data"]]
    assert _ok(client.get("/api/audits?q=no-such-thing-anywhere"))["pagination"]["total"] == 0
    assert rows[5].fiche_id in {a["ficheCache"]["ficheId"] for a in _ok(client.get(f"/api/audits?q={rows[5].fiche_id}"))["data"]}
    # dates: date-only date_to covers the whole day (Deviation)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert _ok(client.get(f"/api/audits?date_from={today}&date_to={today}"))["pagination"]["total"] == 40
    assert _ok(client.get("/api/audits?date_to=2000-01-01"))["pagination"]["total"] == 0
    assert _ok(client.get(f"/api/audits?sales_dates={DAY}&has_recordings=true"))["pagination"]["total"] == \
        sum(1 for f in day if generator.recordings_for_fiche(f))
    assert _ok(client.get("/api/audits?trigger_source=batch"))["pagination"]["total"] == 40
    assert _ok(client.get("/api/audits?has_failed_steps=false"))["pagination"]["total"] == 40 - \
        _ok(client.get("/api/audits?has_failed_steps=true"))["pagination"]["total"]

    # validation: bad → 400 envelope
    for q in ("limit=abc", "offset=-1", "sort_by=name", "sort_order=up", "date_from=notadate", "score_min=x",
              "tokens_max=1.5", "sales_date_from=11/03/2026", "limit=1&limit=2"):
        r = client.get(f"/api/audits?{q}")
        assert r.status_code == 400, q
        assert r.json()["success"] is False and r.json()["code"] == "VALIDATION_ERROR"
        assert r.json()["error"] == "Invalid query parameters"

    # grouped-by-fiches: one per fiche, paginated in SQL
    gbf = _ok(client.get("/api/audits/grouped-by-fiches?limit=7"))
    assert gbf["pagination"]["total"] == 40 and len(gbf["data"]) == 7
    first = gbf["data"][0]
    assert first["summary"]["totalAudits"] == len(first["audits"]) == 1
    assert set(first["fiche"]) >= {"id", "ficheId", "groupe", "hasRecordings", "recordingsCount", "fetchedAt"}
    only_failed = _ok(client.get("/api/audits/grouped-by-fiches?status=failed"))
    assert only_failed["pagination"]["total"] == len(failed)

    # grouped
    g = _ok(client.get("/api/audits/grouped?group_by=status"))
    assert {d["key"]: d["count"] for d in g["data"]} == {"completed": len(completed), "failed": len(failed)}
    assert g["meta"] == {"group_by": "status", "bucket_size": 10, "truncated": False}
    assert [d["count"] for d in g["data"]] == sorted((d["count"] for d in g["data"]), reverse=True)
    cfg = _ok(client.get("/api/audits/grouped?group_by=audit_config"))["data"]
    assert len(cfg) == 1 and cfg[0]["count"] == 40 and cfg[0]["auditConfig"]["name"]
    buckets = _ok(client.get("/api/audits/grouped?group_by=score_bucket&bucket_size=abc"))
    assert buckets["meta"]["bucket_size"] == 10 and sum(d["count"] for d in buckets["data"]) == 40
    assert all(d["key"].endswith(str(int(d["key"].split("-")[0]) + 10)) for d in buckets["data"])
    groupes = _ok(client.get("/api/audits/grouped?group_by=groupe"))["data"]
    assert sum(d["count"] for d in groupes) == 40 and all("statusCounts" in d for d in groupes)
    day_g = _ok(client.get("/api/audits/grouped?group_by=created_day"))["data"]
    assert [d["key"] for d in day_g] == [today]
    fiche_g = _ok(client.get("/api/audits/grouped?group_by=fiche&limit=5"))
    assert fiche_g["pagination"]["total"] == 40 and fiche_g["data"][0]["fiche"]["ficheId"]
    for q in ("", "?group_by=nope"):
        r = client.get(f"/api/audits/grouped{q}")
        assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR"


def test_detail_by_fiche_logs_patch_and_soft_delete(client, day):
    rows = _rows()
    done = next(r for r in rows if r.status == "completed")
    audit_id = done.id
    detail = _ok(client.get(f"/api/audits/{audit_id}"))["data"]
    expected = generator.expected_audit(done.fiche_id)
    steps = detail["resultData"]["audit"]["results"]["steps"]
    assert [s["step_metadata"]["position"] for s in steps] == [s["position"] for s in expected["steps"]]
    for s in steps:
        assert s["human_review"] == [] and s["rerun_history"] == []
        assert isinstance(s["points_controle"], list)
    with session_scope() as s:
        n_points = len(s.scalars(select(AuditStepResultControlPoint)
                                 .where(AuditStepResultControlPoint.audit_id == audit_id)).all())
    assert sum(len(s["points_controle"]) for s in steps) == n_points > 0
    cited = [c for s in steps for p in s["points_controle"] for c in p["citations"]]
    assert cited and {"texte", "speaker", "minutage", "recording_index", "chunk_index"} <= set(cited[0])
    assert set(detail["ficheCache"]) == {"ficheId", "groupe", "agenceNom", "prospectNom", "prospectPrenom",
                                         "prospectEmail", "prospectTel"}
    # a stored step list is replaced by position (the latest view)
    with session_scope() as s:
        a = s.get(Audit, audit_id)
        rd = dict(a.result_data)
        rd["audit"] = {**rd["audit"], "results": {**rd["audit"]["results"],
                                                  "steps": [{"step_metadata": {"position": 1}, "stale": True}]}}
        a.result_data = rd
    view = _ok(client.get(f"/api/audits/{audit_id}"))["data"]["resultData"]["audit"]["results"]["steps"]
    assert len(view) == 1 and "stale" not in view[0] and view[0]["step_metadata"]["position"] == 1

    # by-fiche
    by = _ok(client.get(f"/api/audits/by-fiche/{done.fiche_id}"))
    assert by["count"] == 1 and by["data"][0]["id"] == str(audit_id)
    assert "ficheCache" not in by["data"][0] and "stepResults" not in by["data"][0]
    assert by["data"][0]["resultData"]["audit"]["results"]["steps"][0]["human_review"] == []
    assert _ok(client.get("/api/audits/by-fiche/1"))["count"] == 0
    assert client.get("/api/audits/by-fiche/12x").status_code == 400

    # logs: the audit's events, oldest first, by DB id and tracking id
    logs = _ok(client.get(f"/api/audits/{audit_id}/logs"))
    names = [e["event"] for e in logs["data"]]
    assert logs["count"] == len(names) and logs["limit"] == 200 and logs["offset"] == 0
    assert names[0] == "audit.transcription_check" and "audit.started" in names and names[-1] == "audit.completed"
    assert [e["id"] for e in logs["data"]] == sorted((e["id"] for e in logs["data"]), key=int)
    assert _ok(client.get(f"/api/audits/{audit_id}/logs?limit=2&offset=1"))["data"] == logs["data"][1:3]
    assert _ok(client.get(f"/api/audits/{audit_id}/logs?level=error"))["count"] == 0
    assert _ok(client.get(f"/api/audits/{audit_id}/logs?until=2000-01-01"))["count"] == 0
    assert client.get(f"/api/audits/{audit_id}/logs?since=yesterday").status_code == 400
    assert client.get("/api/audits/999999/logs").json() == {"success": False, "error": "Audit not found"}
    failed = next(r for r in rows if r.status == "failed")
    assert _ok(client.get(f"/api/audits/{failed.id}/logs?level=error"))["data"][-1]["event"] == "audit.failed"

    # PATCH: only given keys; validation; 404. Links point at real schedules/runs (FKs, SET NULL).
    from auditflow_dagster.db.models import AutomationRun, AutomationSchedule

    with session_scope() as s:
        sched = AutomationSchedule(name="links", schedule_type="MANUAL")
        s.add(sched)
        s.flush()
        run = AutomationRun(schedule_id=sched.id, config_snapshot={})
        s.add(run)
        s.flush()
        run_id = run.id
    r = _ok(client.patch(f"/api/audits/{audit_id}", json={"notes": "checked", "automation_run_id": str(run_id),
                                                          "trigger_user_id": None}))
    assert r["data"]["notes"] == "checked" and r["data"]["automationRunId"] == str(run_id) and r["data"]["stepResults"]
    unknown = client.patch(f"/api/audits/{audit_id}", json={"automation_run_id": str(run_id + 1000)})
    assert unknown.status_code == 400 and unknown.json()["code"] == "VALIDATION_ERROR"
    assert _ok(client.get(f"/api/audits/{audit_id}"))["data"]["automationRunId"] == str(run_id)  # nothing written
    with session_scope() as s:  # deleting the schedule cascades to the run; the audit stays, unlinked
        s.delete(s.get(AutomationSchedule, sched.id))
    assert _ok(client.get(f"/api/audits/{audit_id}"))["data"]["automationRunId"] is None
    assert _ok(client.patch(f"/api/audits/{audit_id}", json={"trigger_source": "manual"}))["data"]["notes"] == "checked"
    for body in ({"notes": 5}, {"notes": "x" * 20001}, {"deleted": "yes"}, {"automation_run_id": "1a"},
                 {"trigger_source": "x" * 51}, {"trigger_user_id": "u" * 201}):
        bad = client.patch(f"/api/audits/{audit_id}", json=body)
        assert bad.status_code == 400 and bad.json()["code"] == "VALIDATION_ERROR", body
    assert client.patch("/api/audits/999999", json={"notes": "x"}).status_code == 404
    assert client.delete("/api/audits/999999").json() == {"success": False, "error": "Audit not found"}

    # soft delete: gone from list and by-fiche, still readable by id, restorable
    deleted = _ok(client.delete(f"/api/audits/{audit_id}"))["data"]
    assert deleted["deletedAt"]
    assert _ok(client.get("/api/audits"))["pagination"]["total"] == 39
    assert _ok(client.get("/api/audits?include_deleted=true"))["pagination"]["total"] == 40
    assert _ok(client.get(f"/api/audits/by-fiche/{done.fiche_id}"))["count"] == 0
    assert _ok(client.get(f"/api/audits/{audit_id}"))["data"]["deletedAt"] == deleted["deletedAt"]
    assert _ok(client.patch(f"/api/audits/{audit_id}", json={"deleted": True}))["data"]["deletedAt"] == deleted["deletedAt"]
    assert _ok(client.patch(f"/api/audits/{audit_id}", json={"deleted": False}))["data"]["deletedAt"] is None
    assert _ok(client.get("/api/audits"))["pagination"]["total"] == 40

    # unknown stored values are coerced on read
    with session_scope() as s:
        s.execute(update(Audit).where(Audit.id == audit_id).values(niveau="WEIRD", status="odd"))
    coerced = _ok(client.get(f"/api/audits/{audit_id}"))["data"]
    assert (coerced["niveau"], coerced["status"]) == ("INSUFFISANT", "failed")


def test_bad_ids_and_empty_list(client):
    assert _ok(client.get("/api/audits"))["pagination"]["total"] == 0
    for path in ("/api/audits/abc", "/api/audits/0", "/api/audits/2x/logs"):
        r = client.get(path)
        assert r.status_code == 400 and r.json()["error"] == "Invalid audit_id"
    assert client.patch("/api/audits/x1", json={}).status_code == 400
    r = client.patch("/api/audits/1", content=b"{bad", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_JSON"
