"""Automation schedules, runs, per-fiche results and logs (spec 05 §1, §3.9, §6): input validation,
storage and the legacy camelCase JSON shapes behind ``/api/automation``.

Writes validate the *whole* schedule: a create validates the body, a PATCH validates the effective
schedule (stored values with the patch's keys laid over them, ``null`` clearing a nullable field,
``ficheSelection`` replaced as a whole; spec 05 §1.5). ``externalApiKey`` is stored sealed
(:mod:`auditflow_dagster.db.secret_box`) and never returned: replies carry a mask and
``hasExternalApiKey``. Webhook URLs pass :func:`auditflow_dagster.core.ssrf.check_url` on write.

The runs themselves are written by the automation job; this module only reads them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from auditflow_dagster.core import schedules
from auditflow_dagster.core.automation import parse_dmy, split_fiche_ids
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import (
    SCHEDULE_TYPES,
    AuditConfig,
    AutomationLog,
    AutomationRun,
    AutomationRunFicheResult,
    AutomationSchedule,
)

INT32_MAX = 2**31 - 1
MASK = "********"
SELECTION_MODES = ("date_range", "manual", "filter")
DATE_RANGES = ("last_24h", "yesterday", "last_week", "last_month", "custom")
PRIORITIES = ("low", "normal", "high")
RUN_STATUSES = ("pending", "running", "completed", "partial", "failed")
LOG_LEVELS = ("debug", "info", "warning", "error")
TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ScheduleNotFound(LookupError):
    pass


class ScheduleInvalid(ValueError):
    """A schedule that fails validation; ``details`` is ``[{loc, msg}]``."""

    def __init__(self, details: list[dict[str, Any]]) -> None:
        super().__init__(details[0]["msg"] if details else "invalid")
        self.details = details


class ScheduleBusy(Exception):
    """A schedule with a running run (delete without ``force``): 409."""


# --------------------------------------------------------------------------------------------- #
# Timing checks (the scheduler's own rules, core/schedules.py)
# --------------------------------------------------------------------------------------------- #

def check_cron(expr: str) -> str | None:
    """The spec 05 §2.2 dialect, checked by the scheduler's own parser (what the API accepts is
    exactly what the sensor can evaluate); the reason it is invalid, or None."""
    try:
        schedules.parse_cron(expr)
    except schedules.ScheduleConfigError as exc:
        return str(exc)
    return None


def check_timezone(name: str) -> bool:
    """A known IANA zone, by the scheduler's own rule (``core.schedules.zone_problem``)."""
    return schedules.zone_problem(name) is None


def derive_cron(schedule_type: str, time_of_day: str | None, day_of_week: int | None,
                day_of_month: int | None, cron_expression: str | None) -> str | None:
    """The stored cron (spec 05 §1.2), derived by the scheduler's rules; None when the type has
    no cron (MANUAL) or a required field is missing (validation reports that separately)."""
    try:
        return schedules.derive_cron(schedules.timing_of({
            "schedule_type": schedule_type, "time_of_day": time_of_day, "day_of_week": day_of_week,
            "day_of_month": day_of_month, "cron_expression": cron_expression, "timezone": "UTC"}))
    except schedules.ScheduleConfigError:
        return None


# --------------------------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------------------------- #


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Checker:
    def __init__(self) -> None:
        self.details: list[dict[str, Any]] = []

    def bad(self, loc: list[Any], msg: str) -> None:
        self.details.append({"loc": loc, "msg": msg})

    def boolean(self, body: dict[str, Any], key: str, default: bool, loc: list[Any] | None = None) -> bool:
        v = body.get(key, default)
        if not isinstance(v, bool):
            self.bad(loc or [key], "must be a boolean")
            return default
        return v

    def text(self, body: dict[str, Any], key: str, *, loc: list[Any] | None = None) -> str | None:
        """Optional string; null clears."""
        v = body.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            self.bad(loc or [key], "must be a string or null")
            return None
        return v

    def int_in(self, body: dict[str, Any], key: str, lo: int, hi: int, *, nullable: bool,
               default: int | None = None, loc: list[Any] | None = None) -> int | None:
        if key not in body:
            return default
        v = body[key]
        if v is None and nullable:
            return None
        if not _is_int(v) or not lo <= v <= hi:
            self.bad(loc or [key], f"must be an integer between {lo} and {hi}")
            return default
        return v

    def strings(self, v: Any, loc: list[Any]) -> list[str]:
        if v is None:
            return []
        if not isinstance(v, list):
            self.bad(loc, "must be an array of strings")
            return []
        out = []
        for i, x in enumerate(v):
            if _is_int(x) and x >= 0:
                x = str(x)
            if not isinstance(x, str):
                self.bad([*loc, i], "must be a string")
                continue
            if x.strip():
                out.append(x.strip())
        return out


