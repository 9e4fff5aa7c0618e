"""Tools mode (spec 03 §5): the real OpenAI SDK in a multi-round function-calling conversation
against the fake Responses API, which checks what the client sends back each round."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import pytest

from auditflow_dagster.core.audit_config import AuditConfigSpec
from auditflow_dagster.core.audit_output import StepAnalysis, step_analysis_json_schema
from auditflow_dagster.core.prompts import (
    build_tools_system_prompt,
    build_tools_user_prompt,
)
from auditflow_dagster.core.transcript_tools import (
    FETCH_TOOL,
    SEARCH_TOOL,
    ToolLimits,
    get_transcript_chunks,
    search_transcript,
    tool_definitions,
    tool_output_json,
)
from auditflow_dagster.resources.llm import (
    OFFLINE_MODEL,
    LlmError,
    LlmResource,
    OfflineAuditor,
    OpenAiAuditor,
    StepCallResult,
    tools_round_choice,
)
from tests.fakes.openai_server import FakeOpenAI, function_call, response_object
from tests.fakes.server import serve_app
from tests.unit.test_transcript_tools import TIMELINE

KEY = "sk-test-fake-key-abcdef123456"
CONFIG = AuditConfigSpec.model_validate(
    {
        "name": "Checklist",
        "systemPrompt": "Tu es un auditeur qualité.",
        "steps": [
            {
                "position": 1,
                "name": "Annonce de l'enregistrement",
                "prompt": "Vérifier l'annonce",
                "controlPoints": ["Enregistrement annoncé", "Droit d'opposition"],
                "keywords": ["enregistré", "opposer"],
                "severityLevel": "HIGH",
                "weight": 8,
            }
        ],
    }
)
STEP = CONFIG.steps[0]
SYSTEM = build_tools_system_prompt(CONFIG)
USER = build_tools_user_prompt(CONFIG, STEP, total_steps=1)


def final_answer() -> dict[str, Any]:
    """A step answer quoting chunk (0,0) and (0,1) as fetched, with the tools' metadata."""

    def cite(texte: str, ci: int, secs: float, mm: str) -> dict[str, Any]:
        return {"texte": texte, "minutage": mm, "minutage_secondes": secs, "speaker": "speaker_0",
                "recording_index": 0, "chunk_index": ci, "recording_date": "02/01/2025", "recording_time": "10:15",
                "recording_url": "https://crm.example/rec/1.mp3"}

    points = [
        ("Enregistrement annoncé", cite("je vous informe que l'appel est enregistré", 0, 12.4, "00:12")),
        ("Droit d'opposition", cite("Vous pouvez vous opposer à l'enregistrement", 1, 20, "00:20")),
    ]
    return {
        "traite": True, "conforme": "CONFORME", "minutages": ["00:12", "00:20"], "score": 8,
        "points_controle": [
            {"point": p, "statut": "PRESENT", "commentaire": "Dit.", "citations": [c], "minutages": [c["minutage"]],
             "erreur_transcription_notee": False, "variation_phonetique_utilisee": None}
            for p, c in points
        ],
        "mots_cles_trouves": ["enregistré"], "commentaire_global": "Conforme.", "niveau_conformite": "EXCELLENT",
        "erreurs_transcription_tolerees": 0,
    }


@pytest.fixture
def fake() -> Iterator[tuple[FakeOpenAI, str]]:
    server = FakeOpenAI(api_key=KEY)
    with serve_app(server.app) as url:
        yield server, url + "/v1"


def run(auditor: Any, timeline: list[dict[str, Any]] = TIMELINE) -> StepCallResult:
    async def go() -> StepCallResult:
        async with auditor:
            return await auditor.analyze_step(prompt=USER, config=CONFIG, step=STEP, timeline=timeline,
                                              system_prompt=SYSTEM, transcript_mode="tools")

    return asyncio.run(go())


def make(base: str, limits: ToolLimits | None = None, model: str = "gpt-5.2") -> OpenAiAuditor:
    return OpenAiAuditor(KEY, model=model, base_url=base, max_retries=0, tool_limits=limits)


def outputs(payload: dict[str, Any]) -> dict[str, str]:
    return {i["call_id"]: i["output"] for i in payload["input"] if i.get("type") == "function_call_output"}


def calls_sent(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in payload["input"] if i.get("type") == "function_call"]


# --- the conversation ------------------------------------------------------------------------


