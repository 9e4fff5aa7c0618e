"""A fake OpenAI Responses API (``POST /v1/responses``) returning real Response objects.

Besides canned answers it can run a ``handler`` per request, which sees the decoded request body
(so a test can check the conversation the client sends — tool results, ``tool_choice`` per round)
and returns the next response, e.g. function calls built with :func:`function_call`. A failing
check in a handler is recorded in ``errors`` and answered with a 400 (never retried by the SDK).

A request with ``"stream": true`` is answered with server-sent events as the Responses API sends
them (``response.created`` … ``response.output_text.delta`` × n … ``response.completed``): the
deltas are ``stream_deltas`` (default: ``output_text`` in one piece), or a :class:`StreamReply`
returned by the handler; ``fail`` ends the stream with an ``error`` event or a dropped connection.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import Reply


def step_analysis_example(points: list[str] | None = None) -> dict[str, Any]:
    """A valid StepAnalysis (spec 03 §3.4 synthetic example)."""
    points = points or ["Recording announced", "Right to object"]
    pcs: list[dict[str, Any]] = []
    for i, p in enumerate(points):
        present = i == 0
        pcs.append(
            {
                "point": p,
                "statut": "PRESENT" if present else "ABSENT",
                "commentaire": "At call start." if present else "Not found.",
                "citations": [
                    {
                        "texte": "je vous informe que l'appel est enregistré",
                        "minutage": "00:12",
                        "minutage_secondes": 12.4,
                        "speaker": "speaker_0",
                        "recording_index": 0,
                        "chunk_index": 0,
                        "recording_date": "02/01/2025",
                        "recording_time": "10:15",
                        "recording_url": "N/A",
                    }
                ]
                if present
                else [],
                "minutages": ["00:12"] if present else [],
                "erreur_transcription_notee": False,
                "variation_phonetique_utilisee": None,
            }
        )
    return {
        "traite": True,
        "conforme": "PARTIEL",
        "minutages": ["00:12"],
        "score": 5,
        "points_controle": pcs,
        "mots_cles_trouves": ["enregistré"],
        "commentaire_global": "Partiel.",
        "niveau_conformite": "ACCEPTABLE",
        "erreurs_transcription_tolerees": 0,
    }


def function_call(name: str, arguments: Any, *, call_id: str | None = None) -> dict[str, Any]:
    """A ``function_call`` output item; ``arguments`` is sent as given when a string, else as JSON."""
    return {
        "id": f"fc_{uuid.uuid4().hex}",
        "type": "function_call",
        "status": "completed",
        "name": name,
        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        "call_id": call_id or f"call_{uuid.uuid4().hex[:12]}",
    }


def response_object(
    output_text: str, *, model: str, usage: tuple[int, int] = (1200, 300), refusal: str | None = None,
    status: str = "completed", tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Response; with ``tool_calls`` the output is those ``function_call`` items (plus a message
    only when ``output_text`` is non-empty)."""
    content: dict[str, Any]
    if refusal is not None:
        content = {"type": "refusal", "refusal": refusal}
    else:
        content = {"type": "output_text", "text": output_text, "annotations": [], "logprobs": []}
    output: list[dict[str, Any]] = []
    if model.startswith(("gpt-5", "o")):
        output.append({"id": f"rs_{uuid.uuid4().hex}", "type": "reasoning", "summary": [], "status": None})
    if not tool_calls or output_text or refusal is not None:
        output.append(
            {
                "id": f"msg_{uuid.uuid4().hex}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [content],
            }
        )
    output.extend(tool_calls or [])
    inp, out = usage
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": inp + out,
        },
        "user": None,
        "metadata": {},
    }