def _selection(c: _Checker, raw: Any) -> dict[str, Any]:
    """``ficheSelection`` → ``fiche_selection_*`` columns (spec 05 §1.3, §1.4)."""
    loc = ["ficheSelection"]
    cols: dict[str, Any] = {
        "fiche_selection_mode": "date_range", "fiche_selection_date_range": None,
        "fiche_selection_custom_start_date": None, "fiche_selection_custom_end_date": None,
        "fiche_selection_groupes": [], "fiche_selection_fiche_ids": [],
        "fiche_selection_only_with_recordings": False, "fiche_selection_only_unaudited": False,
        "fiche_selection_use_rlm": False, "fiche_selection_max_fiches": None,
        "fiche_selection_max_recordings_per_fiche": None,
    }
    if not isinstance(raw, dict):
        c.bad(loc, "is required and must be an object")
        return cols
    mode = raw.get("mode")
    if mode not in SELECTION_MODES:
        c.bad([*loc, "mode"], f"must be one of {', '.join(SELECTION_MODES)}")
        return cols
    cols["fiche_selection_mode"] = mode
    for key, column in (("onlyWithRecordings", "only_with_recordings"), ("onlyUnaudited", "only_unaudited"),
                        ("useRlm", "use_rlm")):
        cols[f"fiche_selection_{column}"] = c.boolean(raw, key, False, [*loc, key])
    for key, column in (("maxFiches", "max_fiches"), ("maxRecordingsPerFiche", "max_recordings_per_fiche")):
        if key in raw:
            v = raw[key]
            if not _is_int(v) or not 0 < v <= INT32_MAX:
                c.bad([*loc, key], "must be a positive integer")
            else:
                cols[f"fiche_selection_{column}"] = v
    cols["fiche_selection_groupes"] = c.strings(raw.get("groupes"), [*loc, "groupes"])
    fiche_ids = c.strings(raw.get("ficheIds"), [*loc, "ficheIds"])
    cols["fiche_selection_fiche_ids"] = fiche_ids

    date_range = raw.get("dateRange")
    if date_range is not None and date_range not in DATE_RANGES:
        c.bad([*loc, "dateRange"], f"must be one of {', '.join(DATE_RANGES)}")
        date_range = None
    cols["fiche_selection_date_range"] = date_range
    dates: dict[str, dt.date | None] = {}
    for key, column in (("customStartDate", "custom_start_date"), ("customEndDate", "custom_end_date")):
        v = raw.get(key)
        if v is None or v == "":
            dates[key] = None
            continue
        parsed = parse_dmy(v) if isinstance(v, str) else None
        if parsed is None:
            c.bad([*loc, key], "must be a date DD/MM/YYYY")
        else:
            cols[f"fiche_selection_{column}"] = v
        dates[key] = parsed

    if mode == "manual":
        if not split_fiche_ids(fiche_ids):
            c.bad([*loc, "ficheIds"], "manual selection requires at least one fiche id")
    elif date_range is None:
        if raw.get("dateRange") is None:
            c.bad([*loc, "dateRange"], f"is required for mode {mode}")
    elif date_range == "custom":
        start, end = dates.get("customStartDate"), dates.get("customEndDate")
        if start is None and raw.get("customStartDate") in (None, ""):
            c.bad([*loc, "customStartDate"], "is required for dateRange custom")
        if start and end and end < start:
            c.bad([*loc, "customEndDate"], "must not be before customStartDate")
    return cols


def _audit_config_ids(c: _Checker, raw: Any) -> list[int]:
    """Ints or digit strings; blank/unparseable strings dropped; non-array ⇒ []; non-integer numbers ⇒ 400."""
    if not isinstance(raw, list):
        return []
    out: list[int] = []
    for i, v in enumerate(raw):
        if isinstance(v, bool):
            c.bad(["specificAuditConfigs", i], "must be an audit config id")
        elif _is_int(v):
            if not 0 < v < 2**63:
                c.bad(["specificAuditConfigs", i], "must be a positive audit config id")
            elif v not in out:
                out.append(v)
        elif isinstance(v, float):
            c.bad(["specificAuditConfigs", i], "must be an integer")
        elif isinstance(v, str) and v.strip().isdigit() and v.strip().isascii() and 0 < int(v.strip()) < 2**63:
            if int(v.strip()) not in out:
                out.append(int(v.strip()))
        elif not isinstance(v, str):
            c.bad(["specificAuditConfigs", i], "must be an audit config id")
    return out


