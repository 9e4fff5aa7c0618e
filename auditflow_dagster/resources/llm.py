"""Per-step LLM call (spec 03 §3.1, §5) and its offline twin.

:class:`OpenAiAuditor` analyses one audit step through the OpenAI Responses API with strict
JSON-schema output and validates the answer against :class:`StepAnalysis`. Prompt mode is one call
with the timeline in the prompt; tools mode (``use_rlm``) is a bounded conversation in which the
model searches and reads the frozen run timeline through function tools
(:mod:`auditflow_dagster.core.transcript_tools`) before answering. Every failure (provider error
after the SDK's own retries, refusal, empty/invalid JSON, schema mismatch, tool rounds exhausted)
becomes an :class:`LlmError` with a sanitised message; the caller turns it into a fallback step
(spec 03 §8).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, ValidationError

from auditflow_dagster.core.audit_config import AuditConfigSpec, AuditStepSpec
from auditflow_dagster.core.audit_output import StepAnalysis, step_analysis_json_schema
from auditflow_dagster.core.transcript_tools import (
    ToolLimits,
    TranscriptIndex,
    get_transcript_chunks,
    run_tool_call,
    search_transcript,
    tool_definitions,
    tool_output_json,
)
from auditflow_dagster.resources.http_errors import install_log_redaction
from auditflow_dagster.resources.secrets import resolve_secret, secret_field_value
from auditflow_dagster.settings import normalize_secret

install_log_redaction()  # the OpenAI SDK logs request URLs through httpx

logger = logging.getLogger(__name__)

OFFLINE_MODEL = "offline-keyword"
SCHEMA_NAME = "step_analysis"
MISSING_KEY_MESSAGE = "OpenAI API key missing (OPENAI_API_KEY)"
ERROR_DETAIL_MAX = 300


def _zero_usage() -> dict[str, int]:
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@dataclass
class StepCallResult:
    output: dict[str, Any]
    usage: dict[str, int] = field(default_factory=_zero_usage)
    model: str = ""


class LlmError(Exception):
    """A sanitised LLM failure; ``status`` is the provider HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


_KEYLIKE = re.compile(r"\b(sk|sess|rk)-[A-Za-z0-9_\-*.]{4,}")
_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+")


def sanitize(text: str, *, secret: str = "", limit: int = ERROR_DETAIL_MAX) -> str:
    """One line, the key (and anything key-shaped, e.g. OpenAI's masked echo) and URLs removed."""
    t = " ".join(str(text).split())
    if secret and len(secret) >= 4:
        t = t.replace(secret, "[redacted]")
    t = _KEYLIKE.sub("[redacted]", t)
    t = _URL_RE.sub("[url]", t)
    return t[:limit]


def is_reasoning_model(model: str) -> bool:
    """gpt-5* (except chat variants) and o-series models take ``reasoning`` and ignore temperature."""
    m = (model or "").strip().lower()
    if m.startswith("gpt-5"):
        return "chat" not in m
    return bool(re.match(r"^o\d", m))


def _model_params(model: str) -> dict[str, Any]:
    """Model, strict structured output and reasoning/temperature settings shared by both modes."""
    text: dict[str, Any] = {
        "format": {
            "type": "json_schema",
            "name": SCHEMA_NAME,
            "schema": step_analysis_json_schema(),
            "strict": True,
        }
    }
    params: dict[str, Any] = {"model": model, "text": text}
    if is_reasoning_model(model):
        params["reasoning"] = {"effort": "high", "summary": "detailed"}
        if model.strip().lower().startswith("gpt-5"):
            text["verbosity"] = "high"
    else:
        params["temperature"] = 0
    return params


def build_request(*, model: str, prompt: str) -> dict[str, Any]:
    """Keyword arguments for ``responses.create`` in prompt mode (exposed for tests and batch export)."""
    params = _model_params(model)
    return {"model": params.pop("model"), "input": [{"role": "user", "content": prompt}], **params}


def tools_round_choice(round_number: int, max_rounds: int) -> str:
    """``tool_choice`` of a tools-mode round (1-based): ``required`` first, ``none`` last, else ``auto``.

    Round 1 forces the model to look at the transcript before judging; the last round forbids tools
    so the conversation always ends with an answer.
    """
    if round_number <= 1:
        return "required"
    if round_number >= max_rounds:
        return "none"
    return "auto"


def build_tools_request(
    *, model: str, input_items: list[dict[str, Any]], tools: list[dict[str, Any]], tool_choice: str
) -> dict[str, Any]:
    """Keyword arguments for one tools-mode round.

    The whole conversation so far is sent as ``input`` (no ``previous_response_id``): the run does
    not depend on server-side state and every request is self-describing. The strict step schema is
    sent on every round — it only constrains the final text answer, tool calls are unaffected.
    """
    params = _model_params(model)
    return {"model": params.pop("model"), "input": list(input_items), "tools": tools,
            "tool_choice": tool_choice, **params}


