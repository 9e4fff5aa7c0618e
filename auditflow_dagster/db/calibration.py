"""The rows calibration is computed from (issue 11 §3): one per reviewed AI verdict, extracted from
the append-only trails (see :mod:`auditflow_dagster.core.calibration` for the definitions).

**Where the original AI verdict is kept.** Nowhere on the step itself: ``audit_step_results`` and
``audit_step_result_control_points`` hold the *current* verdict, rewritten in place by every review
and rerun (``raw_result`` keeps only usage/metadata, ``audits.result_data`` only the summary). What
the audit run produced survives in the first trail row that changed the item, whose ``previous_*``
columns were copied from the row just before the change (:mod:`auditflow_dagster.db.step_edits`):

* a control point ``(audit, step, i)``: the first of its reviews (``kind='control_point'``,
  ``previous_statut``), its control-point reruns (``previous_statut``) and the step reruns of its
  step (which replace every point without recording them: the original is then unrecoverable);
* a step ``(audit, step)``: the first of the step's reviews (``previous_conforme``; a control-point
  review records the step verdict it saw there too, since it may re-derive it — older rows did not:
  unrecoverable), step reruns (``previous_conforme``) and control-point reruns
  (``previous_step_conforme``).

Trail rows are ordered by their time (``reviewed_at``/``occurred_at``, else ``created_at``), then
``created_at`` and id. The human verdict is the override of the latest review of the item whose
time is before ``until``; the row's time is that review's. ``since`` keeps rows whose time is at or
after it. Soft-deleted audits are left out; every other audit counts (older versions of a fiche ×
config too: a human judged their verdicts).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

_TRAILS = """
WITH rv AS (
    SELECT r.id, r.audit_id, r.step_position, r.kind, r.control_point_index, r.point, r.previous_statut,
           r.override_statut, r.previous_conforme, r.override_conforme, r.created_at,
           coalesce(r.reviewed_at, r.created_at) AS at
    FROM audit_step_result_human_reviews r
), ev AS (
    SELECT e.id, e.audit_id, e.step_position, e.control_point_index, e.previous_statut, e.previous_conforme,
           e.previous_step_conforme, e.created_at, coalesce(e.occurred_at, e.created_at) AS at,
           (e.kind = 'control_point_rerun' OR (e.kind <> 'step_rerun' AND e.control_point_index IS NOT NULL))
               AS point_scoped
    FROM audit_step_result_rerun_events e
),
-- the human verdicts: the latest review of each item
point_final AS (
    SELECT DISTINCT ON (audit_id, step_position, control_point_index)
           audit_id, step_position, control_point_index, override_statut AS human, point, at
    FROM rv
    WHERE kind = 'control_point' AND control_point_index IS NOT NULL AND override_statut IS NOT NULL {until}
    ORDER BY audit_id, step_position, control_point_index, at DESC, created_at DESC, id DESC
), step_final AS (
    SELECT DISTINCT ON (audit_id, step_position) audit_id, step_position, override_conforme AS human, at
    FROM rv
    WHERE kind = 'step' AND override_conforme IS NOT NULL {until}
    ORDER BY audit_id, step_position, at DESC, created_at DESC, id DESC
),
-- the AI verdicts: "previous" of the first trail row that touched the item
point_first AS (
    SELECT DISTINCT ON (audit_id, step_position, control_point_index)
           audit_id, step_position, control_point_index, ai
    FROM (
        SELECT audit_id, step_position, control_point_index, at, created_at, id, previous_statut AS ai
        FROM rv WHERE kind = 'control_point'
        UNION ALL
        SELECT audit_id, step_position, control_point_index, at, created_at, id, previous_statut
        FROM ev WHERE point_scoped
        UNION ALL
        SELECT ev.audit_id, ev.step_position, f.control_point_index, ev.at, ev.created_at, ev.id, NULL
        FROM ev JOIN point_final f ON f.audit_id = ev.audit_id AND f.step_position = ev.step_position
        WHERE NOT ev.point_scoped
    ) t
    ORDER BY audit_id, step_position, control_point_index, at, created_at, id
), step_first AS (
    SELECT DISTINCT ON (audit_id, step_position) audit_id, step_position, ai
    FROM (
        SELECT audit_id, step_position, at, created_at, id, previous_conforme AS ai FROM rv
        UNION ALL
        SELECT audit_id, step_position, at, created_at, id,
               CASE WHEN point_scoped THEN previous_step_conforme ELSE previous_conforme END
        FROM ev
    ) t
    ORDER BY audit_id, step_position, at, created_at, id
)
SELECT 'control_point' AS level, a.audit_config_id AS config_id, c.name AS config_name, f.audit_id,
       f.step_position, sr.step_name, f.control_point_index, coalesce(f.point, cp.point) AS point,
       pf.ai AS ai_verdict, f.human AS human_verdict, f.at AS reviewed_at,
       EXISTS (SELECT 1 FROM ev WHERE ev.audit_id = f.audit_id AND ev.step_position = f.step_position
                                  AND (NOT ev.point_scoped OR ev.control_point_index = f.control_point_index)
                                  AND ev.at <= f.at) AS rerun_before_review
