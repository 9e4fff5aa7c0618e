"""Personal data never reaches the LLM (issue 11 §1, §2, "What it must show" bullet 2).

Audits of synthetic calls that contain personal data run through the asset chain on a real
PostgreSQL, in prompt mode and in tools mode, with the real OpenAI SDK against the fake Responses
API; every request body the server received is searched for each call's IBAN, card number, NIR,
phone numbers and e-mail (as said, and with spaces removed). The values come from the generator
and are checked to be in the stored transcript, which keeps the original.

The bundled checklist has no "bank details must not be read back aloud" step: its closest step, 8
"Coordonnées bancaires et prélèvement", asks the opposite (collect the IBAN and BIC). So the audits
use the bundled checklist plus one step, *Confidentialité des coordonnées bancaires*, whose only
control point is that bank details are never said aloud. The fake model's scripted answer judges it
from the prompt's facts section only — the digits are gone from everything it receives: an IBAN
spoken → point ABSENT, step NON_CONFORME; none → NON_APPLICABLE (nothing to check), CONFORME.
For step 8 it quotes the client's line « c'est [IBAN] » it was shown, and evidence gating, which
compares quotes with the same redacted text, keeps that quote.

The audit and fiche chats are redacted too (context, prospect e-mail/phone, conversation), reruns
read the redacted snapshot (one frozen before redaction is redacted for the rerun), and with
``AUDITFLOW_REDACT_PII=0`` the audit is exactly what it was before redaction existed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dagster import materialize
from sqlalchemy import select

from api.app import create_app
from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.checks import citation_problems
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.reruns import RerunConfig, execute_rerun
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.core.audit_config import AuditStepSpec
from auditflow_dagster.core.redaction import FACTS_HEADER
from auditflow_dagster.core.timeline import build_timeline, timeline_text
from auditflow_dagster.core.transcript_tools import FETCH_TOOL, SEARCH_TOOL
from auditflow_dagster.db import audits as audit_db
from auditflow_dagster.db.configs import import_config
from auditflow_dagster.db.models import (
    Audit,
    AuditSnapshot,
    AuditStepResult,
    AuditStepResultCitation,
    ChatMessage,
    FicheCache,
    Recording,
    RecordingTranscriptionChunk,
)
from auditflow_dagster.db.recordings import timeline_input
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import (
    LlmResource,
    StepCallResult,
    validate_step_output,
)
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator
from auditflow_dagster.settings import get_settings
from tests.fakes.openai_server import FakeOpenAI, function_call, response_object
from tests.fakes.server import serve_app

DAY = "2026-03-17"
KEY = "sk-test-fake-key-abcdef123456"
CHAIN = [fiche_details, transcripts, audit_step_results, audits]
BANK_STEP = 8  # bundled "Coordonnées bancaires et prélèvement"
SECRECY_STEP = 11
SECRECY = AuditStepSpec(
    position=SECRECY_STEP,
    name="Confidentialité des coordonnées bancaires",
    description="Les coordonnées bancaires ne doivent pas être relues ni dictées à voix haute.",
    prompt=("Vérifie qu'aucune coordonnée bancaire (IBAN, RIB) n'est énoncée à voix haute pendant l'appel, ni par "
            "le conseiller ni par le client : elle se transmet par un canal sécurisé."),
    control_points=["Coordonnées bancaires jamais énoncées à voix haute pendant l'appel"],
    keywords=["IBAN", "RIB", "coordonnées bancaires"],
    severity_level="HIGH",
    weight=5,
)
IBAN_FACT = "un IBAN (coordonnées bancaires) a été énoncé"
KINDS = ("iban", "carte", "nir", "mobile", "email")


def _resources(llm: LlmResource) -> dict[str, Any]:
    return {"crm": CrmResource(mode="sample"), "stt": SttResource(mode="sample"), "llm": llm, "db": DatabaseResource()}


def _pick_fiches() -> dict[str, str]:
    """``{"full": …, "rest": …, "no_iban": …}``: auditable fiches of DAY; ``full`` and ``rest`` read an
    IBAN and together say every kind of personal data, ``no_iban`` has calls but reads none."""
    day = dt.date.fromisoformat(DAY)
    ids = [f["id"] for f in generator.fiches_for_day(day, include_recordings=False)
           if generator.expected_audit(f["id"])["auditable"]]
    said = {f: generator.personal_data(f)["said"] for f in ids}
    with_iban = sorted((f for f in ids if "iban" in said[f]), key=lambda f: (-len(said[f]), f))
    full = with_iban[0]
    rest = max((f for f in with_iban if f != full), key=lambda f: (len(set(said[f]) - set(said[full])), f))
    assert set(KINDS) <= said[full] | said[rest], "the day's calls must say every kind"
    no_iban = next(f for f in ids if "iban" not in said[f])
    return {"full": full, "rest": rest, "no_iban": no_iban}


@pytest.fixture()
def fiches(db, dagster_instance) -> dict[str, Any]:
    """The day's sales list, the three fiches, and the bundled checklist + the secrecy step."""
    assert materialize([sales_list], partition_key=DAY, instance=dagster_instance,
                       resources=_resources(LlmResource(mode="offline"))).success
    picked = _pick_fiches()
    spec = generator.load_checklist()
    spec = spec.model_copy(update={"name": "Checklist + confidentialité bancaire", "run_automatically": False,
                                   "steps": [*spec.steps, SECRECY]})
    with session_scope() as s:
        config_id = import_config(s, spec).id
    return {**picked, "config_id": config_id}