def validate_schedule(body: dict[str, Any], *, settings: Any) -> dict[str, Any]:
    """A complete schedule (create body, or the effective schedule of a PATCH) → column values.
    Raises :class:`ScheduleInvalid` with every issue found."""
    from auditflow_dagster.core.ssrf import UnsafeUrl, check_url

    c = _Checker()
    cols: dict[str, Any] = {}

    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        c.bad(["name"], "is required: a non-blank string of at most 255 characters")
    cols["name"] = name
    cols["description"] = c.text(body, "description")
    cols["created_by"] = c.text(body, "createdBy")
    cols["is_active"] = c.boolean(body, "isActive", True)

    stype = body.get("scheduleType")
    if stype not in SCHEDULE_TYPES:
        c.bad(["scheduleType"], f"must be one of {', '.join(SCHEDULE_TYPES)}")
    cols["schedule_type"] = stype

    tz = body.get("timezone", "UTC")
    if not isinstance(tz, str) or not check_timezone(tz):
        c.bad(["timezone"], "must be a known IANA time zone")
    cols["timezone"] = tz
    tod = c.text(body, "timeOfDay")
    if tod is not None and not TIME_OF_DAY.match(tod):
        c.bad(["timeOfDay"], "must be HH:MM (24 h)")
        tod = None
    cols["time_of_day"] = tod
    dow = cols["day_of_week"] = c.int_in(body, "dayOfWeek", 0, 6, nullable=True)
    dom = cols["day_of_month"] = c.int_in(body, "dayOfMonth", 1, 31, nullable=True)
    cron = body.get("cronExpression")
    type_errors = len(c.details)
    missing = {k for k in ("timeOfDay", "dayOfWeek", "dayOfMonth") if body.get(k) is None}
    if stype == "DAILY" and "timeOfDay" in missing:
        c.bad(["timeOfDay"], "DAILY schedule requires timeOfDay")
    elif stype == "WEEKLY" and missing & {"timeOfDay", "dayOfWeek"}:
        c.bad(["scheduleType"], "WEEKLY schedule requires timeOfDay and dayOfWeek")
    elif stype == "MONTHLY" and missing & {"timeOfDay", "dayOfMonth"}:
        c.bad(["scheduleType"], "MONTHLY schedule requires timeOfDay and dayOfMonth")
    elif stype == "CRON":
        if not isinstance(cron, str) or not cron.strip():
            c.bad(["cronExpression"], "CRON schedule requires cronExpression")
        elif why := check_cron(cron):
            c.bad(["cronExpression"], why)
    if len(c.details) == type_errors and stype in SCHEDULE_TYPES:
        cols["cron_expression"] = derive_cron(stype, tod, dow, dom, " ".join(cron.split()) if stype == "CRON" else None)

    cols.update(_selection(c, body.get("ficheSelection")))

    cols["run_transcription"] = c.boolean(body, "runTranscription", True)
    cols["skip_if_transcribed"] = c.boolean(body, "skipIfTranscribed", True)
    prio = body.get("transcriptionPriority", "normal")
    if prio not in PRIORITIES:
        c.bad(["transcriptionPriority"], f"must be one of {', '.join(PRIORITIES)}")
    cols["transcription_priority"] = prio
    cols["run_audits"] = c.boolean(body, "runAudits", True)
    cols["use_automatic_audits"] = c.boolean(body, "useAutomaticAudits", True)
    configs = _audit_config_ids(c, body.get("specificAuditConfigs"))
    cols["specific_audit_configs"] = configs
    if cols["run_audits"] and not cols["use_automatic_audits"] and not configs:
        c.bad(["specificAuditConfigs"], "runAudits without automatic audits needs at least one specific audit config")

    cols["continue_on_error"] = c.boolean(body, "continueOnError", True)
    cols["retry_failed"] = c.boolean(body, "retryFailed", False)
    cols["max_retries"] = c.int_in(body, "maxRetries", 0, 5, nullable=False, default=0)
    cols["notify_on_complete"] = c.boolean(body, "notifyOnComplete", True)
    cols["notify_on_error"] = c.boolean(body, "notifyOnError", True)

    url = body.get("webhookUrl")
    cols["webhook_url"] = None
    if url is not None and url != "":
        if not isinstance(url, str):
            c.bad(["webhookUrl"], "must be a URL string")
        else:
            try:
                check_url(url.strip(), allowed_origins=settings.allowed_webhook_origins,
                          production=settings.is_production)
                cols["webhook_url"] = url.strip()
            except UnsafeUrl as exc:
                c.bad(["webhookUrl"], exc.message)
    emails = body.get("notifyEmails")
    clean: list[str] = []
    if isinstance(emails, list):
        for i, e in enumerate(emails):
            if not isinstance(e, str) or not e.strip():
                continue
            if not EMAIL.match(e.strip()):
                c.bad(["notifyEmails", i], "must be an email address")
            elif e.strip() not in clean:
                clean.append(e.strip())
    cols["notify_emails"] = clean

    if c.details:
        raise ScheduleInvalid(c.details)
    return cols


