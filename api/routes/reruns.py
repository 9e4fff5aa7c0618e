"""Step / control-point reruns and human reviews of a finished audit (spec 04 §1–§3, spec 06 §4.5).

Reruns are launched as ``rerun_audit_step`` Dagster runs on the audit's fiche partition (registered
again first: old partitions may have been retired) and answer at once with the run id as
``event_id``; the run publishes ``audit.step_started`` / ``audit.step_completed`` /
``audit.step_failed`` on the audit's channel. Reviews are written synchronously in one transaction
(:mod:`auditflow_dagster.db.step_edits`, which documents the human-override precedence).

Every refusal is a 4xx with the spec 06 envelope: 400 invalid ids/body, 404 missing audit, step or
point, 409 while the audit is pending/running, 503 when Dagster is unreachable.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import authorize_audit
from api.common import INT32_MAX, authorize, dagster, db_call, json_body, path_int
from api.dagster_client import DagsterUnavailable
from api.errors import ApiError, not_found, validation_error
from auditflow_dagster.db import step_edits
from auditflow_dagster.db.models import Audit, AuditSnapshot, FicheCache

RERUN_JOB = "rerun_audit_step"
MAX_PROMPT_CHARS = 5000
STEP_REVIEW_INVALID = "Invalid review audit step result input"
POINT_REVIEW_INVALID = "Invalid review audit control point input"


def _edit_error(exc: step_edits.EditError) -> ApiError:
    if exc.status == 404:
        return not_found(exc.message)
    if exc.status == 409:
        return ApiError(409, exc.message, "CONFLICT")
    return validation_error(exc.message)


def _caller_email(request: Request) -> str | None:
    user = getattr(request.state, "user", None)  # set by the auth layer (issue 8) when there is one
    if isinstance(user, dict) and isinstance(user.get("email"), str):
        return user["email"]
    return getattr(user, "email", None) if user is not None else None


def _prompt(body: dict[str, Any]) -> str | None:
    """``customPrompt`` (alias ``customInstructions``): the first non-blank value wins; ≤ 5000 chars."""
    for key in ("customPrompt", "customInstructions"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise validation_error(f"Invalid {key}: string expected")
        if value.strip():
            if len(value.strip()) > MAX_PROMPT_CHARS:
                raise validation_error(f"Invalid {key}: at most {MAX_PROMPT_CHARS} characters")
            return value.strip()
    return None


def _replace_flag(body: dict[str, Any]) -> bool:
    value = body.get("replaceHumanReview", False)
    if not isinstance(value, bool):
        raise validation_error("Invalid replaceHumanReview: boolean expected")
    return value


def _rerun_target(audit_id: int, position: int, index: int | None):
    """Up-front checks (404/409) → the fiche id; the index is checked against the frozen config."""

    def check(s) -> str:
        audit = s.get(Audit, audit_id)
        if audit is None:
            raise not_found("Audit not found")
        if audit.status not in step_edits.EDITABLE_STATUSES:
            raise ApiError(409, f"Audit is {audit.status}; rerun it once it has finished", "CONFLICT")
        if step_edits.step_row(s, audit_id, position) is None:
            raise not_found("Audit step result not found")
        if index is not None:
            snap = s.get(AuditSnapshot, audit_id)
            steps = (snap.config or {}).get("steps", []) if snap is not None else []
            step = next((st for st in steps if st.get("position") == position), None)
            points = (step or {}).get("control_points") or (step or {}).get("controlPoints") or []
            if not 1 <= index <= len(points):
                raise not_found(f"Control point {index} not found in step {position}")
        fiche = s.get(FicheCache, audit.fiche_cache_id)
        return fiche.fiche_id

    return check


async def _launch_rerun(request: Request, *, with_point: bool) -> JSONResponse:
    await authorize(request, "audits.rerun")
    audit_id = path_int(request, "audit_id", "audit_id")
    position = path_int(request, "step_position", "step_position", maximum=INT32_MAX)
    index = path_int(request, "control_point_index", "control_point_index", maximum=INT32_MAX) if with_point else None
    body = await json_body(request)
    prompt, replace = _prompt(body), _replace_flag(body)
    await authorize_audit(request, "audits.rerun", audit_id, not_found("Audit not found"))
    fiche_id = await db_call(_rerun_target(audit_id, position, index))
    config: dict[str, Any] = {"audit_id": audit_id, "step_position": position, "custom_prompt": prompt,
                              "replace_human_review": replace}
    tags = {"dagster/partition": fiche_id, "auditflow/rerun_audit_id": str(audit_id),
            "auditflow/rerun_scope": "control_point" if with_point else "step",
            "auditflow/step_position": str(position)}
    if index is not None:
        config["control_point_index"] = index
        tags["auditflow/control_point_index"] = str(index)
    client = dagster(request)
    try:
        await client.add_fiche_partition(fiche_id)  # an old partition may have been retired
        run_id = await client.launch_job(RERUN_JOB, run_config={"ops": {"audit_step_reruns": {"config": config}}},
                                         tags=tags)
    except DagsterUnavailable as exc:
        raise ApiError(503, f"Pipeline unavailable: {exc}", "SERVICE_UNAVAILABLE") from None
    reply: dict[str, Any] = {"success": True,
                             "message": "Control point re-run queued" if with_point else "Step re-run queued",
                             "event_id": run_id, "audit_id": str(audit_id), "step_position": position}
    if index is not None:
        reply["control_point_index"] = index
    return JSONResponse(reply)


async def rerun_step(request: Request) -> JSONResponse:
    return await _launch_rerun(request, with_point=False)


async def rerun_control_point(request: Request) -> JSONResponse:
    return await _launch_rerun(request, with_point=True)


def _opt_text(body: dict[str, Any], key: str, max_len: int, message: str, min_len: int = 1) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not (min_len <= len(value) <= max_len):
        raise validation_error(message)
    return value


async def review_step(request: Request) -> JSONResponse:
    await authorize(request, "audits.write")
    audit_id = path_int(request, "audit_id", "audit_id")
    position = path_int(request, "step_position", "step_position", maximum=INT32_MAX)
    body = await json_body(request)
    conforme = body.get("conforme")
    if conforme not in step_edits.STEP_CONFORME:
        raise validation_error(STEP_REVIEW_INVALID)
    traite = body.get("traite")
    if traite is not None and not isinstance(traite, bool):
        raise validation_error(STEP_REVIEW_INVALID)
    score = body.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int) or score < 0):
        raise validation_error(STEP_REVIEW_INVALID)
    niveau = body.get("niveauConformite")
    if niveau is not None and niveau not in step_edits.NIVEAUX:
        raise validation_error(STEP_REVIEW_INVALID)
    reviewer = _opt_text(body, "reviewer", 200, STEP_REVIEW_INVALID) or _caller_email(request)
    reason = _opt_text(body, "reason", 5000, STEP_REVIEW_INVALID)
    await authorize_audit(request, "audits.write", audit_id, not_found("Audit not found"))

    def write(s) -> dict[str, Any]:
        return step_edits.review_step(s, audit_id, position, conforme=conforme, traite=traite, score=score,
                                      niveau_conformite=niveau, reviewer=reviewer, reason=reason)

    try:
        data = await db_call(write)
    except step_edits.EditError as exc:
        raise _edit_error(exc) from None
    return JSONResponse({"success": True, "data": data})


async def review_control_point(request: Request) -> JSONResponse:
    await authorize(request, "audits.write")
    audit_id = path_int(request, "audit_id", "audit_id")
    position = path_int(request, "step_position", "step_position", maximum=INT32_MAX)
    index = path_int(request, "control_point_index", "control_point_index", maximum=INT32_MAX)
    body = await json_body(request)
    statut = body.get("statut")
    if statut is not None and statut not in step_edits.STATUTS:
        raise validation_error(POINT_REVIEW_INVALID)
    commentaire = _opt_text(body, "commentaire", 20000, POINT_REVIEW_INVALID, min_len=0)
    if statut is None and commentaire is None:
        raise validation_error(POINT_REVIEW_INVALID)
    reviewer = _opt_text(body, "reviewer", 200, POINT_REVIEW_INVALID) or _caller_email(request)
    reason = _opt_text(body, "reason", 5000, POINT_REVIEW_INVALID)
    await authorize_audit(request, "audits.write", audit_id, not_found("Audit not found"))

    def write(s) -> dict[str, Any]:
        return step_edits.review_control_point(s, audit_id, position, index, statut=statut, commentaire=commentaire,
                                               reviewer=reviewer, reason=reason)

    try:
        data = await db_call(write)
    except step_edits.EditError as exc:
        raise _edit_error(exc) from None
    return JSONResponse({"success": True, "data": data})


async def get_control_point(request: Request) -> JSONResponse:
    await authorize(request, "audits.read")
    audit_id = path_int(request, "audit_id", "audit_id")
    position = path_int(request, "step_position", "step_position", maximum=INT32_MAX)
    index = path_int(request, "control_point_index", "control_point_index", maximum=INT32_MAX)
    await authorize_audit(request, "audits.read", audit_id, not_found("Audit not found"))

    def read(s) -> dict[str, Any] | None:
        if s.get(Audit, audit_id) is None:
            raise not_found("Audit not found")
        return step_edits.control_point_data(s, audit_id, position, index)

    data = await db_call(read)
    if data is None:
        raise not_found("Control point not found")
    return JSONResponse({"success": True, "data": data})


async def control_point_statuses(request: Request) -> JSONResponse:
    await authorize(request, None)  # authentication only (spec 04 §7)
    return JSONResponse({"success": True, "data": {"statuses": list(step_edits.STATUTS)}})


routes = [
    Route("/api/audits/control-points/statuses", control_point_statuses, methods=["GET"]),
    Route("/api/audits/{audit_id}/steps/{step_position}/rerun", rerun_step, methods=["POST"]),
    Route("/api/audits/{audit_id}/steps/{step_position}/control-points/{control_point_index}/rerun",
          rerun_control_point, methods=["POST"]),
    Route("/api/audits/{audit_id}/steps/{step_position}/control-points/{control_point_index}", get_control_point,
          methods=["GET"]),
    Route("/api/audits/{audit_id}/steps/{step_position}/control-points/{control_point_index}/review",
          review_control_point, methods=["PATCH"]),
    Route("/api/audits/{audit_id}/steps/{step_position}/review", review_step, methods=["PATCH"]),
]