@pytest.fixture()
def redaction(monkeypatch) -> Iterator[None]:
    monkeypatch.delenv("AUDITFLOW_REDACT_PII", raising=False)
    get_settings.cache_clear()
    assert get_settings().redact_pii is True  # the default
    yield
    get_settings.cache_clear()


# --------------------------------------------------------------------------------------------- #
# The scripted model: answers from what it is shown, and only from that
# --------------------------------------------------------------------------------------------- #


def _user(items: list[dict[str, Any]]) -> str:
    return next(i["content"] for i in items if i.get("role") == "user")


def _points(user: str) -> list[str]:
    block = user.rsplit("POINTS DE CONTRÔLE (", 1)[1].split("\n\n", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\d+\. (.*)$", block, flags=re.M)]


def _iban_line_in_text(text: str) -> tuple[int, int, str] | None:
    """``(recording_index, chunk_index, quote)`` of the first transcript line holding ``[IBAN]`` in a
    prompt-mode timeline (1-based labels ``Enregistrement #X`` / ``Chunk Y``)."""
    rec = chunk = None
    for line in text.split("\n"):
        if m := re.fullmatch(r"Enregistrement #(\d+)", line):
            rec = int(m.group(1)) - 1
        elif m := re.fullmatch(r"─── Chunk (\d+) ───", line):
            chunk = int(m.group(1)) - 1
        elif "[IBAN]" in line and line.startswith("speaker_") and rec is not None and chunk is not None:
            return rec, chunk, line.split(": ", 1)[1]
    return None


def _iban_line_in_chunks(chunks: list[dict[str, Any]]) -> tuple[int, int, str] | None:
    for c in chunks:
        for line in c["full_text"].split("\n"):
            if "[IBAN]" in line:
                return c["recording_index"], c["chunk_index"], line.split(": ", 1)[1]
    return None


def _point(point: str, statut: str, citations: list[dict[str, Any]], commentaire: str) -> dict[str, Any]:
    return {"point": point, "statut": statut, "commentaire": commentaire, "citations": citations,
            "minutages": [c["minutage"] for c in citations], "erreur_transcription_notee": False,
            "variation_phonetique_utilisee": None}


def _citation(rec: int, chunk: int, quote: str) -> dict[str, Any]:
    return {"texte": quote, "minutage": "00:00", "minutage_secondes": 0, "speaker": "speaker_1",
            "recording_index": rec, "chunk_index": chunk, "recording_date": "N/A", "recording_time": "N/A",
            "recording_url": "N/A"}


class ScriptedModel:
    """Prompt mode: answers at once. Tools mode: search (round 1), fetch the top hits (round 2), answer.

    Step 8: point 1 PRESENT quoting the line with ``[IBAN]`` it read, if any. Secrecy step: decided
    from the facts section of the user message. Other steps: every point ABSENT.
    """

    def __init__(self) -> None:
        self.verdicts: dict[str, str] = {}  # "step header" → conforme sent

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        items = payload["input"]
        user = _user(items)
        assert user.count(FACTS_HEADER) == 1, "the facts section is in every step prompt"
        step_line = re.search(r"^ÉTAPE (\d+)/\d+ : (.*)$", user, flags=re.M)
        header, position = step_line.group(0), int(step_line.group(1))
        tools = "tools" in payload
        if tools:
            calls = {i["call_id"]: i for i in items if i.get("type") == "function_call"}
            outs = [(calls[i["call_id"]]["name"], json.loads(i["output"])) for i in items
                    if i.get("type") == "function_call_output"]
            if not outs:
                keywords = user.split("MOTS-CLÉS À RECHERCHER : ", 1)[1].split("\n", 1)[0]
                return response_object("", model=payload["model"], tool_calls=[
                    function_call(SEARCH_TOOL, {"query": f"{step_line.group(2)} {keywords}", "maxResults": 6,
                                                "minTermLength": 3})])
            if len(outs) == 1:
                refs = [{"recording_index": m["recording_index"], "chunk_index": m["chunk_index"]}
                        for m in outs[0][1]["matches"]]
                if refs:
                    return response_object("", model=payload["model"], tool_calls=[
                        function_call(FETCH_TOOL, {"chunks": refs, "includeNeighbors": 0, "maxChars": None})])
            seen = [c for name, out in outs if name == FETCH_TOOL for c in out["chunks"]]
            iban_line = _iban_line_in_chunks(seen)
        else:
            iban_line = _iban_line_in_text(user)
        points = _points(user)
        answers = [_point(p, "ABSENT", [], "Non trouvé.") for p in points]
        conforme, score = "NON_CONFORME", 0
        if position == BANK_STEP and iban_line is not None:
            answers[0] = _point(points[0], "PRESENT", [_citation(*iban_line)], "Le client donne son IBAN.")
        elif position == SECRECY_STEP:
            facts = user[user.index(FACTS_HEADER):]
            if IBAN_FACT in facts:
                answers = [_point(points[0], "ABSENT", [], "D'après les faits détectés, un IBAN a été lu à voix haute.")]
            else:
                answers = [_point(points[0], "NON_APPLICABLE", [], "Aucune coordonnée bancaire énoncée.")]
                conforme, score = "CONFORME", SECRECY.weight
        self.verdicts[header] = conforme
        answer = {"traite": True, "conforme": conforme, "minutages": [], "score": score, "points_controle": answers,
                  "mots_cles_trouves": [], "commentaire_global": "Analyse scriptée.",
                  "niveau_conformite": "EXCELLENT" if conforme == "CONFORME" else "INSUFFISANT",
                  "erreurs_transcription_tolerees": 0}
        return response_object(json.dumps(answer, ensure_ascii=False), model=payload["model"], usage=(900, 100))


# --------------------------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------------------------- #


def _audit(fiches: dict[str, Any], mode: str, fake: FakeOpenAI, dagster_instance) -> None:
    run_config = {"ops": {"audit_step_results": {"config": {"audit_config_ids": [fiches["config_id"]],
                                                            "use_rlm": mode == "tools"}}}}
    with serve_app(fake.app) as url:
        llm = LlmResource(mode="openai", api_key=KEY, base_url=url + "/v1", model="gpt-5.2", max_retries=0)
        for key in ("full", "rest", "no_iban"):
            assert materialize(CHAIN, partition_key=fiches[key], instance=dagster_instance, resources=_resources(llm),
                               run_config=run_config).success
    assert fake.errors == []


def _secrets(fiche_ids: list[str]) -> list[str]:
    """Every personal value of these fiches' calls, as said or stored."""
    out: list[str] = []
    for f in fiche_ids:
        p = generator.personal_data(f)
        out.extend([*(p[k] for k in KINDS), *p["phones"]])
    return out


def _leaks(blob: str, secrets: list[str]) -> list[str]:
    flat = blob.replace(" ", "")
    return [v for v in secrets if v in blob or v.replace(" ", "") in flat]


def _stored_text(fiche_id: str) -> str:
    with session_scope() as s:
        return "\n".join(s.scalars(
            select(RecordingTranscriptionChunk.full_text).join(Recording, Recording.id == RecordingTranscriptionChunk.recording_id)
            .join(FicheCache, FicheCache.id == Recording.fiche_cache_id).where(FicheCache.fiche_id == fiche_id)))


def _check_no_leak(fake: FakeOpenAI, fiches: dict[str, Any]) -> None:
    ids = [fiches[k] for k in ("full", "rest", "no_iban")]
    # the stored transcript keeps the original: the values are really in the calls
    for f in ids:
        stored = _stored_text(f)
        said = generator.personal_data(f)["said"]
        for key in said - {"service_tel"}:
            assert generator.personal_data(f)[key] in stored, (f, key)
    assert set(KINDS) <= generator.personal_data(fiches["full"])["said"] | generator.personal_data(fiches["rest"])["said"]
    secrets = _secrets(ids)
    assert fake.requests
    for req in fake.requests:
        blob = json.dumps(req["json"], ensure_ascii=False)
        assert _leaks(blob, secrets) == [], "personal data sent to the LLM"


def _steps(fiche_id: str) -> tuple[Audit, dict[int, AuditStepResult], list[AuditStepResultCitation], Any]:
    with session_scope() as s:
        audit = s.scalar(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                         .where(FicheCache.fiche_id == fiche_id))
        rows = {r.step_position: r for r in s.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit.id))}
        cites = list(s.scalars(select(AuditStepResultCitation).where(AuditStepResultCitation.audit_id == audit.id)))
        snap = audit_db.get_snapshot(s, audit.id)
        s.expunge_all()
        return audit, rows, cites, snap


