"""Tools mode (``use_rlm``) through the asset chain on a real PostgreSQL (spec 03 §5, §2.6, §4).

The LLM is the real OpenAI SDK against the fake Responses API: for every step it searches, fetches
the best chunks, then answers with one fabricated quote and one verbatim quote. Evidence gating in
the finalizer must drop the fabricated one, exactly as in prompt mode, and every tool result the
model received must be what the tools compute on the audit's frozen snapshot timeline.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from typing import Any

import pytest
from dagster import materialize
from sqlalchemy import select

from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.core import privacy
from auditflow_dagster.core.evidence import POINT_NOTE, norm
from auditflow_dagster.core.prompts import build_tools_system_prompt
from auditflow_dagster.core.transcript_tools import (
    FETCH_TOOL,
    SEARCH_TOOL,
    ToolLimits,
    run_tool_call,
    tool_output_json,
)
from auditflow_dagster.db import audits as audit_db
from auditflow_dagster.db.configs import ensure_bundled_config, load_config
from auditflow_dagster.db.models import (
    Audit,
    AuditStepResult,
    AuditStepResultCitation,
    AuditStepResultControlPoint,
    Event,
    FicheCache,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import OFFLINE_MODEL, LlmResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator
from tests.fakes.openai_server import FakeOpenAI, function_call, response_object
from tests.fakes.server import serve_app

DAY = "2026-03-11"
CHAIN = [fiche_details, transcripts, audit_step_results, audits]
KEY = "sk-test-fake-key-abcdef123456"
FABRICATED = "je vous confirme que vous avez signé le mandat de prélèvement hier soir"
RUN_CONFIG = {"ops": {"audit_step_results": {"config": {"use_rlm": True}}}}


def _resources(llm: LlmResource) -> dict:
    return {"crm": CrmResource(mode="sample"), "stt": SttResource(mode="sample"), "llm": llm, "db": DatabaseResource()}


@pytest.fixture()
def fiche_id(db, dagster_instance) -> str:
    with session_scope() as s:
        ensure_bundled_config(s)
    result = materialize([sales_list], partition_key=DAY, instance=dagster_instance,
                         resources=_resources(LlmResource(mode="offline")))
    assert result.success
    day = dt.date.fromisoformat(DAY)
    fiches = [f["id"] for f in generator.sales_list_payload(day, day, False)["fiches"]]
    return next(f for f in fiches if generator.expected_audit(f)["auditable"])


def _points(user: str) -> list[str]:
    block = user.split("POINTS DE CONTRÔLE", 1)[1].split("\n\n", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\d+\. (.*)$", block, flags=re.M)]


def _real_quote(chunk: dict[str, Any]) -> str:
    """The longest line of a fetched chunk, without its speaker label (a verbatim quote)."""
    lines = [line.split(": ", 1)[-1] for line in chunk["full_text"].split("\n")]
    return max(lines, key=len)


def _citation(chunk: dict[str, Any], texte: str) -> dict[str, Any]:
    return {"texte": texte, "minutage": chunk["minutage"], "minutage_secondes": chunk["minutage_secondes"],
            "speaker": "speaker_0", "recording_index": chunk["recording_index"], "chunk_index": chunk["chunk_index"],
            "recording_date": chunk["recording_date"], "recording_time": chunk["recording_time"],
            "recording_url": chunk["recording_url"]}


class ScriptedModel:
    """Per conversation: search (round 1), fetch the two best hits (round 2), answer (round 3)."""

    def __init__(self) -> None:
        self.final: dict[str, dict[str, Any]] = {}  # step header → answer sent

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        items = payload["input"]
        user = next(i["content"] for i in items if i.get("role") == "user")
        header = user[user.index("ÉTAPE"):].split("\n", 1)[0]
        calls = {i["call_id"]: i for i in items if i.get("type") == "function_call"}
        outs = [(calls[i["call_id"]]["name"], json.loads(i["output"])) for i in items
                if i.get("type") == "function_call_output"]
        round_no = 1 + len(outs)  # this model makes exactly one tool call per round
        expected_choice = {1: "required", 2: "auto", 3: "auto"}[round_no]
        assert payload["tool_choice"] == expected_choice, (header, payload["tool_choice"], round_no)
        if not outs:
            keywords = user.split("MOTS-CLÉS À RECHERCHER : ", 1)[1].split("\n", 1)[0]
            query = f"{header.split(' : ', 1)[1]} {keywords}"
            return response_object("", model=payload["model"], tool_calls=[
                function_call(SEARCH_TOOL, {"query": query, "maxResults": 5, "minTermLength": 4})])
        if len(outs) == 1:
            matches = outs[0][1]["matches"]
            assert matches, header
            refs = [{"recording_index": m["recording_index"], "chunk_index": m["chunk_index"]} for m in matches[:2]]
            return response_object("", model=payload["model"], tool_calls=[
                function_call(FETCH_TOOL, {"chunks": refs, "includeNeighbors": 0, "maxChars": None})])
        fetched = outs[1][1]["chunks"]
        first = fetched[0]
        points = _points(user)
        answer_points = []
        for i, point in enumerate(points):
            cites = [_citation(first, FABRICATED)] if i == 0 else [_citation(first, _real_quote(first))] if i == 1 else []
            answer_points.append({"point": point, "statut": "PRESENT" if cites else "ABSENT", "commentaire": "Vu.",
                                  "citations": cites, "minutages": [c["minutage"] for c in cites],
                                  "erreur_transcription_notee": False, "variation_phonetique_utilisee": None})
        weight = int(re.search(r"Poids : (\d+) points", user).group(1))
        answer = {"traite": True, "conforme": "CONFORME", "minutages": [first["minutage"]], "score": weight,
                  "points_controle": answer_points, "mots_cles_trouves": [], "commentaire_global": "Tout est dit.",
                  "niveau_conformite": "EXCELLENT", "erreurs_transcription_tolerees": 0}
        self.final[header] = answer
        return response_object(json.dumps(answer, ensure_ascii=False), model=payload["model"], usage=(900, 100))


def test_tools_mode_run_is_gated_like_prompt_mode(fiche_id, dagster_instance):
    fake = FakeOpenAI(api_key=KEY)
    model = ScriptedModel()
    fake.handler = model
    with serve_app(fake.app) as url:
        llm = LlmResource(mode="openai", api_key=KEY, base_url=url + "/v1", model="gpt-5.2", max_retries=0)
        result = materialize(CHAIN, partition_key=fiche_id, instance=dagster_instance, resources=_resources(llm),
                             run_config=RUN_CONFIG)
    assert result.success
    assert fake.errors == []

    with session_scope() as s:
        audit = s.scalar(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                         .where(FicheCache.fiche_id == fiche_id))
        snapshot = audit_db.get_snapshot(s, audit.id)
        timeline = snapshot.timeline
        _, spec = load_config(s, audit.audit_config_id)
        steps = {r.step_position: r for r in s.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit.id))}
        points = {(p.step_position, p.control_point_index): p for p in s.scalars(
            select(AuditStepResultControlPoint).where(AuditStepResultControlPoint.audit_id == audit.id))}
        cites = list(s.scalars(select(AuditStepResultCitation).where(AuditStepResultCitation.audit_id == audit.id)))
        events = list(s.scalars(select(Event).where(Event.channels.any(f"fiche-{fiche_id}"), Event.name.like("audit.%"))))
    n_steps = len(spec.steps)

    # --- the conversations: 3 rounds per step, tool results computed on the frozen snapshot timeline
    bodies = [r["json"] for r in fake.requests]
    assert len(bodies) == 3 * n_steps and len(model.final) == n_steps
    assert sum(1 for b in bodies if b["tool_choice"] == "required") == n_steps
    system = build_tools_system_prompt(spec)
    checked = 0
    for body in bodies:
        assert body["input"][0] == {"role": "system", "content": system}
        assert "CHRONOLOGIE" not in body["input"][1]["content"]  # no transcript in the prompt
        calls = {i["call_id"]: i for i in body["input"] if i.get("type") == "function_call"}
        for item in body["input"]:
            if item.get("type") == "function_call_output":
                call = calls[item["call_id"]]
                # the snapshot is the redacted view (AUDITFLOW_REDACT_PII, default); the tools also see
                # its recording URLs without the phone numbers of their file names
                expected = run_tool_call(privacy.tools_view(timeline), call["name"], call["arguments"], ToolLimits())
                assert item["output"] == tool_output_json(expected)
                checked += 1
    assert checked == n_steps * (1 + 2)  # round 2 sees 1 output, round 3 sees 2

    # --- gating: the fabricated quote is gone and its point downgraded; the verbatim quote stays
    assert audit.status == "completed"
    gating = audit.result_data["metadata"]["evidence_gating"]
    assert gating["removed_citations"] == n_steps
    assert gating["downgraded_control_points"] == n_steps
    assert all(norm(FABRICATED) not in norm(c.texte) for c in cites)
    assert len(cites) == n_steps  # one verbatim quote per step survives
    for pos, st in ((s.position, s) for s in spec.steps):
        first = points[(pos, 1)]
        assert first.statut == "ABSENT" and POINT_NOTE in first.commentaire
        assert points[(pos, 2)].statut == "PRESENT"
        row = steps[pos]
        assert row.score < st.weight and row.conforme != "CONFORME"  # lowered to what the evidence supports
        assert row.total_tokens == 1500 + 1500 + 1000  # usage summed over the three rounds
    # --- approach recorded on the audit and every audit event
    approach = {"use_rlm": True, "transcript_mode": "tools"}
    assert audit.use_rlm is True
    assert audit.result_data["audit"]["approach"] == approach
    assert audit.result_data["metadata"]["approach"] == approach
    with_approach = [e for e in events if "approach" in e.payload]
    assert {e.name for e in with_approach} >= {"audit.started", "audit.step_started", "audit.step_completed",
                                                "audit.completed"}
    assert all(e.payload["approach"] == approach for e in with_approach)


def test_offline_tools_mode_demo_path(fiche_id, dagster_instance):
    """The offline twin in tools mode searches and fetches through the same tools; quotes stay exact and,
    on the synthetic calls, the verdict is the ground truth (what it fetched was enough)."""
    result = materialize(CHAIN, partition_key=fiche_id, instance=dagster_instance,
                         resources=_resources(LlmResource(mode="offline")), run_config=RUN_CONFIG)
    assert result.success
    with session_scope() as s:
        audit = s.scalar(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                         .where(FicheCache.fiche_id == fiche_id))
        models = {r.raw_result.get("model") for r in s.scalars(
            select(AuditStepResult).where(AuditStepResult.audit_id == audit.id))}
    assert audit.status == "completed"
    assert audit.result_data["audit"]["approach"] == {"use_rlm": True, "transcript_mode": "tools"}
    assert audit.result_data["metadata"]["evidence_gating"]["removed_citations"] == 0
    expected = generator.expected_audit(fiche_id)["compliance"]
    assert (Decimal(audit.score_percentage), audit.niveau) == (expected.score_percentage, expected.niveau)
    assert models <= {OFFLINE_MODEL, None}