FROM point_final f
JOIN point_first pf ON pf.audit_id = f.audit_id AND pf.step_position = f.step_position
                   AND pf.control_point_index = f.control_point_index
JOIN audits a ON a.id = f.audit_id
JOIN audit_configs c ON c.id = a.audit_config_id
JOIN audit_step_results sr ON sr.audit_id = f.audit_id AND sr.step_position = f.step_position
LEFT JOIN audit_step_result_control_points cp ON cp.audit_id = f.audit_id AND cp.step_position = f.step_position
                                             AND cp.control_point_index = f.control_point_index
WHERE a.deleted_at IS NULL {where}
UNION ALL
SELECT 'step', a.audit_config_id, c.name, f.audit_id, f.step_position, sr.step_name, NULL, NULL,
       sf.ai, f.human, f.at,
       EXISTS (SELECT 1 FROM ev WHERE ev.audit_id = f.audit_id AND ev.step_position = f.step_position
                                  AND ev.at <= f.at)
FROM step_final f
JOIN step_first sf ON sf.audit_id = f.audit_id AND sf.step_position = f.step_position
JOIN audits a ON a.id = f.audit_id
JOIN audit_configs c ON c.id = a.audit_config_id
JOIN audit_step_results sr ON sr.audit_id = f.audit_id AND sr.step_position = f.step_position
WHERE a.deleted_at IS NULL {where}
ORDER BY level, config_id, step_position, control_point_index NULLS FIRST, reviewed_at, audit_id
"""

FIELDS = ("level", "config_id", "config_name", "audit_id", "step_position", "step_name", "control_point_index",
          "point", "ai_verdict", "human_verdict", "reviewed_at", "rerun_before_review")


def reviewed_verdicts(s: Session, *, config_id: int | None = None, since: dt.datetime | None = None,
                      until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One dict (:data:`FIELDS`) per reviewed item: the rows of
    :func:`auditflow_dagster.core.calibration.calibration_report`. ``since``/``until`` are naive UTC
    instants (``until`` exclusive; see :func:`auditflow_dagster.core.calibration.paris_day_bounds`)."""
    params: dict[str, Any] = {}
    where = ""
    until_sql = ""
    if config_id is not None:
        where += " AND a.audit_config_id = :config_id"
        params["config_id"] = config_id
    if since is not None:
        where += " AND f.at >= :since"
        params["since"] = since
    if until is not None:
        until_sql = " AND at < :until"
        params["until"] = until
    sql = _TRAILS.format(where=where, until=until_sql)
    return [dict(r._mapping) for r in s.execute(text(sql), params)]