def _check_verdicts(fiches: dict[str, Any]) -> None:
    for key in ("full", "rest", "no_iban"):
        audit, rows, cites, snap = _steps(fiches[key])
        assert audit.status == "completed" and len(rows) == 11
        spoken = {f["kind"] for f in audit.result_data["metadata"]["personal_data"]["spoken"]}
        assert audit.result_data["metadata"]["personal_data"]["redacted"] is True
        if key == "no_iban":
            assert rows[SECRECY_STEP].conforme == "CONFORME" and rows[SECRECY_STEP].score == SECRECY.weight
            assert "IBAN" not in spoken and "[IBAN]" not in snap.timeline_text
            continue
        # the verdict is reached from the facts section alone
        assert rows[SECRECY_STEP].conforme == "NON_CONFORME" and rows[SECRECY_STEP].score == 0
        assert "IBAN" in spoken and "[IBAN]" in snap.timeline_text
        # the quote of the redacted line passed evidence gating (same text the LLM saw)
        kept = [c for c in cites if c.step_position == BANK_STEP and "[IBAN]" in c.texte]
        assert len(kept) == 1 and kept[0].control_point_index == 1
        assert audit.result_data["metadata"]["evidence_gating"]["removed_citations"] == 0


# --------------------------------------------------------------------------------------------- #
# Tests
# --------------------------------------------------------------------------------------------- #