def parse_step_output(raw: str, *, repair_brace: bool = True) -> dict[str, Any]:
    """JSON-decode and validate a step answer. Raises LlmError.

    Prompt mode appends a final ``}`` when missing (legacy repair, spec 03 §3.1); tools mode does
    not (``repair_brace=False``).
    """
    text = (raw or "").strip()
    if not text:
        raise LlmError("LLM returned empty output")
    if repair_brace and not text.endswith("}"):
        text += "}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LlmError(f"LLM output is not valid JSON ({exc.msg} at char {exc.pos})") from None
    return validate_step_output(data)


def validate_step_output(data: Any) -> dict[str, Any]:
    try:
        return StepAnalysis.model_validate(data).model_dump()
    except ValidationError as exc:
        locs = ", ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}:{e['type']}" for e in exc.errors()[:5]
        )
        raise LlmError(f"LLM output does not match the step schema ({locs})") from None


def _usage_from(usage: Any) -> dict[str, int]:
    if usage is None:
        return _zero_usage()

    def _get(name: str) -> int:
        v = getattr(usage, name, None)
        if v is None and isinstance(usage, dict):
            v = usage.get(name)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0

    p, c = _get("input_tokens"), _get("output_tokens")
    t = _get("total_tokens") or p + c
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": t}


