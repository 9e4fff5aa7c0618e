"""Rerun and review routes (spec 04 §1–§3, spec 06 §4.5) against a fake Dagster GraphQL endpoint,
on a real completed audit; every refusal is a 4xx with the error envelope."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

import tests.integration.test_transcription_api as fake_module
from api.app import create_app
from auditflow_dagster.assets.checks import summary_problems
from auditflow_dagster.db.models import (
    Audit,
    AuditStepResult,
    AuditStepResultControlPoint,
    AuditStepResultHumanReview,
)
from auditflow_dagster.db.session import session_scope
from tests.fakes.server import serve_app
from tests.integration.test_reruns import build_completed_audit

FakeDagster = fake_module.FakeDagster


@pytest.fixture()
def fake_dagster(monkeypatch):
    monkeypatch.setattr(fake_module, "JOBS", (*fake_module.JOBS, "rerun_audit_step"))
    fake = FakeDagster()
    with serve_app(fake.app) as url:
        fake.url = f"{url}/graphql"
        yield fake


@pytest.fixture()
def setup(db, dagster_instance, fake_dagster):
    fiche_id, audit_id = build_completed_audit(dagster_instance)
    with TestClient(create_app(dagster_url=fake_dagster.url), raise_server_exceptions=False) as c:
        yield c, fake_dagster, fiche_id, audit_id


def _summary_ok(audit_id: int) -> None:
    with session_scope() as s:
        assert summary_problems(s, s.get(Audit, audit_id)) == []


def test_step_and_control_point_rerun_launch(setup):
    client, fake, fiche_id, audit_id = setup
    r = client.post(f"/api/audits/{audit_id}/steps/2/rerun", json={"customPrompt": "  ", "customInstructions": "strict"})
    assert r.status_code == 200, r.text
    body = r.json()
    [launch] = fake.launches
    assert body == {"success": True, "message": "Step re-run queued", "event_id": launch["run_id"],
                    "audit_id": str(audit_id), "step_position": 2}
    assert launch["job"] == "rerun_audit_step" and fake.partitions == [fiche_id]
    assert launch["run_config"] == {"ops": {"audit_step_reruns": {"config": {
        "audit_id": audit_id, "step_position": 2, "custom_prompt": "strict", "replace_human_review": False}}}}
    assert launch["tags"]["dagster/partition"] == fiche_id
    assert launch["tags"]["auditflow/rerun_audit_id"] == str(audit_id)

    r = client.post(f"/api/audits/{audit_id}/steps/1/control-points/2/rerun", json={"replaceHumanReview": True})
    assert r.status_code == 200, r.text
    assert r.json()["message"] == "Control point re-run queued" and r.json()["control_point_index"] == 2
    assert fake.launches[1]["run_config"]["ops"]["audit_step_reruns"]["config"]["control_point_index"] == 2
    assert fake.launches[1]["run_config"]["ops"]["audit_step_reruns"]["config"]["replace_human_review"] is True
    r = client.post(f"/api/audits/{audit_id}/steps/1/rerun")  # no body at all
    assert r.status_code == 200


def test_rerun_refusals(setup):
    client, fake, _, audit_id = setup
    cases = [
        ("/api/audits/abc/steps/1/rerun", {}, 400, "Invalid audit_id"),
        (f"/api/audits/{audit_id}/steps/0/rerun", {}, 400, "Invalid step_position"),
        (f"/api/audits/{audit_id}/steps/2x/rerun", {}, 400, "Invalid step_position"),
        (f"/api/audits/{audit_id}/steps/1/control-points/0/rerun", {}, 400, "Invalid control_point_index"),
        (f"/api/audits/{audit_id}/steps/1/rerun", {"customPrompt": "x" * 5001}, 400, None),
        (f"/api/audits/{audit_id}/steps/1/rerun", {"customPrompt": 12}, 400, None),
        (f"/api/audits/{audit_id}/steps/1/rerun", {"replaceHumanReview": "yes"}, 400, None),
        (f"/api/audits/{audit_id + 1000}/steps/1/rerun", {}, 404, "Audit not found"),
        (f"/api/audits/{audit_id}/steps/99/rerun", {}, 404, None),
        (f"/api/audits/{audit_id}/steps/1/control-points/99/rerun", {}, 404, None),
    ]
    for url, body, status, error in cases:
        r = client.post(url, json=body)
        assert r.status_code == status, (url, r.text)
        assert r.json()["success"] is False and r.json()["code"] in ("VALIDATION_ERROR", "NOT_FOUND")
        if error:
            assert r.json()["error"] == error
    r = client.post(f"/api/audits/{audit_id}/steps/1/rerun", content=b"{nope", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "INVALID_JSON")
    with session_scope() as s:
        s.get(Audit, audit_id).status = "running"
    r = client.post(f"/api/audits/{audit_id}/steps/1/rerun")
    assert r.status_code == 409 and r.json()["success"] is False
    r = client.patch(f"/api/audits/{audit_id}/steps/1/review", json={"conforme": "CONFORME"})
    assert r.status_code == 409
    assert fake.launches == []
    with session_scope() as s:
        s.get(Audit, audit_id).status = "completed"
    fake.fail_launch = True
    r = client.post(f"/api/audits/{audit_id}/steps/1/rerun")
    assert r.status_code == 503 and r.json()["code"] == "SERVICE_UNAVAILABLE"


def test_step_review(setup):
    client, _, _, audit_id = setup
    r = client.patch(f"/api/audits/{audit_id}/steps/1/review",
                     json={"conforme": "NON_CONFORME", "score": 0, "traite": True, "niveauConformite": "INSUFFISANT",
                           "reviewer": "qa@example.com", "reason": "missed the disclosure"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["conforme"], data["score"], data["niveauConformite"], data["stepPosition"]) == (
        "NON_CONFORME", 0, "INSUFFISANT", 1)
    assert set(data) == {"id", "auditId", "stepPosition", "stepName", "severityLevel", "isCritical", "weight", "traite",
                         "conforme", "score", "niveauConformite", "commentaireGlobal", "motsClesTrouves", "minutages",
                         "erreursTranscriptionTolerees", "totalCitations", "totalTokens", "createdAt"}
    _summary_ok(audit_id)
    with session_scope() as s:
        [rev] = s.scalars(select(AuditStepResultHumanReview)).all()
        assert (rev.kind, rev.reviewer, rev.override_conforme, rev.override_score) == (
            "step", "qa@example.com", "NON_CONFORME", 0)
        weight = s.scalar(select(AuditStepResult.weight).where(AuditStepResult.audit_id == audit_id,
                                                               AuditStepResult.step_position == 1))
    bad = [{}, {"conforme": "YES"}, {"conforme": "CONFORME", "score": -1}, {"conforme": "CONFORME", "score": 1.5},
           {"conforme": "CONFORME", "score": True}, {"conforme": "CONFORME", "traite": "no"},
           {"conforme": "CONFORME", "niveauConformite": "GREAT"}, {"conforme": "CONFORME", "reviewer": ""},
           {"conforme": "CONFORME", "reviewer": "x" * 201}, {"conforme": "CONFORME", "reason": "x" * 5001}]
    for body in bad:
        r = client.patch(f"/api/audits/{audit_id}/steps/1/review", json=body)
        assert r.status_code == 400 and r.json()["error"] == "Invalid review audit step result input", body
    r = client.patch(f"/api/audits/{audit_id}/steps/1/review", json={"conforme": "CONFORME", "score": weight + 1})
    assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR"
    r = client.patch(f"/api/audits/{audit_id}/steps/99/review", json={"conforme": "CONFORME"})
    assert r.status_code == 404
    r = client.patch(f"/api/audits/{audit_id + 1000}/steps/1/review", json={"conforme": "CONFORME"})
    assert r.status_code == 404
    with session_scope() as s:
        assert len(s.scalars(select(AuditStepResultHumanReview)).all()) == 1


def test_control_point_review_and_reads(setup):
    client, _, _, audit_id = setup
    r = client.get("/api/audits/control-points/statuses")
    assert r.json() == {"success": True, "data": {"statuses": ["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]}}
    r = client.get(f"/api/audits/{audit_id}/steps/1/control-points/1")
    assert r.status_code == 200 and r.json()["data"]["controlPointIndex"] == 1
    point = r.json()["data"]["point"]
    r = client.patch(f"/api/audits/{audit_id}/steps/1/control-points/1/review",
                     json={"statut": "NON_APPLICABLE", "commentaire": "not relevant", "reason": "n/a"})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"auditId": str(audit_id), "stepPosition": 1, "controlPointIndex": 1, "point": point,
                                "statut": "NON_APPLICABLE", "commentaire": "not relevant"}
    _summary_ok(audit_id)
    with session_scope() as s:
        [rev] = s.scalars(select(AuditStepResultHumanReview)).all()
        assert (rev.kind, rev.control_point_index, rev.override_statut) == ("control_point", 1, "NON_APPLICABLE")
        statuts = list(s.scalars(select(AuditStepResultControlPoint.statut).where(
            AuditStepResultControlPoint.audit_id == audit_id, AuditStepResultControlPoint.step_position == 1)))
    assert statuts[0] == "NON_APPLICABLE"
    for body in [{}, {"reason": "x"}, {"statut": "MAYBE"}, {"commentaire": "x" * 20001}, {"commentaire": 3}]:
        r = client.patch(f"/api/audits/{audit_id}/steps/1/control-points/1/review", json=body)
        assert r.status_code == 400 and r.json()["error"] == "Invalid review audit control point input", body
    assert client.patch(f"/api/audits/{audit_id}/steps/1/control-points/99/review",
                        json={"statut": "PRESENT"}).status_code == 404
    assert client.get(f"/api/audits/{audit_id}/steps/1/control-points/99").status_code == 404
    assert client.get(f"/api/audits/{audit_id + 1000}/steps/1/control-points/1").status_code == 404
    assert client.get(f"/api/audits/{audit_id}/steps/1/control-points/x").status_code == 400