def test_prompt_mode_sends_no_personal_data_and_chat_is_redacted(fiches, redaction, dagster_instance, monkeypatch):
    fake = FakeOpenAI(api_key=KEY)
    model = ScriptedModel()
    fake.handler = model
    _audit(fiches, "prompt", fake, dagster_instance)
    assert len(fake.requests) == 3 * 11
    for req in fake.requests:
        (item,) = req["json"]["input"]
        assert "CHRONOLOGIE" in item["content"] and item["content"].count(FACTS_HEADER) == 1  # full or excerpt
    _check_no_leak(fake, fiches)
    _check_verdicts(fiches)
    with session_scope() as s:  # the snapshot froze the redacted view; the stored chunks keep the original
        row = s.scalar(select(FicheCache).where(FicheCache.fiche_id == fiches["full"]))
        original = build_timeline(timeline_input(s, row.id))
    _, _, _, snap = _steps(fiches["full"])
    secrets = _secrets([fiches["full"]])
    # recording URLs stay original in the snapshot (citations link the audio from there; the tools mask them)
    frozen = [[r["from_number"], r["to_number"], *(c["full_text"] for c in r["chunks"])] for r in snap.timeline]
    assert _leaks(json.dumps(frozen, ensure_ascii=False), secrets) == []
    assert _leaks(snap.timeline_text, secrets) == []
    assert [r["recording_url"] for r in snap.timeline] == [r["recording_url"] for r in original]
    assert _leaks(timeline_text(original), secrets)  # what it would have been

    # --- chat: the context, the fiche's e-mail/phone and the conversation are redacted
    chat = FakeOpenAI(api_key=KEY)
    chat.output_text = "Le client a lu son IBAN à voix haute."
    p = generator.personal_data(fiches["full"])
    question = f"Le client a-t-il dit {p['iban']} ou son numéro {p['mobile']} ?"
    audit, _, _, _ = _steps(fiches["full"])
    with serve_app(chat.app) as chat_url:
        for k, v in {"AUDITFLOW_LLM": "openai", "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": chat_url + "/v1",
                     "AUDITFLOW_OPENAI_MAX_RETRIES": "0"}.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        with serve_app(create_app(dagster_url="http://127.0.0.1:9/graphql")) as api:
            for path in (f"/api/audits/{audit.id}/chat", f"/api/fiches/{fiches['full']}/chat"):
                with httpx.Client(timeout=30) as client:
                    r = client.post(api + path, json={"message": question})
                    assert r.status_code == 200 and "[DONE]" in r.text, r.text
    assert len(chat.requests) == 2 and chat.errors == []
    for req in chat.requests:
        body = req["json"]
        assert _leaks(json.dumps(body, ensure_ascii=False), _secrets([fiches["full"]])) == []
        assert "[IBAN]" in body["instructions"] and body["instructions"].count(FACTS_HEADER) == 1
        assert IBAN_FACT in body["instructions"]
        assert body["input"][-1]["content"] == "Le client a-t-il dit [IBAN] ou son numéro [TEL] ?"
    fiche_context = chat.requests[1]["json"]["instructions"]
    assert "- Email : [EMAIL]" in fiche_context and "- Téléphone : [TEL]" in fiche_context
    with session_scope() as s:  # what the user typed is stored as typed (read access is the API's business)
        assert question in s.scalars(select(ChatMessage.content).where(ChatMessage.role == "user")).all()