def _add_usage(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {k: total.get(k, 0) + more.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _item_dict(item: Any) -> dict[str, Any]:
    """A response output item as an input item for the next round (as the API returned it)."""
    if isinstance(item, dict):
        return {k: v for k, v in item.items() if v is not None}
    to_dict = getattr(item, "to_dict", None)
    if callable(to_dict):
        return to_dict(mode="json", exclude_none=True)
    return item.model_dump(mode="json", exclude_none=True, by_alias=True)


def _function_calls(response: Any) -> list[Any]:
    return [item for item in getattr(response, "output", None) or [] if getattr(item, "type", None) == "function_call"]


def _refusal(response: Any) -> str | None:
    for item in getattr(response, "output", None) or []:
        if getattr(item, "type", None) != "message":
            continue
        for content in getattr(item, "content", None) or []:
            if getattr(content, "type", None) == "refusal":
                return str(getattr(content, "refusal", "") or "refused")
    return None


class OpenAiAuditor:
    """One Responses API call per step. Create one per event loop (the SDK client is loop-bound)."""

    def __init__(
        self,
        api_key: str,
        *,
        model: str,
        base_url: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 3,
        tool_limits: ToolLimits | None = None,
    ) -> None:
        self._api_key = normalize_secret(api_key)
        self.model = model
        self.base_url = base_url or None
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.tool_limits = tool_limits or ToolLimits()
        self._client: Any = None

    def __repr__(self) -> str:
        return f"OpenAiAuditor(model={self.model!r})"

    def _sdk(self) -> Any:
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            try:
                await self._client.close()
            finally:
                self._client = None

    async def __aenter__(self) -> "OpenAiAuditor":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _provider_error(self, exc: Exception) -> LlmError:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return LlmError("OpenAI request timed out")
        if isinstance(exc, openai.APIConnectionError):
            return LlmError("OpenAI connection error")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = ""
            body = exc.body
            if isinstance(body, dict):
                err = body.get("error") if isinstance(body.get("error"), dict) else body
                msg, code = err.get("message"), err.get("code")
                if isinstance(code, str) and code:
                    detail += f" code={sanitize(code, secret=self._api_key, limit=64)}"
                if isinstance(msg, str) and msg.strip():
                    detail += f": {sanitize(msg, secret=self._api_key)}"
            hint = " (check OPENAI_API_KEY)" if status == 401 else ""
            return LlmError(f"OpenAI request failed status={status}{detail}{hint}", status=status)
        return LlmError(f"OpenAI call failed: {type(exc).__name__}")

    async def _create(self, params: dict[str, Any], step: AuditStepSpec) -> Any:
        try:
            return await self._sdk().responses.create(**params)
        except Exception as exc:  # noqa: BLE001 - SDK exceptions carry request objects; never propagate
            err = self._provider_error(exc)
            logger.warning("step %s LLM call failed: %s", step.position, err)
            raise err from None

    def _check_response(self, response: Any) -> None:
        refusal = _refusal(response)
        if refusal is not None:
            raise LlmError(f"LLM refused: {sanitize(refusal, secret=self._api_key)}")
        status = getattr(response, "status", None)
        if status not in (None, "completed"):
            reason = getattr(getattr(response, "incomplete_details", None), "reason", None)
            raise LlmError(f"LLM response {status}" + (f" ({reason})" if reason else ""))

    async def analyze_step(
        self,
        *,
        prompt: str,
        config: AuditConfigSpec,
        step: AuditStepSpec,
        timeline: list[dict[str, Any]],
        system_prompt: str | None = None,
        transcript_mode: str = "prompt",
    ) -> StepCallResult:
        """Analyse one step. ``transcript_mode="tools"`` runs the tool conversation over ``timeline``
        (``prompt`` is then the user message and ``system_prompt`` the system message)."""
        if not self._api_key:
            raise LlmError(MISSING_KEY_MESSAGE)
        if transcript_mode == "tools":
            return await self._analyze_with_tools(
                system_prompt=system_prompt or "", prompt=prompt, step=step, timeline=timeline
            )
        response = await self._create(build_request(model=self.model, prompt=prompt), step)
        self._check_response(response)
        output = parse_step_output(response.output_text)
        return StepCallResult(
            output=output,
            usage=_usage_from(getattr(response, "usage", None)),
            model=str(getattr(response, "model", None) or self.model),
        )

    async def _analyze_with_tools(
        self, *, system_prompt: str, prompt: str, step: AuditStepSpec, timeline: list[dict[str, Any]]
    ) -> StepCallResult:
        """Tools mode (spec 03 §5): at most ``max_rounds`` model rounds over the frozen timeline.

        Round 1 ``tool_choice=required``, middle rounds ``auto``, the last ``none``. Each round's
        output items and the JSON results of its tool calls are appended to the input of the next
        round. The first round without tool calls ends the loop; its text must be the step JSON
        (no brace repair). Usage is summed over rounds. Tool argument errors are returned to the
        model as tool results; provider errors, refusals and invalid answers raise LlmError.
        """
        limits = self.tool_limits
        rounds = max(2, limits.max_rounds)
        index = TranscriptIndex(timeline)
        tools = tool_definitions(limits)
        items: list[dict[str, Any]] = []
        if system_prompt.strip():
            items.append({"role": "system", "content": system_prompt})
        items.append({"role": "user", "content": prompt})
        usage = _zero_usage()
        model = self.model
        tool_calls = 0
        for number in range(1, rounds + 1):
            params = build_tools_request(
                model=self.model, input_items=items, tools=tools, tool_choice=tools_round_choice(number, rounds)
            )
            response = await self._create(params, step)
            usage = _add_usage(usage, _usage_from(getattr(response, "usage", None)))
            model = str(getattr(response, "model", None) or model)
            self._check_response(response)
            calls = _function_calls(response)
            if not calls:
                logger.info("step %s tools mode: answered in round %s after %s tool call(s)",
                            step.position, number, tool_calls)
                output = parse_step_output(getattr(response, "output_text", "") or "", repair_brace=False)
                return StepCallResult(output=output, usage=usage, model=model)
            items.extend(_item_dict(item) for item in getattr(response, "output", None) or [])
            for call in calls:
                tool_calls += 1
                result = run_tool_call(index, str(getattr(call, "name", "")), getattr(call, "arguments", ""), limits)
                items.append({
                    "type": "function_call_output",
                    "call_id": str(getattr(call, "call_id", "")),
                    "output": tool_output_json(result),
                })
        raise LlmError(f"LLM kept calling tools after {rounds} rounds (tool_choice none ignored)")


def _estimate_tokens(text: str) -> int:
    return max(0, (len(text) + 3) // 4)


class OfflineAuditor:
    """Deterministic keyword auditor (:mod:`auditflow_dagster.sample.offline_auditor`), same contract.

    Usage is a rough chars/4 estimate so dashboards look plausible; it costs nothing. In tools mode
    it exercises the transcript tools the way the advised strategy does — one search with the
    step's name, keywords and control points, one fetch of the hits with ±1 neighbour — and judges
    only the chunks it fetched, like a model that can only quote what it read.
    """

    model = OFFLINE_MODEL

    def __init__(self, *, latency_seconds: float = 0.0, tool_limits: ToolLimits | None = None) -> None:
        self.latency_seconds = max(0.0, float(latency_seconds))
        self.tool_limits = tool_limits or ToolLimits()

    def _tools_view(self, step: AuditStepSpec, timeline: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        """The sub-timeline made of the chunks the tools returned, and the tool outputs (for usage)."""
        index = TranscriptIndex(timeline)
        query = " ".join([step.name, *step.keywords, *step.control_points])
        found = search_transcript(index, query, max_results=self.tool_limits.max_search_results)
        log = [tool_output_json(found)]
        refs = [{"recording_index": m["recording_index"], "chunk_index": m["chunk_index"]} for m in found["matches"]]
        view: list[dict[str, Any]] = []
        if refs:
            fetched = get_transcript_chunks(index, refs, include_neighbors=1,
                                            max_chars=self.tool_limits.max_chunk_chars,
                                            max_fetch=self.tool_limits.max_chunk_fetch)
            log.append(tool_output_json(fetched))
            by_rec: dict[int, dict[str, Any]] = {}
            for c in fetched["chunks"]:
                rec = by_rec.get(c["recording_index"])
                if rec is None:
                    rec = by_rec[c["recording_index"]] = {
                        "recording_index": c["recording_index"], "recording_date": c["recording_date"],
                        "recording_time": c["recording_time"], "recording_url": c["recording_url"], "chunks": []}
                    view.append(rec)
                rec["chunks"].append({"chunk_index": c["chunk_index"], "start_timestamp": c["start_timestamp"],
                                      "end_timestamp": c["end_timestamp"], "speakers": c["speakers"],
                                      "full_text": c["full_text"]})
        return view, "\n".join(log)

    async def analyze_step(
        self,
        *,
        prompt: str,
        config: AuditConfigSpec,
        step: AuditStepSpec,
        timeline: list[dict[str, Any]],
        system_prompt: str | None = None,
        transcript_mode: str = "prompt",
    ) -> StepCallResult:
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        seen = prompt or ""
        try:
            from auditflow_dagster.sample.offline_auditor import audit_step

            if transcript_mode == "tools":
                view, tool_log = self._tools_view(step, timeline)
                seen = "\n".join([system_prompt or "", seen, tool_log])
                raw = audit_step(config, step, view)
            else:
                raw = audit_step(config, step, timeline)
        except Exception as exc:  # noqa: BLE001
            raise LlmError(f"offline auditor failed: {sanitize(str(exc) or type(exc).__name__)}") from None
        output = validate_step_output(raw)
        p = _estimate_tokens(seen)
        c = _estimate_tokens(json.dumps(output, ensure_ascii=False))
        return StepCallResult(
            output=output, usage={"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}, model=OFFLINE_MODEL
        )

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> "OfflineAuditor":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


LLM_MODES = ("openai", "offline")


class LlmResource(ConfigurableResource):
    """Which auditor the pipeline uses. ``api_key`` is a secret: never logged."""

    mode: str = "offline"
    api_key: str = Field(default="", repr=False, description="OpenAI key (secret; prefer EnvVar)")
    base_url: str | None = None
    model: str = "gpt-5.2"
    timeout_seconds: float = 600.0
    max_retries: int = 3
    offline_latency_seconds: float = 0.0
    # Tools mode (spec 03 §5); None ⇒ the AUDIT_TOOLS_* settings.
    tools_max_rounds: int | None = None
    tools_max_search_results: int | None = None
    tools_max_chunk_fetch: int | None = None
    tools_max_chunk_chars: int | None = None

    @classmethod
    def from_settings(cls, settings: Any | None = None) -> "LlmResource":
        if settings is None:
            from auditflow_dagster.settings import get_settings

            settings = get_settings()
        return cls(
            mode=settings.llm_mode,
            api_key=secret_field_value(settings.openai_api_key, "OPENAI_API_KEY"),
            base_url=settings.openai_base_url,
            model=settings.openai_model_audit,
            timeout_seconds=float(settings.openai_timeout_seconds),
            max_retries=max(0, int(settings.openai_max_retries)),
        )

    def _check(self) -> None:
        if self.mode not in LLM_MODES:
            raise ValueError(f"LLM mode must be one of {LLM_MODES}, got {self.mode!r} (AUDITFLOW_LLM)")

    def setup_for_execution(self, context: Any) -> None:
        self._check()

    @property
    def model_name(self) -> str:
        return self.model if self.mode == "openai" else OFFLINE_MODEL

    def tool_limits(self) -> ToolLimits:
        from auditflow_dagster.settings import get_settings

        settings = get_settings()

        def pick(value: int | None, setting: int) -> int:
            return setting if value is None else value

        return ToolLimits.normalized(
            max_rounds=pick(self.tools_max_rounds, settings.audit_tools_max_rounds),
            max_search_results=pick(self.tools_max_search_results, settings.audit_tools_max_search_results),
            max_chunk_fetch=pick(self.tools_max_chunk_fetch, settings.audit_tools_max_chunk_fetch),
            max_chunk_chars=pick(self.tools_max_chunk_chars, settings.audit_tools_max_chunk_chars),
        )

    def client(self) -> OpenAiAuditor | OfflineAuditor:
        self._check()
        limits = self.tool_limits()
        if self.mode == "offline":
            return OfflineAuditor(latency_seconds=self.offline_latency_seconds, tool_limits=limits)
        return OpenAiAuditor(
            resolve_secret(self.api_key),
            model=self.model,
            base_url=self.base_url,
            timeout=self.timeout_seconds,
            max_retries=self.max_retries,
            tool_limits=limits,
        )
