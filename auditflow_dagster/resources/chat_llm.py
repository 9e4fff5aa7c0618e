"""The chat model (spec 04 §6 step 4): a streamed OpenAI Responses API call, or its offline twin.

:class:`OpenAiChat` *is* an :class:`~auditflow_dagster.resources.llm.OpenAiAuditor` (same SDK
construction, key normalisation, timeouts, retries and sanitised provider errors) that streams
text deltas instead of parsing a step answer. :func:`chat_client` builds it from the settings the
way the pipeline builds its auditor (:meth:`LlmResource.from_settings`), so the key is resolved in
one place and never logged. Create one per process and event loop (the API keeps it on
``app.state``).

:class:`OfflineChat` (``AUDITFLOW_LLM=offline``) answers deterministically from the context
(:func:`auditflow_dagster.core.chat.offline_reply`) in small chunks, through the same SSE path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from auditflow_dagster.core.chat import offline_reply
from auditflow_dagster.resources.llm import (
    MISSING_KEY_MESSAGE,
    OFFLINE_MODEL,
    LlmError,
    LlmResource,
    OpenAiAuditor,
    is_reasoning_model,
    sanitize,
)
from auditflow_dagster.resources.secrets import resolve_secret

OFFLINE_CHUNK_CHARS = 7


def build_chat_request(
    *, model: str, instructions: str, input_items: list[dict[str, Any]], max_output_tokens: int,
    temperature: float = 0.0,
) -> dict[str, Any]:
    """Keyword arguments of the streamed ``responses.create``: reasoning effort ``medium`` and
    verbosity ``low`` on reasoning models, ``temperature`` only on models that accept it."""
    params: dict[str, Any] = {
        "model": model,
        "instructions": instructions,
        "input": list(input_items),
        "max_output_tokens": int(max_output_tokens),
        "stream": True,
    }
    if is_reasoning_model(model):
        params["reasoning"] = {"effort": "medium"}
        if model.strip().lower().startswith("gpt-5"):
            params["text"] = {"verbosity": "low"}
    else:
        params["temperature"] = float(temperature)
    return params


class ChatModel(Protocol):
    model: str

    def stream(self, *, instructions: str, input_items: list[dict[str, Any]],
               timeline: list[dict[str, Any]], summary: str | None = None) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


class OpenAiChat(OpenAiAuditor):
    """Streams an answer through the Responses API; every failure is a sanitised :class:`LlmError`."""

    def __init__(self, api_key: str, *, model: str, max_output_tokens: int = 3000, temperature: float = 0.0,
                 base_url: str | None = None, timeout: float = 600.0, max_retries: int = 3) -> None:
        super().__init__(api_key, model=model, base_url=base_url, timeout=timeout, max_retries=max_retries)
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature

    def __repr__(self) -> str:
        return f"OpenAiChat(model={self.model!r})"

    async def stream(self, *, instructions: str, input_items: list[dict[str, Any]],
                     timeline: list[dict[str, Any]], summary: str | None = None) -> AsyncIterator[str]:
        """Text deltas, in order. Raises LlmError on a provider error, an ``error`` or
        ``response.failed`` event, or a broken connection."""
        if not self._api_key:
            raise LlmError(MISSING_KEY_MESSAGE)
        params = build_chat_request(model=self.model, instructions=instructions, input_items=input_items,
                                    max_output_tokens=self.max_output_tokens, temperature=self.temperature)
        try:
            events = await self._sdk().responses.create(**params)
        except Exception as exc:  # noqa: BLE001 - SDK exceptions carry request objects; never propagate
            raise self._provider_error(exc) from None
        try:
            async for event in events:
                kind = getattr(event, "type", "")
                if kind == "response.output_text.delta":
                    delta = getattr(event, "delta", "")
                    if isinstance(delta, str) and delta:
                        yield delta
                elif kind == "error":
                    message = sanitize(str(getattr(event, "message", "") or "stream error"), secret=self._api_key)
                    raise LlmError(f"OpenAI stream error: {message}")
                elif kind == "response.failed":
                    error = getattr(getattr(event, "response", None), "error", None)
                    detail = sanitize(str(getattr(error, "message", "") or ""), secret=self._api_key)
                    raise LlmError("OpenAI response failed" + (f": {detail}" if detail else ""))
        except LlmError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._provider_error(exc) from None
        finally:
            try:
                await events.close()
            except Exception:  # noqa: BLE001 - closing a broken stream must not hide the first error
                pass


class OfflineChat:
    """Deterministic twin: quotes the timeline line closest to the question, in small chunks."""

    model = OFFLINE_MODEL

    def __init__(self, *, chunk_chars: int = OFFLINE_CHUNK_CHARS, delay_seconds: float = 0.0) -> None:
        self.chunk_chars = max(1, int(chunk_chars))
        self.delay_seconds = max(0.0, float(delay_seconds))

    async def stream(self, *, instructions: str, input_items: list[dict[str, Any]],
                     timeline: list[dict[str, Any]], summary: str | None = None) -> AsyncIterator[str]:
        question = str(input_items[-1].get("content", "")) if input_items else ""
        text = offline_reply(question, timeline, summary)
        for i in range(0, len(text), self.chunk_chars):
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            else:
                await asyncio.sleep(0)
            yield text[i: i + self.chunk_chars]

    async def aclose(self) -> None:
        return None


def chat_client(settings: Any | None = None) -> OpenAiChat | OfflineChat:
    """The chat model of ``AUDITFLOW_LLM``: the same key, base URL, timeout and retries as the
    auditor (:meth:`LlmResource.from_settings`), with the chat model and token budget."""
    if settings is None:
        from auditflow_dagster.settings import get_settings

        settings = get_settings()
    resource = LlmResource.from_settings(settings)
    resource._check()
    if resource.mode == "offline":
        return OfflineChat()
    return OpenAiChat(
        resolve_secret(resource.api_key),
        model=settings.openai_model_chat,
        max_output_tokens=settings.openai_max_tokens_chat,
        temperature=settings.openai_temperature_chat,
        base_url=resource.base_url,
        timeout=resource.timeout_seconds,
        max_retries=resource.max_retries,
    )