def test_tools_mode_sends_no_personal_data(fiches, redaction, dagster_instance):
    fake = FakeOpenAI(api_key=KEY)
    model = ScriptedModel()
    fake.handler = model
    _audit(fiches, "tools", fake, dagster_instance)
    bodies = [r["json"] for r in fake.requests]
    assert bodies and all("tools" in b for b in bodies)
    outputs = [json.loads(i["output"]) for b in bodies for i in b["input"] if i.get("type") == "function_call_output"]
    fetched = [c for o in outputs for c in o.get("chunks", [])]
    assert any("[IBAN]" in c["full_text"] for c in fetched)  # the tools returned the redacted text
    assert all("[TEL]" in c["recording_url"] for c in fetched)  # and no number from the file names
    for b in bodies:
        assert "CHRONOLOGIE" not in _user(b["input"])
    _check_no_leak(fake, fiches)
    _check_verdicts(fiches)


def test_setting_off_is_the_audit_of_before(fiches, dagster_instance, monkeypatch):
    monkeypatch.setenv("AUDITFLOW_REDACT_PII", "0")
    get_settings.cache_clear()
    try:
        fake = FakeOpenAI(api_key=KEY)

        def answer(payload: dict[str, Any]) -> dict[str, Any]:
            user = _user(payload["input"])
            assert FACTS_HEADER not in user
            points = _points(user)
            out = {"traite": False, "conforme": "NON_CONFORME", "minutages": [], "score": 0,
                   "points_controle": [_point(p, "ABSENT", [], "-") for p in points], "mots_cles_trouves": [],
                   "commentaire_global": "-", "niveau_conformite": "INSUFFISANT", "erreurs_transcription_tolerees": 0}
            return response_object(json.dumps(out, ensure_ascii=False), model=payload["model"])

        fake.handler = answer
        _audit(fiches, "prompt", fake, dagster_instance)
        assert fake.errors == []
        audit, _, _, snap = _steps(fiches["full"])
        with session_scope() as s:
            row = s.scalar(select(FicheCache).where(FicheCache.fiche_id == fiches["full"]))
            original = build_timeline(timeline_input(s, row.id))
        assert snap.timeline == original and snap.timeline_text == timeline_text(original)
        assert "personal_data" not in audit.result_data["metadata"]
        iban = generator.personal_data(fiches["full"])["iban"]
        assert any(iban in json.dumps(r["json"], ensure_ascii=False) for r in fake.requests)  # sent as before
    finally:
        get_settings.cache_clear()