def _check_configs_exist(session: Session, ids: list[int]) -> None:
    if not ids:
        return
    found = set(session.scalars(select(AuditConfig.id).where(AuditConfig.id.in_(ids))))
    missing = [i for i in ids if i not in found]
    if missing:
        raise ScheduleInvalid([{"loc": ["specificAuditConfigs"],
                                "msg": f"unknown audit config id(s): {', '.join(map(str, missing))}"}])


def _api_key_change(body: dict[str, Any]) -> tuple[bool, str | None]:
    """(changed, sealed value). Absent or the mask echoed back ⇒ unchanged; null/"" ⇒ cleared."""
    from auditflow_dagster.db.secret_box import seal

    if "externalApiKey" not in body or body["externalApiKey"] == MASK:
        return False, None
    v = body["externalApiKey"]
    if v is None or v == "":
        return True, None
    if not isinstance(v, str) or not v.strip():
        raise ScheduleInvalid([{"loc": ["externalApiKey"], "msg": "must be a string or null"}])
    return True, seal(v.strip())


# --------------------------------------------------------------------------------------------- #
# JSON shapes
# --------------------------------------------------------------------------------------------- #


def selection_json(row: AutomationSchedule) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": row.fiche_selection_mode}
    optional = (("dateRange", row.fiche_selection_date_range),
                ("customStartDate", row.fiche_selection_custom_start_date),
                ("customEndDate", row.fiche_selection_custom_end_date),
                ("groupes", list(row.fiche_selection_groupes or [])),
                ("ficheIds", list(row.fiche_selection_fiche_ids or [])),
                ("maxFiches", row.fiche_selection_max_fiches),
                ("maxRecordingsPerFiche", row.fiche_selection_max_recordings_per_fiche))
    for key, value in optional:
        if value not in (None, []):
            out[key] = value
    out["onlyWithRecordings"] = row.fiche_selection_only_with_recordings
    out["onlyUnaudited"] = row.fiche_selection_only_unaudited
    out["useRlm"] = row.fiche_selection_use_rlm
    return out


def schedule_json(row: AutomationSchedule) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "description": row.description,
        "isActive": row.is_active,
        "createdBy": row.created_by,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "scheduleType": row.schedule_type,
        "cronExpression": row.cron_expression,
        "timezone": row.timezone,
        "timeOfDay": row.time_of_day,
        "dayOfWeek": row.day_of_week,
        "dayOfMonth": row.day_of_month,
        "ficheSelection": selection_json(row),
        "runTranscription": row.run_transcription,
        "skipIfTranscribed": row.skip_if_transcribed,
        "transcriptionPriority": row.transcription_priority if row.transcription_priority in PRIORITIES else "normal",
        "runAudits": row.run_audits,
        "useAutomaticAudits": row.use_automatic_audits,
        "specificAuditConfigs": [str(i) for i in row.specific_audit_configs or []],
        "continueOnError": row.continue_on_error,
        "retryFailed": row.retry_failed,
        "maxRetries": row.max_retries,
        "notifyOnComplete": row.notify_on_complete,
        "notifyOnError": row.notify_on_error,
        "webhookUrl": row.webhook_url,
        "notifyEmails": list(row.notify_emails or []),
        "externalApiKey": MASK if row.external_api_key else None,
        "hasExternalApiKey": bool(row.external_api_key),
        "lastRunAt": iso(row.last_run_at),
        "lastRunStatus": row.last_run_status,
        "totalRuns": row.total_runs,
        "successfulRuns": row.successful_runs,
        "failedRuns": row.failed_runs,
        "nextRunAt": next_run_at(row),
    }


