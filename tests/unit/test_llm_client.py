"""OpenAiAuditor: the real OpenAI SDK against a fake Responses API over real HTTP (spec 03 §3.1)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import pytest

from auditflow_dagster.core.audit_config import AuditConfigSpec
from auditflow_dagster.core.audit_output import StepAnalysis, step_analysis_json_schema
from auditflow_dagster.resources.llm import (
    MISSING_KEY_MESSAGE,
    OFFLINE_MODEL,
    LlmError,
    LlmResource,
    OfflineAuditor,
    OpenAiAuditor,
    StepCallResult,
    is_reasoning_model,
    parse_step_output,
)
from tests.fakes.openai_server import FakeOpenAI, step_analysis_example
from tests.fakes.server import Reply, free_port_refusing, serve_app

KEY = "sk-test-fake-key-abcdef123456"
PROMPT = "Tu es un auditeur qualité.\n\nTIMELINE...\n\nÉtape 1/1: Annonce de l'enregistrement\nAnalyse cette étape."

CONFIG = AuditConfigSpec.model_validate(
    {
        "name": "Checklist",
        "systemPrompt": "Tu es un auditeur qualité.",
        "steps": [
            {
                "position": 1,
                "name": "Annonce de l'enregistrement",
                "prompt": "Vérifier l'annonce",
                "controlPoints": ["Recording announced", "Right to object"],
                "keywords": ["enregistré"],
                "severityLevel": "HIGH",
                "weight": 8,
            }
        ],
    }
)
STEP = CONFIG.steps[0]
TIMELINE: list[dict[str, Any]] = [
    {"recording_index": 0, "chunk_index": 0, "speaker": "speaker_0", "text": "je vous informe que l'appel est enregistré"}
]


@pytest.fixture
def openai_fake() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(api_key=KEY)
    with serve_app(fake.app) as url:
        yield fake, url + "/v1"


def analyze(auditor: Any) -> StepCallResult:
    async def go() -> StepCallResult:
        async with auditor:
            return await auditor.analyze_step(prompt=PROMPT, config=CONFIG, step=STEP, timeline=TIMELINE)

    return asyncio.run(go())


def auditor(base: str, **kw: Any) -> OpenAiAuditor:
    return OpenAiAuditor(kw.pop("api_key", KEY), model=kw.pop("model", "gpt-5.2"), base_url=base, **kw)


def assert_clean(message: str, key: str = KEY) -> None:
    assert key not in message
    assert "sk-" not in message
    assert "http" not in message and "127.0.0.1" not in message
    assert "\n" not in message


# --- request shape ---------------------------------------------------------------------------


def test_reasoning_model_request_and_result(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, base = openai_fake
    result = analyze(auditor(base, max_retries=0))

    (req,) = fake.requests
    assert req["path"] == "/v1/responses"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    body = req["json"]
    assert body["model"] == "gpt-5.2"
    assert body["input"] == [{"role": "user", "content": PROMPT}]
    fmt = body["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["strict"] is True and fmt["name"] == "step_analysis"
    assert fmt["schema"] == step_analysis_json_schema()
    assert fmt["schema"]["additionalProperties"] is False
    assert body["text"]["verbosity"] == "high"
    assert body["reasoning"] == {"effort": "high", "summary": "detailed"}
    assert "temperature" not in body
    assert body.get("stream") in (None, False)

    assert result.output == StepAnalysis.model_validate(step_analysis_example()).model_dump()
    assert result.usage == {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}
    assert result.model == "gpt-5.2"


def test_non_reasoning_model_gets_temperature_zero(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, base = openai_fake
    result = analyze(auditor(base, model="gpt-4.1", max_retries=0))
    body = fake.requests[0]["json"]
    assert body["temperature"] == 0
    assert "reasoning" not in body
    assert "verbosity" not in body["text"]
    assert body["text"]["format"]["strict"] is True
    assert result.model == "gpt-4.1"


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [("gpt-5.2", True), ("gpt-5-mini", True), ("o3", True), ("o4-mini", True), ("gpt-5-chat-latest", False),
     ("gpt-4.1", False), ("gpt-4o", False), ("omni-moderation", False)],
)
def test_is_reasoning_model(model: str, reasoning: bool) -> None:
    assert is_reasoning_model(model) is reasoning


# --- output parsing --------------------------------------------------------------------------


def test_missing_final_brace_is_appended(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, base = openai_fake
    fake.output_text = json.dumps(step_analysis_example())[:-1] + "\n"
    result = analyze(auditor(base, max_retries=0))
    assert result.output["conforme"] == "PARTIEL"


def test_invalid_json_is_llm_error(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, base = openai_fake
    fake.output_text = '{"traite": true, "conforme": '
    with pytest.raises(LlmError) as ei:
        analyze(auditor(base, max_retries=0))
    assert "not valid JSON" in str(ei.value)
    assert_clean(str(ei.value))


def test_schema_mismatch_is_llm_error(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, base = openai_fake
    bad = step_analysis_example()
    bad["conforme"] = "MAYBE"
    bad["surprise"] = 1
    fake.output_text = json.dumps(bad)
    with pytest.raises(LlmError) as ei:
        analyze(auditor(base, max_retries=0))
    msg = str(ei.value)
    assert "conforme" in msg and "surprise" in msg
    assert "MAYBE" not in msg  # values are not echoed


def test_empty_output_refusal_and_incomplete(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, base = openai_fake
    fake.output_text = "   "
    with pytest.raises(LlmError, match="empty"):
        analyze(auditor(base, max_retries=0))
    fake.refusal = "I cannot help with that."
    with pytest.raises(LlmError, match="refused"):
        analyze(auditor(base, max_retries=0))
    fake.refusal = None
    fake.output_text = json.dumps(step_analysis_example())
    fake.status = "incomplete"
    with pytest.raises(LlmError, match="incomplete"):
        analyze(auditor(base, max_retries=0))


def test_parse_step_output_unit() -> None:
    good = json.dumps(step_analysis_example())
    assert parse_step_output(good)["score"] == 5
    assert parse_step_output(good[:-1])["score"] == 5
    with pytest.raises(LlmError):
        parse_step_output("[]")
    with pytest.raises(LlmError):
        parse_step_output(good[:-2])


# --- provider errors -------------------------------------------------------------------------


def test_wrong_key_401_is_sanitized(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, base = openai_fake
    wrong = "sk-wrong-key-0000111122223333"
    with pytest.raises(LlmError) as ei:
        analyze(auditor(base, api_key=wrong, max_retries=2))
    err = ei.value
    assert err.status == 401
    assert "OPENAI_API_KEY" in str(err) and "invalid_api_key" in str(err)
    assert_clean(str(err), wrong)
    assert "3333" not in str(err)  # not even OpenAI's masked echo of the key
    assert len(fake.requests) == 1  # 401 is not retried by the SDK


def test_sdk_retries_5xx_then_succeeds(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, base = openai_fake
    fake.script.append(Reply(500, json={"error": {"message": "boom", "type": "server_error"}}, headers={"retry-after-ms": "10"}))
    result = analyze(auditor(base, max_retries=1))
    assert len(fake.requests) == 2
    assert result.output["traite"] is True


def test_5xx_after_retries_is_llm_error(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, base = openai_fake
    fake.script.extend([Reply(503, json={"error": {"message": f"overloaded, key {KEY}", "type": "server_error"}}, headers={"retry-after-ms": "5"})] * 2)
    with pytest.raises(LlmError) as ei:
        analyze(auditor(base, max_retries=1))
    assert ei.value.status == 503 and "overloaded" in str(ei.value)
    assert_clean(str(ei.value))
    assert len(fake.requests) == 2


def test_connection_error_and_timeout() -> None:
    with pytest.raises(LlmError) as ei:
        analyze(auditor(free_port_refusing() + "/v1", max_retries=0))
    assert str(ei.value) == "OpenAI connection error"

    fake = FakeOpenAI(api_key=KEY)
    fake.script.append(Reply(200, json={}, delay=2.0))
    with serve_app(fake.app) as url:
        with pytest.raises(LlmError) as ei:
            analyze(auditor(url + "/v1", max_retries=0, timeout=0.3))
    assert str(ei.value) == "OpenAI request timed out"


def test_missing_key_fails_without_network(openai_fake: tuple[FakeOpenAI, str]) -> None:
    fake, base = openai_fake
    with pytest.raises(LlmError) as ei:
        analyze(auditor(base, api_key="  ''  "))
    assert str(ei.value) == MISSING_KEY_MESSAGE
    assert fake.requests == []


# --- resource and offline twin ---------------------------------------------------------------


def test_resource_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from auditflow_dagster.settings import Settings

    monkeypatch.setenv("AUDITFLOW_LLM", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", f'"{KEY}"')
    monkeypatch.setenv("OPENAI_MODEL_AUDIT", "gpt-4.1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    resource = LlmResource.from_settings(Settings())
    assert KEY not in repr(resource)
    assert resource.model_name == "gpt-4.1"
    client = resource.client()
    assert isinstance(client, OpenAiAuditor)
    assert client._api_key == KEY and client.model == "gpt-4.1" and client.timeout == 600.0 and client.max_retries == 3
    assert KEY not in repr(client)
    offline = LlmResource(mode="offline")
    assert offline.model_name == OFFLINE_MODEL and isinstance(offline.client(), OfflineAuditor)
    with pytest.raises(ValueError):
        LlmResource(mode="claude").client()


def test_offline_auditor_uses_sample_auditor() -> None:
    pytest.importorskip("auditflow_dagster.sample.offline_auditor")
    result = analyze(OfflineAuditor())
    assert result.model == OFFLINE_MODEL
    StepAnalysis.model_validate(result.output)
    assert len(result.output["points_controle"]) == len(STEP.control_points)
    assert set(result.usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert result.usage["total_tokens"] == result.usage["prompt_tokens"] + result.usage["completion_tokens"]