def test_three_round_conversation_feeds_back_exact_tool_results(fake: tuple[FakeOpenAI, str]) -> None:
    server, base = fake
    search_args = {"query": "Annonce de l'enregistrement enregistré opposer", "maxResults": None, "minTermLength": None}
    fetch_args = {"chunks": [{"recording_index": 0, "chunk_index": 0}, {"recording_index": 0, "chunk_index": 1}],
                  "includeNeighbors": 1, "maxChars": None}
    second_search = {"query": "droit opposition", "maxResults": 5, "minTermLength": 4}
    expected_search = tool_output_json(search_transcript(TIMELINE, search_args["query"], 25, None))
    expected_fetch = tool_output_json(get_transcript_chunks(TIMELINE, fetch_args["chunks"], 1, 20000, 20))
    expected_second = tool_output_json(search_transcript(TIMELINE, "droit opposition", 5, 4))
    sent: dict[str, dict[str, Any]] = {}

    def handler(payload: dict[str, Any]) -> dict[str, Any]:
        n = len(server.requests)
        schema = payload["text"]["format"]
        assert schema["type"] == "json_schema" and schema["strict"] is True
        assert schema["schema"] == step_analysis_json_schema()  # structured output on every round
        assert payload["tools"] == tool_definitions(ToolLimits())
        assert payload["reasoning"] == {"effort": "high", "summary": "detailed"} and "temperature" not in payload
        assert "previous_response_id" not in payload  # the whole conversation is resent
        assert payload["input"][:2] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
        if n == 1:
            assert payload["tool_choice"] == "required"
            assert len(payload["input"]) == 2
            sent["s1"] = function_call(SEARCH_TOOL, search_args, call_id="call_s1")
            return response_object("", model=payload["model"], tool_calls=[sent["s1"]], usage=(1000, 50))
        if n == 2:
            assert payload["tool_choice"] == "auto"
            assert [i["type"] for i in payload["input"][2:]] == ["reasoning", "function_call", "function_call_output"]
            (call,) = calls_sent(payload)
            assert {k: call[k] for k in ("call_id", "name", "arguments")} == \
                {k: sent["s1"][k] for k in ("call_id", "name", "arguments")}
            assert outputs(payload) == {"call_s1": expected_search}  # byte for byte
            sent["f1"] = function_call(FETCH_TOOL, fetch_args, call_id="call_f1")
            sent["s2"] = function_call(SEARCH_TOOL, second_search, call_id="call_s2")
            return response_object("", model=payload["model"], tool_calls=[sent["f1"], sent["s2"]], usage=(1500, 60))
        assert n == 3
        assert payload["tool_choice"] == "auto"
        assert [c["call_id"] for c in calls_sent(payload)] == ["call_s1", "call_f1", "call_s2"]
        assert outputs(payload) == {"call_s1": expected_search, "call_f1": expected_fetch, "call_s2": expected_second}
        fetched = json.loads(outputs(payload)["call_f1"])
        assert [(c["recording_index"], c["chunk_index"]) for c in fetched["chunks"]] == [(0, 0), (0, 1), (0, 2)]
        return response_object(json.dumps(final_answer()), model=payload["model"], usage=(2500, 400))

    server.handler = handler
    result = run(make(base))
    assert server.errors == []
    assert len(server.requests) == 3
    assert result.output == StepAnalysis.model_validate(final_answer()).model_dump()
    assert result.usage == {"prompt_tokens": 5000, "completion_tokens": 510, "total_tokens": 5510}
    assert result.model == "gpt-5.2"


def test_round_choices() -> None:
    assert [tools_round_choice(i, 8) for i in range(1, 9)] == ["required"] + ["auto"] * 6 + ["none"]
    assert [tools_round_choice(i, 2) for i in (1, 2)] == ["required", "none"]


@pytest.mark.parametrize(("max_rounds", "expected"), [(3, ["required", "auto", "none"]), (1, ["required", "none"]),
                                                      (None, ["required"] + ["auto"] * 6 + ["none"])])