def next_run_at(row: AutomationSchedule) -> str | None:
    """Read-only, computed in the schedule's zone by the scheduler's rules (spec 05 §1.1); None
    for MANUAL, inactive or broken schedules."""
    if not row.is_active or row.schedule_type == "MANUAL":
        return None
    try:
        nxt = schedules.next_occurrence(row, dt.datetime.now(dt.UTC))
    except schedules.ScheduleConfigError:
        return None
    return iso(nxt.astimezone(dt.UTC).replace(tzinfo=None)) if nxt else None


def validate_selection(raw: Any) -> dict[str, Any]:
    """A trigger's ``overrideFicheSelection`` (spec 05 §3.1): validated like ``ficheSelection``
    (null ``maxFiches``/``maxRecordingsPerFiche`` tolerated as absent) and returned in the API
    shape that the run stores in ``config_snapshot.overrides``."""
    from types import SimpleNamespace

    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if not (k in ("maxFiches", "maxRecordingsPerFiche") and v is None)}
    c = _Checker()
    cols = _selection(c, raw)
    if c.details:
        raise ScheduleInvalid([{**d, "loc": ["overrideFicheSelection", *d["loc"][1:]]} for d in c.details])
    return selection_json(SimpleNamespace(**cols))


def _stored_input(row: AutomationSchedule) -> dict[str, Any]:
    """The stored schedule as a request body (the base of a PATCH's effective schedule)."""
    body = schedule_json(row)
    body["specificAuditConfigs"] = list(row.specific_audit_configs or [])
    body["transcriptionPriority"] = row.transcription_priority
    for key in ("id", "createdAt", "updatedAt", "externalApiKey", "hasExternalApiKey", "lastRunAt",
                "lastRunStatus", "totalRuns", "successfulRuns", "failedRuns", "nextRunAt"):
        body.pop(key)
    return body


def run_status(status: str) -> str:
    return status if status in RUN_STATUSES else "failed"


def run_summary_json(run: AutomationRun) -> dict[str, Any]:
    return {
        "id": str(run.id), "status": run_status(run.status), "startedAt": iso(run.started_at),
        "completedAt": iso(run.completed_at), "durationMs": run.duration_ms, "totalFiches": run.total_fiches,
        "successfulFiches": run.successful_fiches, "failedFiches": run.failed_fiches,
    }


def run_json(run: AutomationRun) -> dict[str, Any]:
    return {
        **run_summary_json(run),
        "scheduleId": str(run.schedule_id),
        "transcriptionsRun": run.transcriptions_run,
        "auditsRun": run.audits_run,
        "errorMessage": run.error_message,
        "errorDetails": run.error_details,
        "configSnapshot": run.config_snapshot,
        "resultSummary": run.result_summary,
    }


def log_json(log: AutomationLog, *, with_run_id: bool) -> dict[str, Any]:
    out = {"id": str(log.id), "level": log.level, "message": log.message, "timestamp": iso(log.timestamp),
           "metadata": log.meta}
    if with_run_id:
        out["runId"] = str(log.run_id)
    return out


def reconstructed_summary(run: AutomationRun, results: list[AutomationRunFicheResult]) -> Any:
    """Spec 05 §3.9: a non-empty stored object as is; else the legacy arrays from the result rows;
    else the stored value."""
    stored = run.result_summary
    if isinstance(stored, dict) and stored:
        return stored
    if not results:
        return stored
    out: dict[str, Any] = {"successful": [], "failed": [], "ignored": [],
                           "transcriptions": run.transcriptions_run, "audits": run.audits_run}
    for r in sorted(results, key=lambda r: r.fiche_id):
        if r.status == "successful":
            out["successful"].append(r.fiche_id)
        elif r.status == "failed":
            out["failed"].append({"ficheId": r.fiche_id, "error": r.error or "Unknown error"})
        elif r.status == "ignored":
            item: dict[str, Any] = {"ficheId": r.fiche_id, "reason": r.ignore_reason or "Ignored"}
            if r.recordings_count is not None:
                item["recordingsCount"] = r.recordings_count
            out["ignored"].append(item)
    return out


# --------------------------------------------------------------------------------------------- #
# Schedules
# --------------------------------------------------------------------------------------------- #