def _sse(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


class StreamReply:
    """A streamed Responses API answer: ``deltas`` as ``response.output_text.delta`` events, then
    ``response.completed``; ``fail="error"`` sends an ``error`` event instead of completing,
    ``fail="drop"`` cuts the connection after the deltas."""

    def __init__(self, deltas: list[str], *, fail: str | None = None, delay: float = 0.0) -> None:
        self.deltas, self.fail, self.delay = list(deltas), fail, delay

    def events(self, model: str) -> Any:
        import asyncio

        text = "".join(self.deltas)
        final = response_object(text, model=model)
        message = next(o for o in final["output"] if o["type"] == "message")
        started = {**final, "status": "in_progress", "output": [], "usage": None}
        item = {**message, "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        index = len(final["output"]) - 1
        seq = iter(range(1_000_000))

        async def body() -> Any:
            yield _sse({"type": "response.created", "sequence_number": next(seq), "response": started})
            yield _sse({"type": "response.in_progress", "sequence_number": next(seq), "response": started})
            yield _sse({"type": "response.output_item.added", "sequence_number": next(seq), "output_index": index,
                        "item": item})
            yield _sse({"type": "response.content_part.added", "sequence_number": next(seq), "item_id": message["id"],
                        "output_index": index, "content_index": 0, "part": part})
            for delta in self.deltas:
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield _sse({"type": "response.output_text.delta", "sequence_number": next(seq),
                            "item_id": message["id"], "output_index": index, "content_index": 0, "delta": delta,
                            "logprobs": []})
            if self.fail == "drop":
                raise ConnectionAbortedError("fake OpenAI dropped the stream")
            if self.fail == "error":
                yield _sse({"type": "error", "sequence_number": next(seq), "code": "server_error",
                            "message": "The server had an error while processing your request.", "param": None})
                return
            yield _sse({"type": "response.output_text.done", "sequence_number": next(seq), "item_id": message["id"],
                        "output_index": index, "content_index": 0, "text": text, "logprobs": []})
            yield _sse({"type": "response.content_part.done", "sequence_number": next(seq),
                        "item_id": message["id"], "output_index": index, "content_index": 0,
                        "part": message["content"][0]})
            yield _sse({"type": "response.output_item.done", "sequence_number": next(seq), "output_index": index,
                        "item": message})
            yield _sse({"type": "response.completed", "sequence_number": next(seq), "response": final})

        return body()

    def render(self, model: str) -> StreamingResponse:
        return StreamingResponse(self.events(model), media_type="text/event-stream")


class FakeOpenAI:
    """Records each request; answers from ``script`` first, else with ``output_text``."""

    def __init__(self, api_key: str = "sk-test-fake-key-abcdef123456") -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.script: deque[Reply] = deque()
        self.output_text: str = json.dumps(step_analysis_example())
        self.refusal: str | None = None
        self.status: str = "completed"
        #: Deltas of a streamed answer (None: ``output_text`` in one delta); ``stream_fail`` see StreamReply.
        self.stream_deltas: list[str] | None = None
        self.stream_fail: str | None = None
        #: Called with each authorised request body; returns a Response dict or a Reply.
        self.handler: Callable[[dict[str, Any]], Any] | None = None
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/responses", self._responses, methods=["POST"])])

    async def _responses(self, request: Request) -> Any:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            self.requests.append({"headers": headers, "json": payload, "path": request.url.path})
            scripted = self.script.popleft() if self.script else None
        if headers.get("authorization") != f"Bearer {self.api_key}":
            masked = headers.get("authorization", "")[7:]
            masked = masked[:3] + "*" * 6 + masked[-4:] if len(masked) > 8 else masked
            return JSONResponse(
                {
                    "error": {
                        "message": f"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
                status_code=401,
            )
        if scripted:
            return await scripted.render()
        if self.handler is not None and isinstance(payload, dict):
            try:
                with self._lock:
                    answer = self.handler(payload)
            except Exception as exc:  # noqa: BLE001 - a failed check is reported to the test, not raised here
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return JSONResponse({"error": {"message": f"fake check failed: {exc}"[:500],
                                               "type": "invalid_request_error"}}, status_code=400)
            if isinstance(answer, Reply):
                return await answer.render()
            if isinstance(answer, StreamReply):
                return answer.render(str(payload.get("model") or "gpt-5.2"))
            return JSONResponse(answer)
        if not isinstance(payload, dict) or not payload.get("model"):
            return JSONResponse({"error": {"message": "model required", "type": "invalid_request_error"}}, status_code=400)
        if payload.get("stream"):
            deltas = self.stream_deltas if self.stream_deltas is not None else [self.output_text]
            return StreamReply(deltas, fail=self.stream_fail).render(payload["model"])
        return JSONResponse(
            response_object(self.output_text, model=payload["model"], refusal=self.refusal, status=self.status)
        )