def test_round_cap_forces_an_answer(fake: tuple[FakeOpenAI, str], max_rounds: int | None,
                                    expected: list[str]) -> None:
    server, base = fake

    def handler(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["tool_choice"] == "none":
            return response_object(json.dumps(final_answer()), model=payload["model"])
        return response_object("", model=payload["model"],
                               tool_calls=[function_call(SEARCH_TOOL, {"query": "appel", "maxResults": 1,
                                                                       "minTermLength": None})])

    server.handler = handler
    limits = ToolLimits.normalized(max_rounds=max_rounds) if max_rounds is not None else None
    result = run(make(base, limits))
    assert server.errors == []
    assert [r["json"]["tool_choice"] for r in server.requests] == expected
    assert result.output["score"] == 8
    assert result.usage["total_tokens"] == 1500 * len(expected)
    # every tool call got its output back in the next round
    last = server.requests[-1]["json"]
    assert len(outputs(last)) == len(calls_sent(last)) == len(expected) - 1


def test_model_ignoring_tool_choice_none_is_an_error(fake: tuple[FakeOpenAI, str]) -> None:
    server, base = fake
    server.handler = lambda p: response_object("", model=p["model"], tool_calls=[
        function_call(SEARCH_TOOL, {"query": "appel", "maxResults": None, "minTermLength": None})])
    with pytest.raises(LlmError, match="kept calling tools after 3 rounds"):
        run(make(base, ToolLimits.normalized(max_rounds=3)))
    assert len(server.requests) == 3


def test_invalid_tool_arguments_are_fed_back_as_errors(fake: tuple[FakeOpenAI, str]) -> None:
    server, base = fake

    def handler(payload: dict[str, Any]) -> dict[str, Any]:
        if len(server.requests) == 1:
            return response_object("", model=payload["model"], tool_calls=[
                function_call(SEARCH_TOOL, '{"query": "appel", ', call_id="bad_json"),
                function_call(SEARCH_TOOL, {"query": "appel", "maxResults": "dix", "minTermLength": None},
                              call_id="bad_type"),
                function_call(FETCH_TOOL, {"chunks": "0:0", "includeNeighbors": None, "maxChars": None},
                              call_id="bad_chunks"),
                function_call("readEverything", {}, call_id="unknown"),
            ])
        out = {k: json.loads(v) for k, v in outputs(payload).items()}
        assert set(out) == {"bad_json", "bad_type", "bad_chunks", "unknown"}
        assert all(set(v) == {"error"} for v in out.values()), out
        assert "not valid JSON" in out["bad_json"]["error"]
        assert "maxResults" in out["bad_type"]["error"]
        assert "chunks" in out["bad_chunks"]["error"]
        assert "unknown tool" in out["unknown"]["error"]
        return response_object(json.dumps(final_answer()), model=payload["model"])

    server.handler = handler
    result = run(make(base))
    assert server.errors == []
    assert len(server.requests) == 2 and result.output["traite"] is True


def test_final_answer_is_not_brace_repaired_and_must_match_schema(fake: tuple[FakeOpenAI, str]) -> None:
    server, base = fake
    text = json.dumps(final_answer())

    def answer_with(body: str):
        def handler(payload: dict[str, Any]) -> dict[str, Any]:
            if payload["tool_choice"] == "required":
                return response_object("", model=payload["model"], tool_calls=[
                    function_call(SEARCH_TOOL, {"query": "appel", "maxResults": None, "minTermLength": None})])
            return response_object(body, model=payload["model"])
        return handler

    server.handler = answer_with(text[:-1])  # prompt mode would append the "}"; tools mode does not
    with pytest.raises(LlmError, match="not valid JSON"):
        run(make(base))
    bad = final_answer()
    bad["conforme"] = "PEUT-ETRE"
    server.handler = answer_with(json.dumps(bad))
    with pytest.raises(LlmError, match="conforme"):
        run(make(base))
    server.handler = answer_with("   ")
    with pytest.raises(LlmError, match="empty"):
        run(make(base))
    assert server.errors == []


def test_refusal_and_provider_error_mid_conversation(fake: tuple[FakeOpenAI, str]) -> None:
    server, base = fake

    def refusing(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["tool_choice"] == "required":
            return response_object("", model=payload["model"], tool_calls=[
                function_call(SEARCH_TOOL, {"query": "appel", "maxResults": None, "minTermLength": None})])
        return response_object("", model=payload["model"], refusal="Je ne peux pas.")

    server.handler = refusing
    with pytest.raises(LlmError, match="refused"):
        run(make(base))

    def failing(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["tool_choice"] == "required":
            return response_object("", model=payload["model"], tool_calls=[
                function_call(SEARCH_TOOL, {"query": "appel", "maxResults": None, "minTermLength": None})])
        raise RuntimeError("round 2 rejected")

    server.handler = failing
    with pytest.raises(LlmError) as ei:
        run(make(base))
    assert ei.value.status == 400 and KEY not in str(ei.value)
    server.errors.clear()


def test_non_reasoning_model_and_limits_in_tool_descriptions(fake: tuple[FakeOpenAI, str]) -> None:
    server, base = fake
    limits = ToolLimits.normalized(max_search_results=7, max_chunk_fetch=3, max_chunk_chars=4000)

    def handler(payload: dict[str, Any]) -> dict[str, Any]:
        assert payload["temperature"] == 0 and "reasoning" not in payload
        assert payload["tools"] == tool_definitions(limits)
        if payload["tool_choice"] == "required":
            return response_object("", model=payload["model"], tool_calls=[
                function_call(SEARCH_TOOL, {"query": "appel enregistré frais dossier blabla", "maxResults": None,
                                            "minTermLength": None}, call_id="s"),
                function_call(FETCH_TOOL, {"chunks": [{"recording_index": r, "chunk_index": c}
                                                      for r, c in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]],
                                           "includeNeighbors": None, "maxChars": None}, call_id="f")])
        out = {k: json.loads(v) for k, v in outputs(payload).items()}
        assert len(out["s"]["matches"]) == 5  # only 5 chunks match; cap 7 not reached
        assert out["f"]["maxChars"] == 4000 and out["f"]["returned"] == 3  # AUDIT_TOOLS_MAX_CHUNK_FETCH = 3
        return response_object(json.dumps(final_answer()), model=payload["model"])

    server.handler = handler
    result = run(make(base, limits, model="gpt-4.1"))
    assert server.errors == [] and result.model == "gpt-4.1"


def test_resource_reads_tool_limits_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from auditflow_dagster.settings import get_settings

    monkeypatch.setenv("AUDIT_TOOLS_MAX_ROUNDS", "1")
    monkeypatch.setenv("AUDIT_TOOLS_MAX_SEARCH_RESULTS", "9")
    monkeypatch.setenv("AUDIT_TOOLS_MAX_CHUNK_FETCH", "99")
    monkeypatch.setenv("AUDIT_TOOLS_MAX_CHUNK_CHARS", "3000")
    get_settings.cache_clear()
    try:
        client = LlmResource(mode="openai", api_key=KEY).client()
        assert client.tool_limits == ToolLimits(max_rounds=2, max_search_results=9, max_chunk_fetch=40,
                                                max_chunk_chars=3000)
        explicit = LlmResource(mode="offline", tools_max_rounds=4).client()
        assert explicit.tool_limits.max_rounds == 4 and explicit.tool_limits.max_search_results == 9
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert LlmResource(mode="openai", api_key=KEY).client().tool_limits == ToolLimits()


# --- offline twin ----------------------------------------------------------------------------


def test_offline_auditor_tools_mode_quotes_only_fetched_chunks() -> None:
    from auditflow_dagster.sample.offline_auditor import audit_step

    limits = ToolLimits.normalized(max_search_results=1)
    result = run(OfflineAuditor(tool_limits=limits))
    assert result.model == OFFLINE_MODEL
    StepAnalysis.model_validate(result.output)
    # one hit (the best chunk) + its ±1 neighbours are all the offline auditor could read
    best = search_transcript(TIMELINE, " ".join([STEP.name, *STEP.keywords, *STEP.control_points]), 1)["matches"][0]
    readable = {(best["recording_index"], best["chunk_index"] + d) for d in (-1, 0, 1)}
    cited = {(c["recording_index"], c["chunk_index"]) for p in result.output["points_controle"] for c in p["citations"]}
    assert cited and cited <= readable
    # prompt mode reads everything; with a generous budget both modes agree on this small call
    full = asyncio.run(OfflineAuditor().analyze_step(prompt=USER, config=CONFIG, step=STEP, timeline=TIMELINE))
    assert full.output == StepAnalysis.model_validate(audit_step(CONFIG, STEP, TIMELINE)).model_dump()
    wide = run(OfflineAuditor())
    assert [p["statut"] for p in wide.output["points_controle"]] == [p["statut"] for p in full.output["points_controle"]]
    assert wide.usage["prompt_tokens"] > full.usage["prompt_tokens"]  # system prompt + tool outputs counted
