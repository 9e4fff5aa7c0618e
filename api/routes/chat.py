"""Chat routes (spec 04 §6, spec 06 §4.7): history and streamed answers about an audit or a fiche.

``POST`` validates, loads the context sources, builds the context (pure), gets or creates the
conversation, loads its window and stores the user message — all in one transaction, so a
404 leaves nothing behind — then streams the model's answer as unnamed SSE ``data:`` events:
``{"text"}`` deltas with citation markers removed (a marker split across deltas is held back until
it closes), ``{"citations"}`` when at least one is valid, ``[DONE]``. A failure after the headers
went out is ``{"type":"error","error","code":"STREAM_ERROR"}`` then ``[DONE]``. The assistant
message (markers removed) is stored only when the stream completed.

With ``AUDITFLOW_REDACT_PII`` (default) the model sees the redacted timeline (an audit's redacted
snapshot, else redacted now), the prospect's e-mail and phone as placeholders, a facts section of
what was spoken, and the conversation redacted too; citations are validated against that same
text. The stored messages keep what the user typed (:mod:`auditflow_dagster.core.privacy`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from api.auth import check_fiches
from api.common import DIGITS, authorize, db_call, json_body, path_int
from api.errors import ApiError, not_found, validation_error
from auditflow_dagster.core import chat as core
from auditflow_dagster.core import privacy
from auditflow_dagster.db import chat as chat_db
from auditflow_dagster.resources.chat_llm import chat_client
from auditflow_dagster.resources.llm import LlmError, sanitize
from auditflow_dagster.settings import get_settings

log = logging.getLogger("auditflow.api.chat")

SSE_HEADERS = {"Cache-Control": "no-cache", "Connection": "keep-alive", "X-Accel-Buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream; charset=utf-8"
DONE = "data: [DONE]\n\n"
AUDIT_NOT_FOUND = "Audit not found"


def data_frame(payload: Any) -> str:
    return "data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n\n"


class _NoContext(Exception):
    pass


def _fiche_id(request: Request) -> str:
    fiche_id = request.path_params["fiche_id"]
    if not DIGITS.match(fiche_id):
        raise validation_error("Invalid fiche_id: digits expected")
    return fiche_id


def _audit_id(request: Request) -> int:
    return path_int(request, "audit_id", "audit_id")


def _fiche_missing(fiche_id: str) -> ApiError:
    return not_found(f"Fiche {fiche_id} not found")


async def _message(request: Request) -> str:
    body = await json_body(request)
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise validation_error("Message required")
    limit = get_settings().chat_max_message_chars
    if len(message) > limit:
        raise validation_error(f"Message too long (max {limit} characters)")
    return message


def _model(request: Request) -> Any:
    """One chat client per app (one SDK client per service), created on first use."""
    model = getattr(request.app.state, "chat_llm", None)
    if model is None:
        model = request.app.state.chat_llm = chat_client()
    return model


# --------------------------------------------------------------------------------------------- #
# History
# --------------------------------------------------------------------------------------------- #


def _audit_missing() -> ApiError:
    return ApiError(404, AUDIT_NOT_FOUND)  # out of scope answers like missing


async def audit_history(request: Request) -> JSONResponse:
    await authorize(request, "chat.read")
    await authorize(request, "audits.read")
    audit_id = _audit_id(request)

    def run(s: Session) -> dict[str, Any] | None:
        audit = chat_db.live_audit(s, audit_id)
        if audit is None:
            return None
        fiche_id = chat_db.fiche_id_of(s, audit)
        check_fiches(s, request, [fiche_id], _audit_missing())
        return chat_db.history(s, chat_db.get_or_create_conversation(s, fiche_id, audit.id), with_audit=True)

    data = await db_call(run)
    if data is None:
        return JSONResponse({"success": False, "error": AUDIT_NOT_FOUND}, status_code=404)
    return JSONResponse({"success": True, "data": data})


async def fiche_history(request: Request) -> JSONResponse:
    await authorize(request, "chat.read")
    await authorize(request, "fiches.read")
    fiche_id = _fiche_id(request)
    await authorize(request, "fiches.read", [fiche_id], missing=_fiche_missing(fiche_id))

    def run(s: Session) -> dict[str, Any] | None:
        if chat_db.cached_fiche(s, fiche_id) is None:
            return None
        return chat_db.history(s, chat_db.get_or_create_conversation(s, fiche_id, None), with_audit=False)

    data = await db_call(run)
    if data is None:
        raise _fiche_missing(fiche_id)
    return JSONResponse({"success": True, "data": data})


# --------------------------------------------------------------------------------------------- #
# Streamed answer
# --------------------------------------------------------------------------------------------- #


def _llm_view(fiche: dict[str, Any], timeline: list[dict[str, Any]]
              ) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """The fiche facts, timeline and facts section the model is shown: redacted with
    AUDITFLOW_REDACT_PII (header numbers filled from file names first, so they are masked too),
    else as stored and without a facts section."""
    timeline = core.fill_from_filenames(timeline)
    if not get_settings().redact_pii:
        return fiche, timeline, None
    timeline = privacy.llm_view(timeline)
    return privacy.redact_fiche_facts(fiche), timeline, privacy.facts_section(timeline)


def _prepare(s: Session, *, fiche_id: str, audit_id: int | None, message: str) -> tuple[int, list[dict[str, str]]]:
    conversation = chat_db.get_or_create_conversation(s, fiche_id, audit_id)
    window = [{"role": m.role, "content": m.content} for m in chat_db.window(s, conversation.id)]
    chat_db.add_message(s, conversation.id, "user", message)
    items = core.input_items(window, message)
    return conversation.id, privacy.redact_chat_items(items) if get_settings().redact_pii else items


async def _stream(model: Any, *, conversation_id: int, instructions: str, items: list[dict[str, str]],
                  timeline: list[dict[str, Any]], summary: str) -> AsyncIterator[str]:
    splitter = core.MarkerSplitter()
    try:
        async for delta in model.stream(instructions=instructions, input_items=items, timeline=timeline,
                                        summary=summary):
            visible = splitter.feed(delta)
            if visible:
                yield data_frame({"text": visible})
        tail = splitter.close()
        if tail:
            yield data_frame({"text": tail})
        citations = core.valid_citations(splitter.markers, timeline)
        await db_call(lambda s: chat_db.add_message(s, conversation_id, "assistant", splitter.text))
    except Exception as exc:  # noqa: BLE001 - the headers are out: report in-band, never raise
        error = str(exc) if isinstance(exc, LlmError) else "Chat stream failed"
        log.warning("chat stream of conversation %s failed: %s", conversation_id,
                    exc if isinstance(exc, LlmError) else sanitize(f"{type(exc).__name__}: {exc}"))
        yield data_frame({"type": "error", "error": error, "code": "STREAM_ERROR"})
        yield DONE
        return
    if citations:
        yield data_frame({"citations": citations})
    yield DONE


def _sse(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(body, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)


async def audit_chat(request: Request) -> Any:
    await authorize(request, "chat.write")  # spec 06 §4.7 "chat.use": the write suffix
    await authorize(request, "audits.read")
    audit_id = _audit_id(request)
    message = await _message(request)

    def run(s: Session) -> tuple[int, list[dict[str, str]], str, list[dict[str, Any]], str] | None:
        audit = chat_db.live_audit(s, audit_id)
        if audit is None:
            return None
        fiche_id = chat_db.fiche_id_of(s, audit)
        check_fiches(s, request, [fiche_id], _audit_missing())
        try:
            source = chat_db.audit_source(s, audit)
            fiche, timeline, facts = _llm_view(source["fiche"], source["timeline"])
            context = core.audit_context(fiche=fiche, recordings=source["recordings"],
                                         audit=source["audit"], steps=source["steps"], timeline=timeline,
                                         facts=facts)
        except Exception as exc:  # noqa: BLE001 - spec 04 §6 deviation: a context failure is a 404
            log.warning("chat context of audit %s failed: %s", audit_id, sanitize(f"{type(exc).__name__}: {exc}"))
            raise _NoContext() from None
        conversation_id, items = _prepare(s, fiche_id=fiche_id, audit_id=audit.id, message=message)
        a = source["audit"]
        summary = (f"Audit « {a['config_name']} » : score {a['score_percentage']} %, niveau {a['niveau']}, "
                   f"points critiques {a['critical_passed']}/{a['critical_total']}.")
        return conversation_id, items, context, timeline, summary

    try:
        prepared = await db_call(run)
    except _NoContext:
        raise not_found("Chat context not available for this audit") from None
    if prepared is None:
        return JSONResponse({"success": False, "error": AUDIT_NOT_FOUND}, status_code=404)
    conversation_id, items, context, timeline, summary = prepared
    return _sse(_stream(_model(request), conversation_id=conversation_id, instructions=context, items=items,
                        timeline=timeline, summary=summary))


async def fiche_chat(request: Request) -> Any:
    await authorize(request, "chat.write")  # spec 06 §4.7 "chat.use": the write suffix
    await authorize(request, "fiches.read")
    fiche_id = _fiche_id(request)
    message = await _message(request)
    await authorize(request, "fiches.read", [fiche_id], missing=_fiche_missing(fiche_id))

    def run(s: Session) -> tuple[int, list[dict[str, str]], str, list[dict[str, Any]], str] | None:
        row = chat_db.cached_fiche(s, fiche_id)
        if row is None:
            return None
        try:
            source = chat_db.fiche_source(s, row)
            fiche, timeline, facts = _llm_view(source["fiche"], source["timeline"])
            context = core.fiche_context(fiche=fiche, recordings=source["recordings"],
                                         audits=source["audits"], timeline=timeline, facts=facts)
        except Exception as exc:  # noqa: BLE001 - spec 04 §6 deviation: a context failure is a 404
            log.warning("chat context of fiche %s failed: %s", fiche_id, sanitize(f"{type(exc).__name__}: {exc}"))
            raise _NoContext() from None
        conversation_id, items = _prepare(s, fiche_id=fiche_id, audit_id=None, message=message)
        summary = f"Fiche {fiche_id} : {len(source['audits'])} audit(s), {source['recordings']['total']} enregistrement(s)."
        return conversation_id, items, context, timeline, summary

    try:
        prepared = await db_call(run)
    except _NoContext:
        raise not_found("Chat context not available for this fiche") from None
    if prepared is None:
        raise _fiche_missing(fiche_id)
    conversation_id, items, context, timeline, summary = prepared
    return _sse(_stream(_model(request), conversation_id=conversation_id, instructions=context, items=items,
                        timeline=timeline, summary=summary))


# Register before /api/fiches/{fiche_id} and /api/audits/{audit_id}.
routes = [
    Route("/api/audits/{audit_id}/chat/history", audit_history, methods=["GET"]),
    Route("/api/audits/{audit_id}/chat", audit_chat, methods=["POST"]),
    Route("/api/fiches/{fiche_id}/chat/history", fiche_history, methods=["GET"]),
    Route("/api/fiches/{fiche_id}/chat", fiche_chat, methods=["POST"]),
]