def create_schedule(session: Session, body: dict[str, Any], *, settings: Any) -> dict[str, Any]:
    cols = validate_schedule(body, settings=settings)
    if "specificAuditConfigs" in body:
        _check_configs_exist(session, cols["specific_audit_configs"])
    _, sealed = _api_key_change(body)
    row = AutomationSchedule(**cols, external_api_key=sealed)
    session.add(row)
    session.flush()
    session.refresh(row)
    return schedule_json(row)


def list_schedules(session: Session, *, include_inactive: bool) -> list[dict[str, Any]]:
    q = select(AutomationSchedule).order_by(AutomationSchedule.created_at.desc(), AutomationSchedule.id.desc())
    if not include_inactive:
        q = q.where(AutomationSchedule.is_active.is_(True))
    return [schedule_json(r) for r in session.scalars(q)]


def schedule_detail(session: Session, schedule_id: int) -> dict[str, Any]:
    row = session.get(AutomationSchedule, schedule_id)
    if row is None:
        raise ScheduleNotFound(schedule_id)
    runs = session.scalars(
        select(AutomationRun).where(AutomationRun.schedule_id == schedule_id)
        .order_by(AutomationRun.started_at.desc(), AutomationRun.id.desc()).limit(10)
    )
    return {**schedule_json(row), "runs": [run_summary_json(r) for r in runs]}


def update_schedule(session: Session, schedule_id: int, patch: dict[str, Any], *, settings: Any) -> dict[str, Any]:
    """Effective schedule = stored + patch (null clears; ficheSelection replaced whole), validated
    as a whole, then written."""
    row = session.get(AutomationSchedule, schedule_id, with_for_update=True)
    if row is None:
        raise ScheduleNotFound(schedule_id)
    effective = _stored_input(row)
    effective.update({k: v for k, v in patch.items() if k != "externalApiKey"})
    # Non-CRON types always re-derive their cron from the effective timing fields; CRON keeps
    # the stored expression unless the patch gives one.
    cols = validate_schedule(effective, settings=settings)
    if "specificAuditConfigs" in patch:
        _check_configs_exist(session, cols["specific_audit_configs"])
    changed, sealed = _api_key_change(patch)
    if changed:
        cols["external_api_key"] = sealed
    for key, value in cols.items():
        setattr(row, key, value)
    row.updated_at = now_utc()
    session.flush()
    session.refresh(row)
    return schedule_json(row)


def delete_schedule(session: Session, schedule_id: int, *, force: bool) -> None:
    row = session.get(AutomationSchedule, schedule_id, with_for_update=True)
    if row is None:
        raise ScheduleNotFound(schedule_id)
    running = session.scalar(
        select(AutomationRun.id).where(AutomationRun.schedule_id == schedule_id, AutomationRun.status == "running")
        .limit(1)
    )
    if running is not None and not force:
        raise ScheduleBusy(f"Schedule has a running automation run ({running}); retry with force=true")
    session.execute(delete(AutomationSchedule).where(AutomationSchedule.id == schedule_id))


# --------------------------------------------------------------------------------------------- #
# Runs and logs
# --------------------------------------------------------------------------------------------- #


def list_runs(session: Session, *, schedule_id: int | None, limit: int, offset: int) -> list[dict[str, Any]]:
    q = select(AutomationRun).order_by(AutomationRun.started_at.desc(), AutomationRun.id.desc())
    if schedule_id is not None:
        q = q.where(AutomationRun.schedule_id == schedule_id)
    return [run_json(r) for r in session.scalars(q.limit(limit).offset(offset))]


def run_detail(session: Session, run_id: int) -> dict[str, Any] | None:
    run = session.get(AutomationRun, run_id)
    if run is None:
        return None
    logs = session.scalars(select(AutomationLog).where(AutomationLog.run_id == run_id)
                           .order_by(AutomationLog.timestamp, AutomationLog.id))
    results = list(session.scalars(select(AutomationRunFicheResult)
                                   .where(AutomationRunFicheResult.run_id == run_id)))
    out = run_json(run)
    out["resultSummary"] = reconstructed_summary(run, results)
    out["logs"] = [log_json(x, with_run_id=False) for x in logs]
    return out


def run_logs(session: Session, run_id: int, *, level: str | None, limit: int = 100) -> list[dict[str, Any]]:
    q = select(AutomationLog).where(AutomationLog.run_id == run_id)
    if level is not None:
        q = q.where(AutomationLog.level == level)
    q = q.order_by(AutomationLog.timestamp, AutomationLog.id).limit(limit)
    return [log_json(x, with_run_id=True) for x in session.scalars(q)]
