"""The OpenAPI 3.0 document served at ``/api/openapi.json`` (and ``/api-docs.json``, legacy path).

Written by hand next to the routes: every route of :mod:`api.app` must appear here (a test checks
it), with its parameters, the success shape and the error envelope.
"""

from __future__ import annotations

from typing import Any

from auditflow_dagster.core import export as _export

ERROR = {"$ref": "#/components/schemas/Error"}


def _err(*codes: int) -> dict[str, Any]:
    text = {400: "Invalid input", 404: "Not found", 503: "Dagster or database unavailable", 502: "CRM unavailable",
            413: "Body too large", 409: "Conflict with the stored state"}
    return {str(c): {"description": text.get(c, "Error"), "content": {"application/json": {"schema": ERROR}}} for c in codes}


def _ok(schema: dict[str, Any], media: str = "application/json", description: str = "OK") -> dict[str, Any]:
    return {"200": {"description": description, "content": {media: {"schema": schema}}}}


def _created(schema: dict[str, Any]) -> dict[str, Any]:
    return {"201": {"description": "Created", "content": {"application/json": {"schema": schema}}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _data(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The E envelope (spec 06 §5.1) around ``schema``, with extra top-level keys (E+)."""
    return {"type": "object", "properties": {"success": {"type": "boolean"}, "data": schema, **extra}}


_MESSAGE = {"type": "object", "properties": {"success": {"type": "boolean"}, "message": {"type": "string"}}}
_BOOL_QUERY = {"type": "string", "enum": ["true", "false"], "default": "false"}
_CONFIG_ID = {"name": "config_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": r"^\d+$"}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": r"^\d+$"},
       "description": "audit config id"}
_STEP_ID = {"name": "step_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": r"^\d+$"}}


#: One server-sent event, as a client's parser sees it (for ``text/event-stream`` the schema
#: describes each event, as OpenAPI 3.2's ``itemSchema`` does): ``event`` defaults to ``message``,
#: ``data`` is the JSON payload text (``[DONE]`` ends a chat stream), ``id`` resumes via
#: ``Last-Event-ID``; a ``retry`` hint comes first and ``: ping`` heartbeat comments carry no event.
_SSE_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"},
    "retry": {"type": "integer"}}}


def _sse(description: str = "event stream") -> dict[str, Any]:
    return _ok(_SSE_EVENT, "text/event-stream", description)


def _path_param(name: str, pattern: str | None = None, description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


_CHAT = [
    ("/api/audits/{audit_id}", "audit", _path_param("audit_id", r"^\d+$", "database id")),
    ("/api/fiches/{fiche_id}", "fiche", _path_param("fiche_id", r"^\d+$")),
]


DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "AuditFlow API",
        "version": "2.3.0",
        "description": "Call-centre compliance audits on Dagster: fiches, recordings, transcriptions, audits, "
                       "and run event streams (SSE).",
    },
    "paths": {
        "/health": {"get": {"summary": "Liveness", "responses": _ok({"$ref": "#/components/schemas/Health"})}},
        "/health/ready": {
            "get": {
                "summary": "Readiness: database and Dagster GraphQL reachable",
                "responses": {**_ok(_ref("Readiness")), "503": {
                    "description": "A dependency is down (same shape, status degraded)",
                    "content": {"application/json": {"schema": _ref("Readiness")}}}},
            }
        },
        "/api/fiches/status/by-date": {
            "get": {
                "summary": "Cached fiches of one sales day with transcription and audit status",
                "parameters": [{"name": "date", "in": "query", "required": True,
                                "schema": {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}}],
                "responses": {**_ok({"type": "object", "properties": {
                    "success": {"type": "boolean"},
                    "data": {"type": "object", "properties": {"date": {"type": "string"}, "total": {"type": "integer"},
                                                              "fiches": {"type": "array", "items": {"type": "object"}}}}}}),
                              **_err(400)},
            }
        },
        "/api/fiches/status/by-date-range": {
            "get": {
                "summary": "Cached fiches of a date range at once; missing days are fetched by a background job",
                "parameters": [
                    {"name": "startDate", "in": "query", "required": True, "schema": {"type": "string", "format": "date"}},
                    {"name": "endDate", "in": "query", "required": True, "schema": {"type": "string", "format": "date"}},
                    {"name": "refresh", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}},
                    {"name": "webhookUrl", "in": "query", "schema": {"type": "string", "format": "uri"}},
                    {"name": "webhookSecret", "in": "query", "schema": {"type": "string"},
                     "description": "prefer the X-Webhook-Secret header (query strings end up in logs)"},
                    {"name": "X-Webhook-Secret", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {**_ok({"$ref": "#/components/schemas/DateRangeAnswer"}), **_err(400)},
            }
        },
        "/api/fiches/webhooks/fiches": {
            "get": {
                "summary": "Poll a progressive fetch job (legacy frontend polling shape)",
                "parameters": [{"name": "jobId", "in": "query", "required": True, "schema": {"type": "string"}}],
                "responses": {**_ok({"type": "object"}), **_err(400, 404)},
            }
        },
        "/api/fiches/jobs": {
            "get": {
                "summary": "Progressive fetch jobs, newest first",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["pending", "processing", "complete", "failed"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 20}},
                ],
                "responses": {**_ok({"type": "object"}), **_err(400)},
            }
        },
        "/api/fiches/jobs/{job_id}": {
            "get": {
                "summary": "One progressive fetch job with its last webhook deliveries",
                "parameters": [_path_param("job_id")],
                "responses": {**_ok({"type": "object"}), **_err(404)},
            }
        },
        "/api/fiches/{fiche_id}": {
            "get": {
                "summary": "CRM-shaped fiche details (cache first; refreshed through the pipeline when needed)",
                "parameters": [
                    _path_param("fiche_id", r"^\d+$"),
                    {"name": "refresh", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}},
                    {"name": "include_mail_devis", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}},
                ],
                "responses": {**_ok({"type": "object", "description": "raw CRM shape"}), **_err(404, 502)},
            }
        },
        "/api/audits/run": {
            "post": {
                "summary": "Queue an audit of one fiche with one config (launches a Dagster run)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunAudit"}}}},
                "responses": {**_ok({"$ref": "#/components/schemas/AuditQueued"}), **_err(400, 404, 503)},
            }
        },
        "/api/audits": {
            "post": {
                "summary": "Alias of /api/audits/run also accepting automation ids and trigger_source",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunAudit"}}}},
                "responses": {**_ok({"$ref": "#/components/schemas/AuditQueued"}), **_err(400, 404, 503)},
            }
        },
        "/api/audits/run-latest": {
            "post": {
                "summary": "Queue an audit of one fiche with the newest active config",
                "requestBody": _body({"type": "object", "required": ["fiche_id"], "properties": {
                    "fiche_id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                    "user_id": {"type": "string"},
                    "use_rlm": {"type": "boolean"}, "useRlm": {"type": "boolean"}}}),
                "responses": {**_ok({"allOf": [_ref("AuditQueued"), {"type": "object", "properties": {
                    "audit_config_name": {"type": "string"}}}]}),
                              **_err(400, 404, 503)},
                "description": "400 `Missing required parameters` without fiche_id; 404 when no config is active.",
            }
        },
        "/api/audit-configs": {
            "get": {
                "summary": "Audit configs, newest first (active only unless include_inactive=true)",
                "parameters": [{"name": n, "in": "query", "schema": _BOOL_QUERY}
                               for n in ("include_inactive", "include_steps", "include_stats")],
                "responses": {**_ok(_data({"type": "array", "items": _ref("AuditConfig")},
                                          count={"type": "integer"})), **_err(400)},
            },
            "post": {
                "summary": "Create a config with its steps (one transaction)",
                "requestBody": _body(_ref("AuditConfigInput")),
                "responses": {**_created(_data({"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}}})), **_err(400)},
            },
        },
        "/api/audit-configs/import": {
            "post": {
                "summary": "Import a config file in the legacy JSON format, unchanged (auditSteps[], informational "
                           "keys such as version or complianceThresholds are kept for export only)",
                "requestBody": _body(_ref("LegacyAuditConfig")),
                "responses": {**_created(_data({"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "stepsCount": {"type": "integer"}}})),
                              **_err(400)},
            }
        },
        "/api/audit-configs/{id}/export": {
            "get": {
                "summary": "The config in the legacy JSON format (raw, no envelope); importing it gives the same config",
                "parameters": [_ID],
                "responses": {**_ok(_ref("LegacyAuditConfig")), **_err(400, 404)},
            }
        },
        "/api/audit-configs/{id}": {
            "get": {
                "summary": "One config with its steps by position",
                "parameters": [_ID, {"name": "include_stats", "in": "query", "schema": _BOOL_QUERY}],
                "responses": {**_ok(_data(_ref("AuditConfig"))), **_err(400, 404)},
            },
            "put": {
                "summary": "Update some config fields; null clears description/systemPrompt",
                "parameters": [_ID],
                "requestBody": _body({"type": "object", "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "description": {"type": "string", "nullable": True},
                    "systemPrompt": {"type": "string", "nullable": True},
                    "isActive": {"type": "boolean"},
                    "runAutomatically": {"type": "boolean", "description": "the \"automatic\" flag"}}}),
                "responses": {**_ok(_data({"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "stepsCount": {"type": "integer"}}})),
                              **_err(400, 404)},
            },
            "delete": {
                "summary": "Delete a config and its steps; 409 while audits reference it",
                "parameters": [_ID],
                "responses": {**_ok(_MESSAGE), **_err(400, 404, 409)},
            },
        },
        "/api/audit-configs/{config_id}/steps": {
            "post": {
                "summary": "Add a step; 400 when the position is taken (the message names the next free one)",
                "parameters": [_CONFIG_ID],
                "requestBody": _body(_ref("AuditStepInput")),
                "responses": {**_created(_data(_ref("AuditStep"))), **_err(400, 404)},
            }
        },
        "/api/audit-configs/steps/{step_id}": {
            "put": {
                "summary": "Update some step fields; 409 when the new position belongs to another step",
                "parameters": [_STEP_ID],
                "requestBody": _body({**_ref("AuditStepInput"), "description": "any subset"}),
                "responses": {**_ok(_data(_ref("AuditStep"))), **_err(400, 404, 409)},
            },
            "delete": {
                "summary": "Delete a step (positions of the others are kept; see validate)",
                "parameters": [_STEP_ID],
                "responses": {**_ok(_MESSAGE), **_err(400, 404)},
            },
        },
        "/api/audit-configs/{config_id}/steps/reorder": {
            "put": {
                "summary": "Positions 1..n in stepIds order, in one transaction; stepIds must be exactly the "
                           "config's steps",
                "parameters": [_CONFIG_ID],
                "requestBody": _body({"type": "object", "required": ["stepIds"], "properties": {
                    "stepIds": {"type": "array", "items": {"type": "string", "pattern": r"^\d+$"}}}}),
                "responses": {**_ok({**_MESSAGE, "properties": {**_MESSAGE["properties"], "data": {
                    "type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "position": {"type": "integer"}}}}}}), **_err(400, 404)},
            }
        },
        "/api/audit-configs/{config_id}/validate": {
            "get": {
                "summary": "Informational checks: found, active, has steps, positions 1..n, names, prompts, "
                           "control points, weights",
                "parameters": [_CONFIG_ID],
                "responses": {**_ok(_data({"type": "object", "properties": {
                    "valid": {"type": "boolean"}, "errors": {"type": "array", "items": {"type": "string"}}}})),
                              **_err(400)},
            }
        },
        "/api/audit-configs/{config_id}/stats": {
            "get": {
                "summary": "Audit figures of one config (soft-deleted audits left out)",
                "parameters": [_CONFIG_ID],
                "responses": {**_ok(_data(_ref("AuditConfigStats"))), **_err(400, 404)},
            }
        },
        "/api/audits/{audit_id}": {
            "get": {
                "summary": "Audit detail with step results, control points and citations",
                "parameters": [_path_param("audit_id", r"^\d+$", "database id")],
                "responses": {**_ok({"type": "object", "properties": {"success": {"type": "boolean"},
                                                                       "data": {"type": "object"}}}), **_err(400, 404)},
            }
        },
        "/api/recordings/{fiche_id}": {
            "get": {
                "summary": "The fiche's recording rows (camelCase, start_time ASC NULLS LAST, id ASC)",
                "parameters": [_path_param("fiche_id", r"^\d+$")],
                "responses": {**_ok({"type": "object", "properties": {
                    "success": {"type": "boolean"},
                    "data": {"type": "array", "items": {"$ref": "#/components/schemas/RecordingRow"}},
                    "count": {"type": "integer"}}}), **_err(400, 404)},
            }
        },
        "/api/transcriptions/batch": {
            "post": {
                "summary": "Queue the transcription of several fiches; a fiche is launched at most once per UTC day "
                           "(a same-day repeat returns the run id of the first launch)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["fiche_ids"],
                    "properties": {
                        "fiche_ids": {"type": "array", "minItems": 1, "maxItems": 500,
                                      "items": {"type": "string", "pattern": r"^\d+$"}},
                        "priority": {"type": "string", "enum": ["high", "normal", "low"], "default": "normal"}}}}}},
                "responses": {**_ok({"type": "object", "properties": {
                    "success": {"type": "boolean"}, "message": {"type": "string"},
                    "fiche_ids": {"type": "array", "items": {"type": "string"}},
                    "event_ids": {"type": "array", "items": {"type": "string"},
                                  "description": "Dagster run ids, in fiche_ids order"}}}), **_err(400, 503)},
            }
        },
        "/api/transcriptions/{fiche_id}": {
            "post": {
                "summary": "Queue the transcription of one fiche (Dagster job transcribe_fiche: details refresh, "
                           "then transcripts)",
                "parameters": [
                    _path_param("fiche_id", r"^\d+$"),
                    {"name": "priority", "in": "query", "schema": {"type": "string"},
                     "description": "high or low; anything else means normal"},
                ],
                "responses": {**_ok({"type": "object", "properties": {
                    "success": {"type": "boolean"}, "message": {"type": "string"}, "fiche_id": {"type": "string"},
                    "event_id": {"type": "string", "description": "Dagster run id"}}}), **_err(404, 503)},
            }
        },
        "/api/transcriptions/{fiche_id}/status": {
            "get": {
                "summary": "Transcription counts and per-recording state of a cached fiche",
                "parameters": [_path_param("fiche_id", r"^\d+$")],
                "responses": {**_ok({"type": "object", "properties": {
                    "success": {"type": "boolean"},
                    "data": {"type": "object", "properties": {
                        "ficheId": {"type": "string"}, "total": {"type": "integer"},
                        "transcribed": {"type": "integer"},
                        "pending": {"type": "integer", "description": "total - transcribed (failures, missing URLs)"},
                        "percentage": {"type": "integer"},
                        "missingUrl": {"type": "integer", "description": "recordings without a URL"},
                        "recordings": {"type": "array", "items": {"type": "object", "properties": {
                            "callId": {"type": "string"}, "hasTranscription": {"type": "boolean"},
                            "transcriptionId": {"type": "string", "nullable": True},
                            "transcribedAt": {"type": "string", "nullable": True},
                            "recordingDate": {"type": "string", "nullable": True, "description": "DD/MM/YYYY"},
                            "recordingTime": {"type": "string", "nullable": True, "description": "HH:MM"},
                            "durationSeconds": {"type": "integer", "nullable": True}}}}}}}}),
                              **_err(400, 404)},
            }
        },
        "/api/transcriptions/{fiche_id}/recordings/{call_id}": {
            "get": {
                "summary": "One recording's stored transcription",
                "description": "404 `Recording not found`, `No transcription available for this recording` or "
                               "`Transcription data not found in DB`.",
                "parameters": [_path_param("fiche_id", r"^\d+$"), _path_param("call_id")],
                "responses": {**_ok({"type": "object", "properties": {
                    "success": {"type": "boolean"},
                    "data": {"type": "object", "properties": {
                        "call_id": {"type": "string"}, "recording_url": {"type": "string"},
                        "duration_seconds": {"type": "integer", "nullable": True},
                        "transcription_id": {"type": "string", "nullable": True},
                        "transcription": {"type": "object", "properties": {
                            "text": {"type": "string"}, "language_code": {"type": "string"},
                            "language_probability": {"type": "number"},
                            "words": {"type": "array", "items": {"type": "object"}, "description": "may be []"}}},
                        "has_transcription": {"type": "boolean", "enum": [True]}}}}}), **_err(400, 404)},
            }
        },
        "/api/transcriptions/{fiche_id}/logs": {
            "get": {
                "summary": "The fiche's transcription.* events (durable workflow log), oldest first",
                "parameters": [
                    _path_param("fiche_id", r"^\d+$"),
                    {"name": "run_id", "in": "query", "schema": {"type": "string"}, "description": "Dagster run id"},
                    {"name": "trace_id", "in": "query", "schema": {"type": "string"},
                     "description": "legacy alias of run_id (echoed back)"},
                    {"name": "level", "in": "query", "schema": {"type": "string", "enum": ["info", "error"]},
                     "description": "error = *failed events"},
                    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                ],
                "responses": {**_ok({"type": "object", "properties": {
                    "success": {"type": "boolean"},
                    "data": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "event": {"type": "string"},
                        "level": {"type": "string", "enum": ["info", "error"]}, "payload": {"type": "object"},
                        "createdAt": {"type": "string"}}}},
                    "count": {"type": "integer"}, "trace_id": {"type": "string"},
                    "limit": {"type": "integer"}, "offset": {"type": "integer"}}}), **_err(400)},
            }
        },
        "/api/transcriptions/{fiche_id}/timeline": {
            "get": {
                "summary": "The timeline the audit engine reads (transcribed recordings with a URL, their chunks) "
                           "and its prompt-mode text",
                "parameters": [_path_param("fiche_id", r"^\d+$")],
                "responses": {**_ok({"type": "object", "properties": {
                    "success": {"type": "boolean"},
                    "data": {"type": "object", "properties": {
                        "ficheId": {"type": "string"},
                        "recordings": {"type": "array", "items": {"$ref": "#/components/schemas/TimelineRecording"}},
                        "text": {"type": "string"}}}}}), **_err(400, 404)},
            }
        },
        "/api/runs/{run_id}/events": {
            "get": {
                "summary": "A Dagster run's events as server-sent events; ends after the terminal run event",
                "parameters": [
                    _path_param("run_id"),
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"},
                     "description": "Resume after this event id"},
                    {"name": "last_event_id", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {**_sse(), **_err(400, 404, 503)},
            }
        },
        **{
            path: {
                "get": {
                    "summary": summary,
                    "parameters": [
                        *params,
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"},
                         "description": "Resume after this events id (a gap sends realtime.reset first)"},
                        {"name": "last_event_id", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {**_sse(), **_err(400)},
                }
            }
            for path, summary, params in [
                ("/api/realtime/stream", "Domain events of several channels as server-sent events",
                 [{"name": "channels", "in": "query", "required": True, "schema": {"type": "string"},
                   "description": "Comma-separated: audit-<id>, fiche-<id>, job-<id>, global (private- prefix accepted)"}]),
                ("/api/realtime/audits/{key}", "Events of channel audit-<key>", [_path_param("key")]),
                ("/api/realtime/fiches/{key}", "Events of channel fiche-<key>", [_path_param("key")]),
                ("/api/realtime/jobs/{key}", "Events of channel job-<key> (progressive fetch, batch)", [_path_param("key")]),
                ("/api/realtime/global", "Events of the global channel", []),
            ]
        },
        **{
            f"{base}/chat/history": {
                "get": {
                    "summary": f"The {what} chat: get or create the conversation, its 50 newest messages in "
                               "chronological order (timestamp, then id)",
                    "parameters": [param],
                    "responses": {**_ok(_data({"type": "object", "properties": {
                        "conversationId": {"type": "string"}, "ficheId": {"type": "string"},
                        **({"auditId": {"type": "string"}} if what == "audit" else {}),
                        "messages": {"type": "array", "items": {"type": "object", "properties": {
                            "id": {"type": "string"}, "conversationId": {"type": "string"},
                            "role": {"type": "string", "enum": ["user", "assistant", "system"]},
                            "content": {"type": "string"}, "timestamp": {"type": "string"}}}},
                        "messageCount": {"type": "integer"}}})), **_err(400, 404)},
                }
            }
            for base, what, param in _CHAT
        },
        **{
            f"{base}/chat": {
                "post": {
                    "summary": f"Ask about the {what}: the user message is stored, the answer streams as unnamed "
                               "SSE data events: {\"text\"} deltas (citation markers removed), then "
                               "{\"citations\":[...]} when any is valid, then [DONE]; an error after the headers is "
                               "{\"type\":\"error\",\"error\",\"code\":\"STREAM_ERROR\"} then [DONE]. The "
                               "assistant message is stored when the stream completes",
                    "parameters": [param],
                    "requestBody": _body({"type": "object", "required": ["message"], "properties": {
                        "message": {"type": "string", "minLength": 1, "maxLength": 8000,
                                    "description": "non-blank; CHAT_MAX_MESSAGE_CHARS (default 8000)"}}}),
                    "responses": {**_sse("event stream: data {\"text\"|\"citations\"|error} events, citations "
                                         "[{texte, minutage, minutage_secondes, speaker, recording_index, "
                                         "chunk_index, recording_date, recording_time, recording_url}]"),
                                  **_err(400, 404)},
                }
            }
            for base, what, param in _CHAT
        },
        "/api/openapi.json": {"get": {"summary": "This document", "responses": _ok({"type": "object"})}},
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["success", "error"],
                "properties": {"success": {"type": "boolean", "enum": [False]}, "error": {"type": "string"},
                               "code": {"type": "string"}, "message": {"type": "string"}},
            },
            "Readiness": {
                "type": "object", "required": ["status", "checks"],
                "properties": {"status": {"type": "string", "enum": ["ok", "degraded"]},
                               "timestamp": {"type": "string"}, "instance": {"type": "string"},
                               "checks": {"type": "object", "properties": {
                                   "database": {"type": "boolean"}, "dagster": {"type": "boolean"}}}},
            },
            "Health": {
                "type": "object",
                "properties": {"status": {"type": "string"}, "timestamp": {"type": "string"}, "service": {"type": "string"},
                               "version": {"type": "string"}, "instance": {"type": "string"}},
            },
            "RunAudit": {
                "type": "object",
                "properties": {
                    "fiche_id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                    "audit_config_id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                    "audit_id": {"description": "legacy alias of audit_config_id"},
                    "use_rlm": {"type": "boolean"}, "useRlm": {"type": "boolean"},
                    "user_id": {"type": "string"},
                    "automation_schedule_id": {"type": "string"}, "automation_run_id": {"type": "string"},
                    "trigger_source": {"type": "string", "maxLength": 50},
                },
            },
            "DateRangeAnswer": {
                "type": "object",
                "properties": {
                    "success": {"type": "boolean"}, "startDate": {"type": "string"}, "endDate": {"type": "string"},
                    "total": {"type": "integer"}, "fiches": {"type": "array", "items": {"type": "object"}},
                    "meta": {"type": "object", "properties": {
                        "complete": {"type": "boolean"}, "partial": {"type": "boolean"},
                        "backgroundJobId": {"type": "string", "nullable": True},
                        "totalDaysRequested": {"type": "integer"}, "daysFetched": {"type": "integer"},
                        "daysRemaining": {"type": "integer"}, "daysCached": {"type": "integer"},
                        "cacheCoverage": {"type": "object"}}},
                },
            },
            "RecordingRow": {
                "type": "object",
                "description": "A recordings row, camelCase; ids as strings, instants ISO with ms and Z",
                "properties": {
                    **{k: {"type": "string"} for k in ("id", "ficheCacheId", "callId", "recordingUrl")},
                    **{k: {"type": "string", "nullable": True} for k in (
                        "recordingDate", "recordingTime", "fromNumber", "toNumber", "uuid", "direction", "startTime",
                        "transcriptionId", "transcriptionText", "transcriptionLanguageCode", "transcribedAt")},
                    "answered": {"type": "boolean", "nullable": True},
                    "durationSeconds": {"type": "integer", "nullable": True},
                    "transcriptionData": {"type": "object", "nullable": True},
                    "transcriptionLanguageProbability": {"type": "number", "nullable": True},
                    "hasTranscription": {"type": "boolean"},
                    "createdAt": {"type": "string"}, "updatedAt": {"type": "string"},
                },
            },
            "TimelineRecording": {
                "type": "object",
                "properties": {
                    "recording_index": {"type": "integer", "description": "0-based among kept recordings"},
                    "call_id": {"type": "string"}, "start_time": {"type": "string"},
                    "duration_seconds": {"type": "number"}, "recording_url": {"type": "string"},
                    "recording_date": {"type": "string"}, "recording_time": {"type": "string"},
                    "from_number": {"type": "string"}, "to_number": {"type": "string"},
                    "total_chunks": {"type": "integer"},
                    "chunks": {"type": "array", "items": {"type": "object", "properties": {
                        "chunk_index": {"type": "integer"}, "start_timestamp": {"type": "number"},
                        "end_timestamp": {"type": "number"}, "message_count": {"type": "integer"},
                        "speakers": {"type": "array", "items": {"type": "string"}},
                        "full_text": {"type": "string"}}}},
                },
            },
            "AuditStepInput": {
                "type": "object",
                "required": ["name", "prompt", "controlPoints", "severityLevel", "position"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "description": {"type": "string", "nullable": True},
                    "prompt": {"type": "string", "minLength": 1},
                    "controlPoints": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    "keywords": {"type": "array", "items": {"type": "string"}, "default": []},
                    "severityLevel": {"type": "string", "enum": ["LOW", "MEDIUM", "HIGH", "CRITICAL"]},
                    "isCritical": {"type": "boolean", "default": False},
                    "position": {"type": "integer", "minimum": 1, "description": "1-based, unique in the config"},
                    "chronologicalImportant": {"type": "boolean", "default": False},
                    "weight": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
                    "verifyProductInfo": {"type": "boolean", "default": False},
                },
            },
            "AuditStep": {
                "allOf": [_ref("AuditStepInput"), {"type": "object", "properties": {
                    "id": {"type": "string"}, "auditConfigId": {"type": "string"},
                    "createdAt": {"type": "string"}, "updatedAt": {"type": "string"}}}],
            },
            "AuditConfigInput": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "description": {"type": "string", "nullable": True},
                    "systemPrompt": {"type": "string", "nullable": True},
                    "isActive": {"type": "boolean", "default": True},
                    "runAutomatically": {"type": "boolean", "default": False},
                    "createdBy": {"type": "string", "nullable": True},
                    "steps": {"type": "array", "items": _ref("AuditStepInput"), "default": [],
                              "description": "positions unique"},
                },
            },
            "AuditConfig": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "description": {"type": "string", "nullable": True},
                    "systemPrompt": {"type": "string", "nullable": True},
                    "isActive": {"type": "boolean"}, "runAutomatically": {"type": "boolean"},
                    "createdBy": {"type": "string", "nullable": True},
                    "createdAt": {"type": "string"}, "updatedAt": {"type": "string"},
                    "stepsCount": {"type": "integer"},
                    "steps": {"type": "array", "items": _ref("AuditStep"),
                              "description": "detail, or list with include_steps=true; by position"},
                    "stats": _ref("AuditConfigStats"),
                },
            },
            "AuditConfigStats": {
                "type": "object",
                "properties": {
                    "totalAudits": {"type": "integer"}, "completedAudits": {"type": "integer"},
                    "failedAudits": {"type": "integer"},
                    "averageScore": {"type": "number", "nullable": True,
                                     "description": "mean score_percentage of completed audits"},
                    "averageDurationMs": {"type": "integer", "nullable": True},
                    "lastUsedAt": {"type": "string", "nullable": True},
                    "complianceRate": {"type": "number", "nullable": True,
                                       "description": "% of completed audits that are compliant"},
                },
            },
            "LegacyAuditConfig": {
                "type": "object",
                "required": ["name"],
                "description": "The legacy config file: camelCase steps under auditSteps (or steps); other "
                               "top-level keys (version, totalSteps, complianceThresholds, metadata...) are "
                               "informational, kept for export and never read",
                "additionalProperties": True,
                "properties": {
                    "name": {"type": "string"}, "description": {"type": "string", "nullable": True},
                    "systemPrompt": {"type": "string", "nullable": True},
                    "isActive": {"type": "boolean"}, "runAutomatically": {"type": "boolean"},
                    "auditSteps": {"type": "array", "items": _ref("AuditStepInput")},
                },
            },
            "AuditQueued": {
                "type": "object",
                "properties": {
                    "success": {"type": "boolean"}, "message": {"type": "string"},
                    "event_id": {"type": "string", "description": "Dagster run id"},
                    "run_id": {"type": "string"},
                    "audit_id": {"type": "string", "description": "tracking id audit-<fiche>-<config>-<ms>"},
                    "fiche_id": {"type": "string"}, "audit_config_id": {"type": "integer"},
                    "metadata": {"type": "object", "properties": {"timestamp": {"type": "string"}, "status": {"type": "string"}}},
                },
            },
        }
    },
}


# --------------------------------------------------------------------------------------------
# Audit reads, maintenance and batches (spec 04 §4–§5, spec 06 §4.5), merged method by method
# into the paths above (``/api/audits`` and ``/api/audits/{audit_id}`` already hold other methods).
# --------------------------------------------------------------------------------------------

_AUDIT_ID = _path_param("audit_id", r"^\d+$", "database id")
_Q = lambda name, description="", **schema: {"name": name, "in": "query", "description": description,  # noqa: E731
                                              "schema": {"type": "string", **schema}}
_LIST_QUERY = [
    _Q("fiche_ids", "CSV"), _Q("trigger_source", "CSV"), _Q("groupes", "CSV, effective groupe"),
    _Q("status", "CSV of pending|running|completed|failed (unknown values dropped)"),
    _Q("niveau", "CSV of PENDING|EXCELLENT|BON|ACCEPTABLE|INSUFFISANT|REJET (unknown values dropped)"),
    _Q("audit_config_ids", "CSV of digits"), _Q("automation_schedule_ids", "CSV of digits"),
    _Q("automation_run_ids", "CSV of digits"), _Q("is_compliant", "'true' → true, else false"),
    _Q("has_recordings", "'true' → true, else false"), _Q("date_from", "date or ISO instant, on created_at"),
    _Q("date_to", "date (whole day) or ISO instant"), _Q("groupe_query", "contains, case-insensitive"),
    _Q("agence_query", "contains"), _Q("prospect_query", "contains over nom, prénom, email, tel, fiche id"),
    _Q("sales_dates", "CSV of YYYY-MM-DD"), _Q("sales_date_from", "YYYY-MM-DD"), _Q("sales_date_to", "YYYY-MM-DD"),
    _Q("recordings_count_min"), _Q("recordings_count_max"), _Q("fetched_at_from"), _Q("fetched_at_to"),
    _Q("last_revalidated_from"), _Q("last_revalidated_to"), _Q("score_min"), _Q("score_max"),
    _Q("duration_min_ms"), _Q("duration_max_ms"), _Q("tokens_min"), _Q("tokens_max"),
    _Q("has_failed_steps", "true → failed_steps > 0; false → 0 or null"),
    _Q("q", "OR over fiche id, prospect names, config name, error message; exact id when digits"),
    _Q("latest_only", "default true"), _Q("include_deleted", "default false"),
    _Q("sort_by", "", enum=list(("created_at", "completed_at", "score_percentage", "duration_ms"))),
    _Q("sort_order", "", enum=["asc", "desc"]),
    _Q("limit", "1..500, default 100 (clamped; non-numeric → 400)"), _Q("offset", ">= 0"),
]
_PAGINATION = {"type": "object", "properties": {k: {"type": "integer"} for k in (
    "total", "limit", "offset", "current_page", "total_pages")} | {
    "has_next_page": {"type": "boolean"}, "has_prev_page": {"type": "boolean"}}}
_OBJ = {"type": "object"}
_LIST = {"type": "array", "items": _OBJ}
_BATCH_STATUS = {"type": "object", "properties": {
    "batch_id": {"type": "string"}, "status": {"type": "string", "enum": ["running", "completed", "expired"]},
    "operation_type": {"type": "string"}, "total": {"type": "integer"}, "completed": {"type": "integer"},
    "succeeded": {"type": "integer"}, "failed": {"type": "integer"}, "progress_percentage": {"type": "integer"},
    "audit_config_id": {"type": "integer"}, "backfill_id": {"type": "string", "nullable": True},
    "items": {"type": "array", "items": {"type": "object", "properties": {
        "fiche_id": {"type": "string"}, "tracking_id": {"type": "string"}, "status": {"type": "string"},
        "audit_id": {"type": "string", "nullable": True}, "audit_status": {"type": "string", "nullable": True}}}}}}

AUDIT_PATHS: dict[str, dict[str, Any]] = {
    "/api/audits": {"get": {
        "summary": "Audits, filtered (all filters ANDed), sorted and paginated",
        "parameters": _LIST_QUERY,
        "responses": {**_ok(_data(_LIST, pagination=_PAGINATION)), **_err(400)},
        "description": "400 `Invalid query parameters` on any parse error (dates, numbers, sort, limit).",
    }},
    "/api/audits/grouped-by-fiches": {"get": {
        "summary": "Fiches with their (filtered) audits and a summary, newest audit first, paginated over fiches",
        "parameters": _LIST_QUERY,
        "responses": {**_ok(_data(_LIST, pagination=_PAGINATION)), **_err(400)},
    }},
    "/api/audits/grouped": {"get": {
        "summary": "Audit counts and score statistics per key, sorted by count, paginated over groups",
        "parameters": [_Q("group_by", "required", enum=["fiche", "audit_config", "status", "niveau",
                                                        "automation_schedule", "automation_run", "groupe",
                                                        "created_day", "score_bucket"]),
                       _Q("bucket_size", "score_bucket width, 1..100, default 10"), *_LIST_QUERY],
        "responses": {**_ok(_data(_LIST, pagination=_PAGINATION, meta={"type": "object", "properties": {
            "group_by": {"type": "string"}, "bucket_size": {"type": "integer"}, "truncated": {"type": "boolean"}}})),
            **_err(400)},
    }},
    "/api/audits/by-fiche/{fiche_id}": {"get": {
        "summary": "The fiche's latest non-deleted audits, newest first, with the latest-view resultData",
        "parameters": [_path_param("fiche_id", r"^\d+$"), _Q("include_details", "ignored")],
        "responses": {**_ok(_data(_LIST, count={"type": "integer"})), **_err(400)},
    }},
    "/api/audits/{audit_id}/logs": {"get": {
        "summary": "The audit's event log (channel audit-<id> and audit-<tracking id>), oldest first",
        "parameters": [_AUDIT_ID, _Q("level", "info|error"), _Q("since", "date or ISO instant"),
                       _Q("until", "date or ISO instant"), _Q("limit", "1..1000, default 200"), _Q("offset")],
        "responses": {**_ok(_data(_LIST, count={"type": "integer"}, limit={"type": "integer"},
                                  offset={"type": "integer"})), **_err(400, 404)},
    }},
    "/api/audits/{audit_id}": {
        "patch": {
            "summary": "Update notes, soft delete/restore, automation links, trigger fields (only keys present)",
            "parameters": [_AUDIT_ID],
            "requestBody": _body({"type": "object", "properties": {
                "notes": {"type": "string", "maxLength": 20000, "nullable": True},
                "deleted": {"type": "boolean"},
                "automation_schedule_id": {"type": "string", "pattern": r"^\d+$", "nullable": True},
                "automation_run_id": {"type": "string", "pattern": r"^\d+$", "nullable": True},
                "trigger_source": {"type": "string", "maxLength": 50},
                "trigger_user_id": {"type": "string", "maxLength": 200, "nullable": True}}}),
            "responses": {**_ok(_data(_OBJ)), **_err(400, 404)},
        },
        "delete": {
            "summary": "Soft delete (sets deletedAt); returns the detail view",
            "parameters": [_AUDIT_ID],
            "responses": {**_ok(_data(_OBJ)), **_err(400, 404)},
        },
    },
    "/api/audits/batch": {"post": {
        "summary": "Audit several fiches with one config: one Dagster backfill; progress as batch.* events",
        "requestBody": _body({"type": "object", "required": ["fiche_ids"], "properties": {
            "fiche_ids": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^\d+$"}},
            "audit_config_id": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\d+$"}]},
            "user_id": {"type": "string"}, "use_rlm": {"type": "boolean"}, "useRlm": {"type": "boolean"}}}),
        "responses": {**_ok({"type": "object", "properties": {
            "success": {"type": "boolean"}, "message": {"type": "string"},
            "fiche_ids": {"type": "array", "items": {"type": "string"}, "description": "deduplicated, in order"},
            "audit_config_id": {"type": "integer"},
            "batch_id": {"type": "string", "description": "batch-<epoch ms>-<n>-<random>"},
            "event_ids": {"type": "array", "items": {"type": "string"}, "description": "[Dagster backfill id]"}}}),
            **_err(400, 404, 503)},
        "description": "400 `Invalid batch audit input`; 404 when the config (or, by default, any active "
                       "config) is missing; 503 `SERVICE_UNAVAILABLE` when Dagster cannot take the backfill.",
    }},
    "/api/audits/batch/{batch_id}": {"get": {
        "summary": "Status of a batch: totals (its own audits only) and per-fiche status",
        "parameters": [_path_param("batch_id", r"^batch-[0-9a-z-]+$")],
        "responses": {**_ok(_data(_BATCH_STATUS)), **_err(400, 404)},
    }},
}
for _path, _methods in AUDIT_PATHS.items():
    DOCUMENT["paths"].setdefault(_path, {}).update(_methods)


# --------------------------------------------------------------------------------------------
# Step / control-point reruns and human reviews (spec 04 §1–§3, spec 06 §4.5)
# --------------------------------------------------------------------------------------------

_RR_STEP = [_path_param("audit_id", r"^\d+$", "database id"), _path_param("step_position", r"^\d+$", "1-based")]
_RR_POINT = [*_RR_STEP, _path_param("control_point_index", r"^\d+$", "1-based, into the audit's frozen config step")]
_RR_BODY = {"required": False, "content": {"application/json": {"schema": {"type": "object", "properties": {
    "customPrompt": {"type": "string", "maxLength": 5000},
    "customInstructions": {"type": "string", "maxLength": 5000, "description": "alias; the first non-blank wins"},
    "replaceHumanReview": {"type": "boolean", "default": False,
                           "description": "apply the rerun's step verdict over a human step override in force"}}}}}}
_RR_QUEUED = {"type": "object", "properties": {
    "success": {"type": "boolean"}, "message": {"type": "string"}, "event_id": {"type": "string", "description": "Dagster run id"},
    "audit_id": {"type": "string"}, "step_position": {"type": "integer"}, "control_point_index": {"type": "integer"}}}
_RR_POINT_DATA = _data({"type": "object", "properties": {
    "auditId": {"type": "string"}, "stepPosition": {"type": "integer"}, "controlPointIndex": {"type": "integer"},
    "point": {"type": "string"}, "statut": {"type": "string", "enum": ["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]},
    "commentaire": {"type": "string"}}})
_RR_OPT = {"reviewer": {"type": "string", "minLength": 1, "maxLength": 200, "description": "default: the caller's email"},
           "reason": {"type": "string", "minLength": 1, "maxLength": 5000}}

DOCUMENT["paths"].update({
    "/api/audits/control-points/statuses": {"get": {
        "summary": "The control-point statuses", "responses": _ok(_data({"type": "object", "properties": {
            "statuses": {"type": "array", "items": {"type": "string"}}}}))}},
    "/api/audits/{audit_id}/steps/{step_position}/rerun": {"post": {
        "summary": "Queue a rerun of one step (Dagster job rerun_audit_step on the fiche partition; frozen snapshot, "
                   "gated; events audit.step_started/step_completed/step_failed)",
        "parameters": _RR_STEP, "requestBody": _RR_BODY,
        "responses": {**_ok(_RR_QUEUED), **_err(400, 404, 409, 503)}}},
    "/api/audits/{audit_id}/steps/{step_position}/control-points/{control_point_index}/rerun": {"post": {
        "summary": "Queue a rerun of one control point; the step is re-derived from its points",
        "parameters": _RR_POINT, "requestBody": _RR_BODY,
        "responses": {**_ok(_RR_QUEUED), **_err(400, 404, 409, 503)}}},
    "/api/audits/{audit_id}/steps/{step_position}/control-points/{control_point_index}": {"get": {
        "summary": "One control point (normalized row, else the legacy raw result)",
        "parameters": _RR_POINT, "responses": {**_ok(_RR_POINT_DATA), **_err(400, 404)}}},
    "/api/audits/{audit_id}/steps/{step_position}/control-points/{control_point_index}/review": {"patch": {
        "summary": "Human override of a control point (trail row); the step is re-derived and the audit summary "
                   "recomputed (a human step override in force keeps the step verdict)",
        "parameters": _RR_POINT,
        "requestBody": _body({"type": "object", "description": "at least one of statut and commentaire", "properties": {
            "statut": {"type": "string", "enum": ["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]},
            "commentaire": {"type": "string", "maxLength": 20000}, **_RR_OPT}}),
        "responses": {**_ok(_RR_POINT_DATA), **_err(400, 404, 409)}}},
    "/api/audits/{audit_id}/steps/{step_position}/review": {"patch": {
        "summary": "Human override of a step verdict (trail row; in force until a new review or a rerun with "
                   "replaceHumanReview); the audit summary is recomputed",
        "parameters": _RR_STEP,
        "requestBody": _body({"type": "object", "required": ["conforme"], "properties": {
            "conforme": {"type": "string", "enum": ["CONFORME", "NON_CONFORME", "PARTIEL"]},
            "traite": {"type": "boolean"}, "score": {"type": "integer", "minimum": 0, "description": "≤ step weight"},
            "niveauConformite": {"type": "string", "enum": ["EXCELLENT", "BON", "ACCEPTABLE", "INSUFFISANT", "REJET"]},
            **_RR_OPT}}),
        "responses": {**_ok(_data({"type": "object", "description": "StepResult"})), **_err(400, 404, 409)}}},
})


# --------------------------------------------------------------------------------------------
# Automation (spec 05 §6, spec 06 §4.6)
# --------------------------------------------------------------------------------------------

_AUTO_ID = _path_param("id", r"^\d+$", "database id (non-numeric → 400 \"Invalid id\")")
_AUTO_PAGE = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 200, "default": 20}},
              {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}]
_SELECTION = {"type": "object", "required": ["mode"], "properties": {
    "mode": {"type": "string", "enum": ["date_range", "manual", "filter"]},
    "dateRange": {"type": "string", "enum": ["last_24h", "yesterday", "last_week", "last_month", "custom"]},
    "customStartDate": {"type": "string", "description": "DD/MM/YYYY"},
    "customEndDate": {"type": "string", "description": "DD/MM/YYYY"},
    "groupes": {"type": "array", "items": {"type": "string"}},
    "ficheIds": {"type": "array", "items": {"type": "string"}},
    "onlyWithRecordings": {"type": "boolean"}, "onlyUnaudited": {"type": "boolean"}, "useRlm": {"type": "boolean"},
    "maxFiches": {"type": "integer", "minimum": 1}, "maxRecordingsPerFiche": {"type": "integer", "minimum": 1}}}
_SCHEDULE_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": 255}, "description": {"type": "string", "nullable": True},
    "isActive": {"type": "boolean"}, "createdBy": {"type": "string", "nullable": True},
    "scheduleType": {"type": "string", "enum": ["MANUAL", "DAILY", "WEEKLY", "MONTHLY", "CRON"]},
    "cronExpression": {"type": "string", "nullable": True}, "timezone": {"type": "string", "default": "UTC"},
    "timeOfDay": {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$", "nullable": True},
    "dayOfWeek": {"type": "integer", "minimum": 0, "maximum": 6, "nullable": True},
    "dayOfMonth": {"type": "integer", "minimum": 1, "maximum": 31, "nullable": True},
    "ficheSelection": _SELECTION,
    "runTranscription": {"type": "boolean"}, "skipIfTranscribed": {"type": "boolean"},
    "transcriptionPriority": {"type": "string", "enum": ["low", "normal", "high"]},
    "runAudits": {"type": "boolean"}, "useAutomaticAudits": {"type": "boolean"},
    "specificAuditConfigs": {"type": "array", "items": {"type": "string", "pattern": r"^\d+$"}},
    "continueOnError": {"type": "boolean"}, "retryFailed": {"type": "boolean"},
    "maxRetries": {"type": "integer", "minimum": 0, "maximum": 5},
    "notifyOnComplete": {"type": "boolean"}, "notifyOnError": {"type": "boolean"},
    "webhookUrl": {"type": "string", "nullable": True, "description": "SSRF-checked on write (400)"},
    "notifyEmails": {"type": "array", "items": {"type": "string", "format": "email"}},
    "externalApiKey": {"type": "string", "nullable": True, "description": "stored sealed; replies carry a mask"},
}
_SCHEDULE = {"type": "object", "properties": {
    "id": {"type": "string"}, **_SCHEDULE_FIELDS, "hasExternalApiKey": {"type": "boolean"},
    "createdAt": {"type": "string", "format": "date-time"}, "updatedAt": {"type": "string", "format": "date-time"},
    "lastRunAt": {"type": "string", "format": "date-time", "nullable": True},
    "lastRunStatus": {"type": "string", "nullable": True},
    "totalRuns": {"type": "integer"}, "successfulRuns": {"type": "integer"}, "failedRuns": {"type": "integer"}}}
_RUN = {"type": "object", "properties": {
    "id": {"type": "string"}, "scheduleId": {"type": "string"},
    "status": {"type": "string", "enum": ["pending", "running", "completed", "partial", "failed"]},
    "startedAt": {"type": "string"}, "completedAt": {"type": "string", "nullable": True},
    "durationMs": {"type": "integer", "nullable": True}, "totalFiches": {"type": "integer"},
    "successfulFiches": {"type": "integer"}, "failedFiches": {"type": "integer"},
    "transcriptionsRun": {"type": "integer"}, "auditsRun": {"type": "integer"},
    "errorMessage": {"type": "string", "nullable": True}, "errorDetails": {"type": "object", "nullable": True},
    "configSnapshot": {"type": "object"}, "resultSummary": {"nullable": True}}}
_LOG = {"type": "object", "properties": {
    "id": {"type": "string"}, "runId": {"type": "string"},
    "level": {"type": "string", "enum": ["debug", "info", "warning", "error"]}, "message": {"type": "string"},
    "timestamp": {"type": "string"}, "metadata": {"type": "object"}}}
_RUNS_PAGE = _ok({"type": "object", "properties": {
    "success": {"type": "boolean"}, "data": {"type": "array", "items": _RUN},
    "count": {"type": "integer", "description": "page size, not a total"},
    "limit": {"type": "integer"}, "offset": {"type": "integer"}}})

DOCUMENT["paths"].update({
    "/api/automation/schedules": {
        "get": {"summary": "Automation schedules, newest first (active only unless include_inactive=true)",
                "parameters": [{"name": "include_inactive", "in": "query", "schema": _BOOL_QUERY}],
                "responses": {**_ok(_data({"type": "array", "items": _SCHEDULE}, count={"type": "integer"})),
                              **_err(400)}},
        "post": {"summary": "Create a schedule (every option validated; webhookUrl SSRF-checked)",
                 "requestBody": _body({"type": "object", "required": ["name", "scheduleType", "ficheSelection"],
                                       "properties": _SCHEDULE_FIELDS}),
                 "responses": {**_created(_data(_SCHEDULE)), **_err(400)}},
    },
    "/api/automation/schedules/{id}": {
        "get": {"summary": "One schedule with its 10 latest runs", "parameters": [_AUTO_ID],
                "responses": {**_ok(_data({"allOf": [_SCHEDULE, {"type": "object", "properties": {
                    "runs": {"type": "array", "items": _RUN}}}]})), **_err(400, 404)}},
        "patch": {"summary": "Update: the effective schedule (stored + patch; null clears; ficheSelection "
                             "replaced whole) is validated as a whole",
                  "parameters": [_AUTO_ID],
                  "requestBody": _body({"type": "object", "properties": _SCHEDULE_FIELDS}),
                  "responses": {**_ok(_data(_SCHEDULE)), **_err(400, 404)}},
        "delete": {"summary": "Delete a schedule with its runs, results and logs; 409 while a run is running "
                              "unless force=true",
                   "parameters": [_AUTO_ID, {"name": "force", "in": "query", "schema": _BOOL_QUERY}],
                   "responses": {**_ok(_MESSAGE), **_err(400, 404, 409)}},
    },
    "/api/automation/schedules/{id}/runs": {
        "get": {"summary": "Runs of one schedule, newest first", "parameters": [_AUTO_ID, *_AUTO_PAGE],
                "responses": {**_RUNS_PAGE, **_err(400)}}},
    "/api/automation/runs": {
        "get": {"summary": "Runs of every schedule, newest first", "parameters": _AUTO_PAGE,
                "responses": {**_RUNS_PAGE, **_err(400)}}},
    "/api/automation/runs/{id}": {
        "get": {"summary": "One run with all its logs (oldest first) and the reconstructed resultSummary",
                "parameters": [_AUTO_ID],
                "responses": {**_ok(_data({"allOf": [_RUN, {"type": "object", "properties": {
                    "logs": {"type": "array", "items": _LOG}}}]})), **_err(400, 404)}}},
    "/api/automation/trigger": {
        "post": {"summary": "Run a schedule now (optionally with an override selection): creates the run and "
                            "launches automation_run_job; 409 while inactive or running unless force=true",
                 "parameters": [{"name": "force", "in": "query", "schema": _BOOL_QUERY}],
                 "requestBody": _body({"type": "object", "required": ["scheduleId"], "properties": {
                     "scheduleId": {"type": "string", "pattern": r"^\d+$"},
                     "overrideFicheSelection": {"type": "object"}}}),
                 "responses": {**_ok({"type": "object", "properties": {
                     "success": {"type": "boolean"}, "message": {"type": "string"},
                     "schedule_id": {"type": "string"}, "run_id": {"type": "string"},
                     "event_ids": {"type": "array", "items": {"type": "string"}},
                     "sse_url": {"type": "string"}}}), **_err(400, 404, 409, 503)}}},
    "/api/automation/diagnostic": {
        "get": {"summary": "How automation runs here: Dagster job and sensors, scheduler cadence and window, "
                           "notification setup", "responses": _ok({"type": "object"})}},
    "/api/automation/runs/{id}/logs": {
        "get": {"summary": "A run's logs, oldest first, at most 100", "parameters": [
            _AUTO_ID, {"name": "level", "in": "query", "schema": {"type": "string",
                                                                   "enum": ["debug", "info", "warning", "error"]}}],
                "responses": {**_ok({"type": "object", "properties": {
                    "success": {"type": "boolean"}, "data": {"type": "array", "items": _LOG},
                    "count": {"type": "integer"}}}), **_err(400)}}},
})


# --------------------------------------------------------------------------------------------
# API keys (issue 8) and the security of every operation
# --------------------------------------------------------------------------------------------

_PERMISSION_NAMES = ["*", *(f"{a}.{v}" for a in ("fiches", "recordings", "transcriptions", "audit-configs", "audits",
                                                  "automation", "chat", "realtime", "admin")
                            for v in ("read", "write")), "audits.run", "audits.rerun"]
_KEY_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "permissions": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": _PERMISSION_NAMES}},
    "scope": {"type": "string", "enum": ["SELF", "GROUP", "ALL"], "default": "SELF"},
    "groupes": {"type": "array", "items": {"type": "string"}, "description": "required (≥1) for GROUP"},
    "crm_user_id": {"type": "string", "nullable": True, "description": "required for SELF"},
    "expires_at": {"type": "string", "format": "date-time", "nullable": True},
}
_KEY = {"type": "object", "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "keyPrefix": {"type": "string"},
    "permissions": {"type": "array", "items": {"type": "string"}},
    "scope": {"type": "string", "enum": ["SELF", "GROUP", "ALL"]},
    "groupes": {"type": "array", "items": {"type": "string"}}, "crmUserId": {"type": "string", "nullable": True},
    "createdBy": {"type": "string", "nullable": True}, "createdAt": {"type": "string"},
    "lastUsedAt": {"type": "string", "nullable": True}, "expiresAt": {"type": "string", "nullable": True},
    "revokedAt": {"type": "string", "nullable": True},
    "status": {"type": "string", "enum": ["active", "expired", "revoked"]}}}

DOCUMENT["paths"].update({
    "/api/admin/api-keys": {
        "post": {"summary": "Create an API key (admin.write); the token is in this reply only and never again. "
                            "A key cannot grant more than the calling key holds (403)",
                 "requestBody": _body({"type": "object", "required": ["name", "permissions", "scope"],
                                       "properties": _KEY_FIELDS}),
                 "responses": {**_created(_data({"allOf": [_KEY, {"type": "object", "properties": {
                     "token": {"type": "string", "description": "afk_<prefix>_<secret>; shown once"}}}]},
                     message={"type": "string"})), **_err(400)}},
        "get": {"summary": "API keys (admin.read): never a hash or a token",
                "parameters": [{"name": "include_revoked", "in": "query",
                                "schema": {"type": "string", "enum": ["true", "false"], "default": "true"}}],
                "responses": {**_ok(_data({"type": "array", "items": _KEY}, count={"type": "integer"})),
                              **_err(400)}},
    },
    "/api/admin/api-keys/{id}": {
        "delete": {"summary": "Revoke an API key (admin.write); idempotent",
                   "parameters": [_path_param("id", r"^\d+$")],
                   "responses": {**_ok(_data(_KEY)), **_err(400, 404)}},
    },
})

# --------------------------------------------------------------------------------------------
# Compliance reports (issue 10): the rows the report assets store
# --------------------------------------------------------------------------------------------

_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
_GROUP_STATS = {"audits": {"type": "integer"}, "score_sum": {"type": "number"},
                "mean_score": {"type": "number", "nullable": True}, "compliant": {"type": "integer"},
                "compliant_rate": {"type": "number", "nullable": True, "description": "fraction 0..1"},
                "rejet": {"type": "integer"}, "critical_failed": {"type": "integer"}}
_POINT_STATS = {"type": "object", "properties": {
    "step_position": {"type": "integer"}, "step_name": {"type": "string"}, "point": {"type": "string"},
    **{k: {"type": "integer"} for k in ("evaluated", "missed", "partial", "present", "not_applicable")},
    "missed_rate": {"type": "number", "nullable": True}}}
_DAILY_REPORT = {"type": "object", "properties": {
    "day": {"type": "string", "format": "date"}, "generatedAt": {"type": "string"},
    "dagsterRunId": {"type": "string", "nullable": True},
    "totals": {"type": "object", "properties": {
        "audits": {"type": "integer"}, "fiches": {"type": "integer"}, "score_sum": {"type": "number"},
        "mean_score": {"type": "number", "nullable": True}, "min_score": {"type": "number", "nullable": True},
        "max_score": {"type": "number", "nullable": True}, "compliant": {"type": "integer"},
        "compliant_rate": {"type": "number", "nullable": True}, "audits_with_critical_failure": {"type": "integer"}}},
    "niveau_counts": {**_COUNTS, "description": "EXCELLENT, BON, ACCEPTABLE, INSUFFISANT, REJET (zeros included)"},
    "score_distribution": {"type": "array", "items": {"type": "object", "properties": {
        "bin": {"type": "string"}, "lower": {"type": "integer"}, "upper": {"type": "integer"},
        "count": {"type": "integer"}}}},
    "per_groupe": {"type": "array", "items": {"type": "object", "properties": {
        "groupe": {"type": "string"}, **_GROUP_STATS}}},
    "per_advisor": {"type": "array", "items": {"type": "object", "properties": {
        "advisor": {"type": "string", "description": "attribution_user_nom"}, "groupe": {"type": "string"},
        **_GROUP_STATS}}},
    "critical_steps": {"type": "array", "items": {"type": "object", "properties": {
        "step_position": {"type": "integer"}, "step_name": {"type": "string"}, "evaluated": {"type": "integer"},
        "failed": {"type": "integer"}, "failure_rate": {"type": "number", "nullable": True}}}},
    "control_points": {"type": "array", "items": _POINT_STATS},
    "top_missed_points": {"type": "array", "maxItems": 10, "items": _POINT_STATS},
    "gating": {"type": "object", "properties": {
        **{k: {"type": "integer"} for k in ("total_citations", "removed_citations", "downgraded_control_points",
                                            "steps_score_reduced", "steps_conforme_adjusted",
                                            "audits_with_removed_citations")},
        "removed_rate": {"type": "number", "nullable": True}}}}}

DOCUMENT["paths"].update({
    "/api/reports/daily/{date}": {
        "get": {"summary": "The stored compliance report of a sales day (audits.read, scope ALL: a GROUP or SELF "
                           "key gets 403 — the report aggregates every groupe). The latest completed audit per "
                           "fiche × config of the day's fiches; written by the daily_compliance_report asset",
                "parameters": [_path_param("date", r"^\d{4}-\d{2}-\d{2}$", "sales day, YYYY-MM-DD (Europe/Paris)")],
                "responses": {**_ok(_data(_DAILY_REPORT)), **_err(400, 404)}},
    },
})

# Calibration (issue 11 §3): AI-vs-human agreement, computed on read from the review/rerun trails
_AGREEMENT = {"type": "number", "nullable": True, "minimum": 0, "maximum": 1,
              "description": "agreed / reviewed, a fraction 0..1 (null when nothing was reviewed)"}
_CALIBRATION_STATS = {
    "reviewed": {"type": "integer", "description": "AI verdicts reviewed by a human (usable rows)"},
    "agreed": {"type": "integer", "description": "reviewed verdicts the human kept (the confusion diagonal)"},
    "agreement_rate": _AGREEMENT,
    "confusion": {"type": "object", "description": "{AI verdict: {human verdict: count}} over the level's vocabulary "
                                                   "(PRESENT/ABSENT/PARTIEL/NON_APPLICABLE or CONFORME/NON_CONFORME/"
                                                   "PARTIEL) plus any other stored value; zeros included",
                  "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}}},
    "main_confusion": {"type": "object", "nullable": True, "description": "the largest off-diagonal cell",
                       "properties": {"ai": {"type": "string"}, "human": {"type": "string"},
                                      "count": {"type": "integer"}}},
    "rerun_assisted": {"type": "integer", "description": "reviewed items rerun before their final review"},
    "unrecoverable": {"type": "integer", "description": "reviewed items whose original AI verdict was not "
                                                       "recorded (excluded from every rate)"},
    "weekly": {"type": "array", "description": "per ISO week (Europe/Paris) of the final review", "items": {
        "type": "object", "properties": {"week": {"type": "string", "pattern": r"^\d{4}-W\d{2}$"},
                                         "reviewed": {"type": "integer"}, "agreed": {"type": "integer"},
                                         "agreement_rate": _AGREEMENT}}},
}
_CALIBRATION_LEVELS = {"type": "object", "properties": {
    "control_points": {"type": "object", "properties": _CALIBRATION_STATS},
    "steps": {"type": "object", "properties": _CALIBRATION_STATS}}}
_CALIBRATION_REPORT = {"type": "object", "properties": {
    "filters": {"type": "object", "properties": {
        "config_id": {"type": "integer", "nullable": True},
        "since": {"type": "string", "format": "date", "nullable": True},
        "until": {"type": "string", "format": "date", "nullable": True}}},
    "totals": _CALIBRATION_LEVELS,
    "configs": {"type": "array", "items": {"type": "object", "properties": {
        "config_id": {"type": "integer"}, "config_name": {"type": "string", "nullable": True},
        **_CALIBRATION_LEVELS["properties"]}}},
    "steps": {"type": "array", "items": {"type": "object", "properties": {
        "config_id": {"type": "integer"}, "step_position": {"type": "integer"}, "step_name": {"type": "string"},
        **_CALIBRATION_STATS}}},
    "control_points": {"type": "array", "items": {"type": "object", "properties": {
        "config_id": {"type": "integer"}, "step_position": {"type": "integer"}, "step_name": {"type": "string"},
        "control_point_index": {"type": "integer", "description": "1-based"}, "point": {"type": "string"},
        **_CALIBRATION_STATS}}}}}

DOCUMENT["paths"].update({
    "/api/reports/calibration": {
        "get": {"summary": "AI-vs-human calibration (audits.read, scope ALL: a GROUP or SELF key gets 403 — it "
                           "aggregates every groupe's reviews). Per control point, step and config: AI verdicts "
                           "reviewed, agreement rate, confusion and weekly trend. AI verdict = what the audit run "
                           "stored (the first trail row's previous value); human verdict = the latest review of "
                           "the item; reruns count as neither side (a rerun that changed a verdict a reviewer then "
                           "confirmed is a disagreement of the original)",
                "parameters": [
                    {"name": "config_id", "in": "query", "schema": {"type": "string", "pattern": r"^\d+$"},
                     "description": "only this audit config (404 if it does not exist)"},
                    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date"},
                     "description": "YYYY-MM-DD, Europe/Paris, inclusive: final reviews from this day"},
                    {"name": "until", "in": "query", "schema": {"type": "string", "format": "date"},
                     "description": "YYYY-MM-DD, Europe/Paris, inclusive: reviews after this day are ignored"},
                ],
                "responses": {**_ok(_data(_CALIBRATION_REPORT)), **_err(400, 404)}},
    },
})

# Audit export (issue 10 §2): a file of the audits of a sales-day range, streamed (api/routes/exports.py)
_EXPORT_FILE = {"type": "string", "format": "binary"}
_DAY_QUERY = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
DOCUMENT["paths"].update({
    "/api/reports/audits/export": {
        "get": {
            "summary": "The audits of a range of sales days as a CSV or XLSX file, one row per control point "
                       "(audits.read; narrowed to the caller's scope like the audit list: GROUP keys get their "
                       "groupes, SELF keys their attribution)",
            "description": "Rows: every control point of every step of the selected audits (a step without control "
                           "points, and an audit without steps, give one row with those cells empty), ordered by "
                           "sales day, fiche id, audit id, step position, control-point index. Values are those "
                           "of GET /api/audits/{audit_id}: the effective verdicts, human reviews applied. CSV: "
                           "UTF-8 with BOM, comma separator, RFC 4180 quoting, CRLF; a text cell starting with = + "
                           "- @ is prefixed with ' (never a formula). XLSX: typed cells, dates and UTC date-times, "
                           "a new sheet every 1,048,575 rows. The body is streamed (chunked); an error after the "
                           "first byte aborts the connection. Columns, in order: "
                           + "; ".join(f"{c.name} ({c.kind}): {c.description}" for c in _export.COLUMNS) + ".",
            "parameters": [
                {"name": "sales_date_from", "in": "query", "required": True, "schema": _DAY_QUERY,
                 "description": "first sales day (fiche_cache.sales_date), inclusive"},
                {"name": "sales_date_to", "in": "query", "required": True, "schema": _DAY_QUERY,
                 "description": f"last sales day, inclusive; at most {_export.MAX_RANGE_DAYS} days in all"},
                {"name": "format", "in": "query", "schema": {"type": "string", "enum": list(_export.FORMATS),
                                                             "default": "csv"}},
                {"name": "groupes", "in": "query", "schema": {"type": "string"},
                 "description": "comma list of effective groupes (as the audit list)"},
                {"name": "audit_config_ids", "in": "query", "schema": {"type": "string", "pattern": r"^\d+(,\d+)*$"},
                 "description": "comma list of audit config ids"},
                {"name": "status", "in": "query", "schema": {"type": "string"},
                 "description": "comma list of audit statuses: pending, running, completed, failed"},
                {"name": "latest_only", "in": "query",
                 "schema": {"type": "string", "enum": ["true", "false"], "default": "true"},
                 "description": "only the latest audit of each fiche and config"},
            ],
            "responses": {
                "200": {"description": "The file, as an attachment (audits_<from>_<to>.<format>)",
                        "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                        "content": {media.split(";")[0]: {"schema": _EXPORT_FILE}
                                    for media in _export.MEDIA_TYPES.values()}},
                **_err(400),
                "503": {"description": "Too many exports running in this process; retry after Retry-After seconds",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": {"application/json": {"schema": ERROR}}},
            },
        },
    },
})

DOCUMENT["components"]["securitySchemes"] = {
    "bearerAuth": {"type": "http", "scheme": "bearer",
                   "description": "An API key (afk_…) or a legacy machine token (API_AUTH_TOKEN(S))"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "accessTokenQuery": {"type": "apiKey", "in": "query", "name": "access_token",
                         "description": "GET on the SSE routes only (EventSource cannot send headers)"},
}
DOCUMENT["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
_AUTH_ERRORS = {
    "401": {"description": "Authentication required (no or invalid credential)",
            "content": {"application/json": {"schema": ERROR}}},
    "403": {"description": "Missing permission (or, for batches and realtime channels, out of scope)",
            "content": {"application/json": {"schema": ERROR}}},
}
for _path, _ops in DOCUMENT["paths"].items():
    _public = _path.startswith("/health") or _path == "/api/openapi.json"
    _sse = _path.startswith("/api/realtime/") or _path.endswith("/events")
    for _op in _ops.values():
        if _public:
            _op["security"] = []
            continue
        if _sse:
            _op["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}, {"accessTokenQuery": []}]
        for _code, _resp in _AUTH_ERRORS.items():
            _op["responses"].setdefault(_code, _resp)
