"""Per-step LLM call (spec 03 §3.1) and its offline twin.

:class:`OpenAiAuditor` makes one OpenAI Responses API call per audit step with strict JSON-schema
output and validates the answer against :class:`StepAnalysis`. Every failure (provider error after
the SDK's own retries, refusal, empty/invalid JSON, schema mismatch) becomes an :class:`LlmError`
with a sanitised message; the caller turns it into a fallback step (spec 03 §8).
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


def build_request(*, model: str, prompt: str) -> dict[str, Any]:
    """Keyword arguments for ``responses.create`` (exposed for tests and for batch export)."""
    text: dict[str, Any] = {
        "format": {
            "type": "json_schema",
            "name": SCHEMA_NAME,
            "schema": step_analysis_json_schema(),
            "strict": True,
        }
    }
    params: dict[str, Any] = {
        "model": model,
        "input": [{"role": "user", "content": prompt}],
        "text": text,
    }
    if is_reasoning_model(model):
        params["reasoning"] = {"effort": "high", "summary": "detailed"}
        if model.strip().lower().startswith("gpt-5"):
            text["verbosity"] = "high"
    else:
        params["temperature"] = 0
    return params


def parse_step_output(raw: str) -> dict[str, Any]:
    """Prompt-mode parsing: append a final ``}`` if missing, JSON-decode, validate. Raises LlmError."""
    text = (raw or "").strip()
    if not text:
        raise LlmError("LLM returned empty output")
    if not text.endswith("}"):
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
    ) -> None:
        self._api_key = normalize_secret(api_key)
        self.model = model
        self.base_url = base_url or None
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
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

    async def analyze_step(
        self,
        *,
        prompt: str,
        config: AuditConfigSpec,
        step: AuditStepSpec,
        timeline: list[dict[str, Any]],
    ) -> StepCallResult:
        if not self._api_key:
            raise LlmError(MISSING_KEY_MESSAGE)
        params = build_request(model=self.model, prompt=prompt)
        try:
            response = await self._sdk().responses.create(**params)
        except Exception as exc:  # noqa: BLE001 - SDK exceptions carry request objects; never propagate
            err = self._provider_error(exc)
            logger.warning("step %s LLM call failed: %s", step.position, err)
            raise err from None
        status = getattr(response, "status", None)
        refusal = _refusal(response)
        if refusal is not None:
            raise LlmError(f"LLM refused: {sanitize(refusal, secret=self._api_key)}")
        if status not in (None, "completed"):
            reason = getattr(getattr(response, "incomplete_details", None), "reason", None)
            raise LlmError(f"LLM response {status}" + (f" ({reason})" if reason else ""))
        output = parse_step_output(response.output_text)
        return StepCallResult(
            output=output,
            usage=_usage_from(getattr(response, "usage", None)),
            model=str(getattr(response, "model", None) or self.model),
        )


def _estimate_tokens(text: str) -> int:
    return max(0, (len(text) + 3) // 4)


class OfflineAuditor:
    """Deterministic keyword auditor (:mod:`auditflow_dagster.sample.offline_auditor`), same contract.

    Usage is a rough chars/4 estimate so dashboards look plausible; it costs nothing.
    """

    model = OFFLINE_MODEL

    def __init__(self, *, latency_seconds: float = 0.0) -> None:
        self.latency_seconds = max(0.0, float(latency_seconds))

    async def analyze_step(
        self,
        *,
        prompt: str,
        config: AuditConfigSpec,
        step: AuditStepSpec,
        timeline: list[dict[str, Any]],
    ) -> StepCallResult:
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        try:
            from auditflow_dagster.sample.offline_auditor import audit_step

            raw = audit_step(config, step, timeline)
        except Exception as exc:  # noqa: BLE001
            raise LlmError(f"offline auditor failed: {sanitize(str(exc) or type(exc).__name__)}") from None
        output = validate_step_output(raw)
        p = _estimate_tokens(prompt or "")
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

    def client(self) -> OpenAiAuditor | OfflineAuditor:
        self._check()
        if self.mode == "offline":
            return OfflineAuditor(latency_seconds=self.offline_latency_seconds)
        return OpenAiAuditor(
            resolve_secret(self.api_key),
            model=self.model,
            base_url=self.base_url,
            timeout=self.timeout_seconds,
            max_retries=self.max_retries,
        )