class CapturingAuditor:
    """A rerun's analyzer: records what it is sent; step 8 point 1 PRESENT quoting the ``[IBAN]`` line."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.timelines: list[list[dict[str, Any]]] = []

    async def analyze_step(self, *, prompt, config, step, timeline, **_):
        self.prompts.append(prompt)
        self.timelines.append(timeline)
        points = [_point(p, "ABSENT", [], "-") for p in step.control_points]
        points[0] = _point(step.control_points[0], "PRESENT", [_citation(*_iban_line_in_text(prompt))], "IBAN donné.")
        out = {"traite": True, "conforme": "PARTIEL", "minutages": [], "score": 2, "points_controle": points,
               "mots_cles_trouves": [], "commentaire_global": "-", "niveau_conformite": "ACCEPTABLE",
               "erreurs_transcription_tolerees": 0}
        return StepCallResult(output=validate_step_output(out), model="capture")


def test_reruns_see_the_redacted_snapshot_even_one_frozen_before_redaction(fiches, redaction, dagster_instance):
    fiche_id = fiches["full"]
    run_config = {"ops": {"audit_step_results": {"config": {"audit_config_ids": [fiches["config_id"]]}}}}
    assert materialize(CHAIN, partition_key=fiche_id, instance=dagster_instance,
                       resources=_resources(LlmResource(mode="offline")), run_config=run_config).success
    audit, _, _, snap = _steps(fiche_id)
    assert audit.status == "completed"
    secrets = _secrets([fiche_id])

    def rerun(event_id: str) -> list[AuditStepResultCitation]:
        auditor = CapturingAuditor()
        out = execute_rerun(RerunConfig(audit_id=audit.id, step_position=BANK_STEP), auditor=auditor,
                            event_id=event_id, fiche_id=fiche_id)
        assert out["status"] == "applied"
        (prompt,) = auditor.prompts
        assert _leaks(prompt, secrets) == [] and prompt.count(FACTS_HEADER) == 1 and IBAN_FACT in prompt
        assert _leaks(json.dumps(auditor.timelines[0], ensure_ascii=False), secrets) == []
        _, _, cites, _ = _steps(fiche_id)
        return [c for c in cites if c.step_position == BANK_STEP]

    # a snapshot frozen with redaction on
    kept = rerun("evt-redacted")
    assert [c.texte for c in kept if c.control_point_index == 1] == [_iban_line_in_text(snap.timeline_text)[2]]

    # a snapshot frozen before redaction existed: redacted for the rerun's prompt and gating
    with session_scope() as s:
        row = s.scalar(select(FicheCache).where(FicheCache.fiche_id == fiche_id))
        original = build_timeline(timeline_input(s, row.id))
        legacy = s.get(AuditSnapshot, audit.id)
        legacy.timeline, legacy.timeline_text = original, timeline_text(original)
    kept = rerun("evt-legacy")
    assert any("[IBAN]" in c.texte for c in kept if c.control_point_index == 1)  # gating kept the quote
    with session_scope() as s:  # and the stored-citation check accepts it
        assert citation_problems(s, s.get(Audit, audit.id), get_settings().audit_evidence_min_quote_chars)[1] == []
        assert s.get(AuditSnapshot, audit.id).timeline == original  # the frozen snapshot itself is left alone
