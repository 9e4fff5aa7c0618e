"""Chat routes (spec 04 §6, spec 06 §4.7) over real HTTP: the API served by uvicorn, the real
OpenAI SDK against the fake Responses API (streamed), a completed audit built with the offline
twins on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dagster import materialize
from sqlalchemy import func, select, update
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.core import chat as core
from auditflow_dagster.db import chat as chat_db
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import (
    Audit,
    AuditSnapshot,
    ChatConversation,
    ChatMessage,
    FicheCache,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator
from auditflow_dagster.settings import get_settings
from tests.fakes.openai_server import FakeOpenAI, StreamReply
from tests.fakes.server import serve_app

DAY = "2026-03-13"
KEY = "sk-test-fake-key-abcdef123456"
UNREACHABLE_DAGSTER = "http://127.0.0.1:9/graphql"


@pytest.fixture()
def audited(db, dagster_instance) -> dict[str, Any]:
    """One completed audit of an auditable fiche (offline twins), with its frozen timeline."""
    with session_scope() as s:
        ensure_bundled_config(s)
    resources = {"crm": CrmResource(mode="sample"), "stt": SttResource(mode="sample"),
                 "llm": LlmResource(mode="offline"), "db": DatabaseResource()}
    assert materialize([sales_list], partition_key=DAY, instance=dagster_instance, resources=resources).success
    fiche_id = next(f for f in dagster_instance.get_dynamic_partitions("fiches") if generator.expected_audit(f)["auditable"])
    assert materialize([fiche_details, transcripts, audit_step_results, audits], partition_key=fiche_id,
                       instance=dagster_instance, resources=resources).success
    with session_scope() as s:
        audit = s.scalar(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                         .where(FicheCache.fiche_id == fiche_id))
        assert audit.status == "completed"
        timeline = s.get(AuditSnapshot, audit.id).timeline
        return {"fiche_id": fiche_id, "audit_id": audit.id, "timeline": timeline}


@pytest.fixture()
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(api_key=KEY)
    with serve_app(fake.app) as url:
        fake.url = url + "/v1"  # type: ignore[attr-defined]
        yield fake


def _serve(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    return serve_app(create_app(dagster_url=UNREACHABLE_DAGSTER))


@pytest.fixture()
def api_openai(db, fake_openai, monkeypatch) -> Iterator[str]:
    env = {"AUDITFLOW_LLM": "openai", "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake_openai.url,
           "OPENAI_MODEL_CHAT": "gpt-5.2", "AUDITFLOW_OPENAI_MAX_RETRIES": "0"}
    try:
        with _serve(monkeypatch, env) as url:
            yield url
    finally:
        get_settings.cache_clear()


@pytest.fixture()
def api_offline(db, monkeypatch) -> Iterator[str]:
    try:
        with _serve(monkeypatch, {"AUDITFLOW_LLM": "offline"}) as url:
            yield url
    finally:
        get_settings.cache_clear()


def sse(url: str, message: Any) -> tuple[httpx.Headers, list[Any]]:
    """POST a chat message; the ``data:`` payloads in order (``[DONE]`` as the string)."""
    events: list[Any] = []
    with httpx.Client(timeout=30) as client, client.stream("POST", url, json={"message": message}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line  # unnamed events, no id/event lines
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        return r.headers, events


def _quote(timeline: list[dict[str, Any]]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    rec = timeline[0]
    chunk = rec["chunks"][0]
    said = chunk["full_text"].split("\n")[0].partition(": ")[2]
    return " ".join(said.split()[:6]), rec, chunk


def _marker(quote: str, rec: dict[str, Any], chunk: dict[str, Any], **extra: Any) -> str:
    body = {"texte": quote, "minutage": "00:00", "minutage_secondes": chunk["start_timestamp"], "speaker": "speaker_0",
            "recording_index": rec["recording_index"], "chunk_index": chunk["chunk_index"],
            "recording_date": "01/01/1999", "recording_time": "00:00", "recording_url": "made-up", **extra}
    return "[CITATION:" + json.dumps(body, ensure_ascii=False) + "]"


def test_audit_chat_sends_the_newest_50_and_streams_split_markers_whole(audited, api_openai, fake_openai):
    fiche_id, audit_id, timeline = audited["fiche_id"], audited["audit_id"], audited["timeline"]
    base = dt.datetime(2026, 1, 1)
    with session_scope() as s:
        conv = chat_db.get_or_create_conversation(s, fiche_id, audit_id)
        for i in range(120):  # groups of three share a timestamp: ties are broken by id
            s.add(ChatMessage(conversation_id=conv.id, role="user" if i % 2 == 0 else "assistant",
                              content=f"m{i}", timestamp=base + dt.timedelta(seconds=i // 3)))
    quote, rec, chunk = _quote(timeline)
    good = _marker(quote, rec, chunk)
    bad = _marker("une phrase que personne n'a jamais prononcée", rec, chunk)
    answer = f"Voici la preuve {good} et une autre {bad}. Fin."
    cut1, cut2 = answer.index(good) + 5, answer.index(good) + len(good) - 1  # inside the marker, and inside "}]"
    deltas = [answer[:cut1], "", answer[cut1:cut2], answer[cut2:cut2 + 3], answer[cut2 + 3:]]
    seen: list[dict[str, Any]] = []

    def handler(payload: dict[str, Any]) -> StreamReply:
        seen.append(payload)
        return StreamReply(deltas)

    fake_openai.handler = handler
    message = "  Où est l'annonce de l'enregistrement ?  "
    headers, events = sse(f"{api_openai}/api/audits/{audit_id}/chat", message)

    [payload] = seen
    assert payload["input"] == [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(70, 120)
    ] + [{"role": "user", "content": message}]
    assert payload["stream"] is True and payload["model"] == "gpt-5.2" and payload["max_output_tokens"] == 3000
    assert payload["reasoning"] == {"effort": "medium"} and payload["text"] == {"verbosity": "low"}
    assert "temperature" not in payload
    instructions = payload["instructions"]
    assert core.timeline_text(core.fill_from_filenames(timeline)) in instructions  # the audit's frozen timeline
    assert fiche_id in instructions and "[CITATION:" in instructions

    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    assert events[-1] == "[DONE]"
    texts = [e["text"] for e in events if isinstance(e, dict) and "text" in e]
    assert all(texts) and "".join(texts) == "Voici la preuve  et une autre . Fin."
    assert not any("CITATION" in t or "}]" in t for t in texts)
    [cit_event] = [e for e in events if isinstance(e, dict) and "citations" in e]
    assert events.index(cit_event) == len(events) - 2
    [citation] = cit_event["citations"]
    assert citation["texte"] == quote and citation["recording_index"] == rec["recording_index"]
    assert citation["recording_url"] == rec["recording_url"]  # overwritten from the timeline
    assert citation["recording_date"] == (rec["recording_date"] or "N/A")

    with httpx.Client() as client:
        hist = client.get(f"{api_openai}/api/audits/{audit_id}/chat/history").json()
    data = hist["data"]
    assert hist["success"] and data["auditId"] == str(audit_id) and data["ficheId"] == fiche_id
    assert data["messageCount"] == 50
    assert [m["content"] for m in data["messages"][-2:]] == [message, "Voici la preuve  et une autre . Fin."]
    assert [m["role"] for m in data["messages"][-2:]] == ["user", "assistant"]
    assert [m["content"] for m in data["messages"][:48]] == [f"m{i}" for i in range(72, 120)]
    assert isinstance(data["messages"][0]["id"], str) and data["messages"][0]["timestamp"].endswith("Z")


def test_mid_stream_error_is_reported_in_band_and_no_answer_is_saved(audited, api_openai, fake_openai):
    audit_id = audited["audit_id"]
    fake_openai.handler = lambda payload: StreamReply(["Début ", "[CITATION:{\"texte\""], fail="error")
    _, events = sse(f"{api_openai}/api/audits/{audit_id}/chat", "Question ?")
    assert events[0] == {"text": "Début "}
    assert events[-2]["type"] == "error" and events[-2]["code"] == "STREAM_ERROR" and events[-2]["error"]
    assert KEY not in json.dumps(events)
    assert events[-1] == "[DONE]" and len(events) == 3
    with session_scope() as s:
        roles = list(s.scalars(select(ChatMessage.role).order_by(ChatMessage.id)))
    assert roles == ["user"]


def test_fiche_chat_context_leaves_out_soft_deleted_audits(audited, api_openai, fake_openai):
    fiche_id = audited["fiche_id"]
    fake_openai.stream_deltas = ["Rien ", "à signaler."]
    _, events = sse(f"{api_openai}/api/fiches/{fiche_id}/chat", "Résumé ?")
    assert events == [{"text": "Rien "}, {"text": "à signaler."}, "[DONE]"]
    first = fake_openai.requests[-1]["json"]["instructions"]
    assert "score" in first.split("AUDITS")[1].split("\n")[1]  # the audit is listed
    assert "Enregistrement #1" in first
    with session_scope() as s:
        s.execute(update(Audit).where(Audit.id == audited["audit_id"]).values(deleted_at=dt.datetime(2026, 1, 2)))
    sse(f"{api_openai}/api/fiches/{fiche_id}/chat", "Et maintenant ?")
    second = fake_openai.requests[-1]["json"]
    assert "- Aucun audit." in second["instructions"]
    assert [i["content"] for i in second["input"]] == ["Résumé ?", "Rien à signaler.", "Et maintenant ?"]


def test_offline_fiche_chat_answers_with_a_valid_citation(audited, api_offline):
    fiche_id, timeline = audited["fiche_id"], audited["timeline"]
    quote, _, _ = _quote(timeline)
    _, events = sse(f"{api_offline}/api/fiches/{fiche_id}/chat", quote)
    texts = [e["text"] for e in events if isinstance(e, dict) and "text" in e]
    assert len(texts) > 5 and not any("CITATION" in t for t in texts)
    [cit_event] = [e for e in events if isinstance(e, dict) and "citations" in e]
    assert cit_event["citations"] and events[-1] == "[DONE]"
    with httpx.Client() as client:
        h1 = client.get(f"{api_offline}/api/fiches/{fiche_id}/chat/history").json()["data"]
        h2 = client.get(f"{api_offline}/api/fiches/{fiche_id}/chat/history").json()["data"]
    assert h1["conversationId"] == h2["conversationId"] and "auditId" not in h1
    assert [m["role"] for m in h1["messages"]] == ["user", "assistant"]
    assert h1["messages"][1]["content"] == "".join(texts)
    with session_scope() as s:
        n = s.scalar(select(func.count()).select_from(ChatConversation)
                     .where(ChatConversation.fiche_id == fiche_id, ChatConversation.audit_id.is_(None)))
    assert n == 1


def test_fiche_level_conversation_is_one_row_under_repeated_upserts(db):
    with session_scope() as s:
        ids = {chat_db.get_or_create_conversation(s, "42", None).id for _ in range(3)}
        ids_audit = {chat_db.get_or_create_conversation(s, "42", 7).id for _ in range(2)}
    assert len(ids) == 1 and len(ids_audit) == 1 and ids != ids_audit


@pytest.fixture()
def client(db):
    with TestClient(create_app(dagster_url=UNREACHABLE_DAGSTER), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("body,error", [
    ({}, "Message required"), ({"message": "   "}, "Message required"), ({"message": 12}, "Message required"),
    ({"message": "x" * 8001}, "Message too long (max 8000 characters)"),
])
def test_bad_messages_are_400(client, body, error):
    with session_scope() as s:
        s.add(FicheCache(fiche_id="77", expires_at=dt.datetime(2099, 1, 1)))
    for url in ("/api/fiches/77/chat", "/api/audits/1/chat"):
        r = client.post(url, json=body)
        assert r.status_code == 400 and r.json() == {"success": False, "error": error, "code": "VALIDATION_ERROR"}


def test_bad_ids_unknown_resources_and_invalid_json(client):
    r = client.post("/api/fiches/77/chat", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_JSON"
    assert client.get("/api/audits/abc/chat/history").json()["error"] == "Invalid audit_id"
    assert client.post("/api/fiches/12x/chat", json={"message": "q"}).status_code == 400
    r = client.get("/api/audits/999/chat/history")
    assert r.status_code == 404 and r.json() == {"success": False, "error": "Audit not found"}
    assert client.post("/api/audits/999/chat", json={"message": "q"}).status_code == 404
    for r in (client.get("/api/fiches/555/chat/history"), client.post("/api/fiches/555/chat", json={"message": "q"})):
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND" and r.json()["success"] is False
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(ChatConversation)) == 0
        assert s.scalar(select(func.count()).select_from(ChatMessage)) == 0


def test_openapi_lists_the_chat_routes(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    for path, method in [("/api/audits/{audit_id}/chat/history", "get"), ("/api/audits/{audit_id}/chat", "post"),
                         ("/api/fiches/{fiche_id}/chat/history", "get"), ("/api/fiches/{fiche_id}/chat", "post")]:
        assert method in paths[path]
    assert "text/event-stream" in paths["/api/fiches/{fiche_id}/chat"]["post"]["responses"]["200"]["content"]
