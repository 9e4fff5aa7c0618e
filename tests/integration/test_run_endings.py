"""A run that fails or is cancelled ends its audits and transcriptions for the frontend at once
(``run_endings`` sensor), unless Dagster will retry it or a re-execution is continuing."""

from __future__ import annotations

from dagster import DagsterRunStatus, build_sensor_context
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import select, update

from auditflow_dagster.db.events import emit
from auditflow_dagster.db.models import Audit, Event
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sensors.run_endings import run_endings, sweep
from tests.integration.test_audit_watchdog import _analysed_but_not_finalized, _events


def _attach(audit_id: int, run_id: str) -> None:
    with session_scope() as s:
        s.execute(update(Audit).where(Audit.id == audit_id).values(dagster_run_id=run_id))


def _transcription_events(run_id: str) -> list[tuple[str, str]]:
    with session_scope() as s:
        return [(n, p["fiche_id"]) for n, p in s.execute(
            select(Event.name, Event.payload).where(Event.name.like("transcription.%"),
                                                    Event.payload["run_id"].astext == run_id).order_by(Event.id))]


def test_failed_run_finalizes_its_audit_and_ends_open_transcriptions(db, dagster_instance):
    instance = dagster_instance
    audit_id = _analysed_but_not_finalized(instance)
    dead = create_run_for_test(instance, job_name="audit_fiche", status=DagsterRunStatus.FAILURE)
    _attach(audit_id, dead.run_id)
    with session_scope() as s:
        emit(s, "transcription.started", {"fiche_id": "F-open", "run_id": dead.run_id, "status": "started"})
        emit(s, "transcription.started", {"fiche_id": "F-done", "run_id": dead.run_id, "status": "started"})
        emit(s, "transcription.completed", {"fiche_id": "F-done", "run_id": dead.run_id, "status": "completed"})
    totals, cursor = sweep(instance, None)
    assert totals == {"runs": 1, "audits": 1, "transcriptions": 1}
    with session_scope() as s:
        assert s.get(Audit, audit_id).status == "completed"  # every step was stored: nothing re-billed
    assert _events(audit_id)[-1] == "audit.completed"
    assert _transcription_events(dead.run_id)[-1] == ("transcription.failed", "F-open")
    # idempotent, and the cursor moved past the run
    assert sweep(instance, cursor)[0]["runs"] == 0
    assert sweep(instance, None)[0] == {"runs": 1, "audits": 0, "transcriptions": 0}


def test_runs_that_will_be_retried_or_are_continued_are_left_alone(db, dagster_instance):
    instance = dagster_instance
    audit_id = _analysed_but_not_finalized(instance)
    retried = create_run_for_test(instance, job_name="audit_fiche", status=DagsterRunStatus.FAILURE,
                                  tags={"dagster/will_retry": "true"})
    _attach(audit_id, retried.run_id)
    assert sweep(instance, None)[0]["audits"] == 0
    cancelled = create_run_for_test(instance, job_name="audit_fiche", status=DagsterRunStatus.CANCELED)
    create_run_for_test(instance, job_name="audit_fiche", status=DagsterRunStatus.STARTED,
                        tags={"dagster/root_run_id": cancelled.run_id, "dagster/parent_run_id": cancelled.run_id},
                        root_run_id=cancelled.run_id, parent_run_id=cancelled.run_id)
    _attach(audit_id, cancelled.run_id)
    assert sweep(instance, None)[0]["audits"] == 0
    with session_scope() as s:
        assert s.get(Audit, audit_id).status == "running"


def test_sensor_starts_from_now_and_keeps_a_cursor(db, dagster_instance):
    instance = dagster_instance
    create_run_for_test(instance, job_name="audit_fiche", status=DagsterRunStatus.FAILURE)  # before the sensor
    result = run_endings(build_sensor_context(instance=instance))
    assert "runs=0" in result.skip_reason.skip_message and float(result.cursor) > 0



def test_failed_run_not_yet_tagged_for_retry_is_left_alone(db, dagster_instance):
    """Dagster records a run's failure, then tags it ``dagster/will_retry`` in a second write: a
    sweep in between must not finalize what the coming retry will finish (the crash tests kill run
    workers, tests/e2e/test_crash_safety.py). Once no retry is left, the run is ended as before."""
    import os

    from dagster import instance_for_test

    audit_id = _analysed_but_not_finalized(dagster_instance)
    overrides = {"storage": {"postgres": {"postgres_url": os.environ["AUDITFLOW_DAGSTER_STORAGE_URL"]}},
                 "run_retries": {"enabled": True, "max_retries": 1}}
    with instance_for_test(overrides=overrides) as instance:
        crashed = create_run_for_test(instance, job_name="audit_fiche", status=DagsterRunStatus.FAILURE,
                                      tags={"dagster/failure_reason": "RUN_EXCEPTION"})
        assert "dagster/will_retry" not in crashed.tags  # the instant between Dagster's two writes
        _attach(audit_id, crashed.run_id)
        assert sweep(instance, None)[0] == {"runs": 1, "audits": 0, "transcriptions": 0}
        with session_scope() as s:
            assert s.get(Audit, audit_id).status == "running"
        # its retry crashed too, and it was the last one allowed: the audit is ended now
        create_run_for_test(instance, job_name="audit_fiche", status=DagsterRunStatus.FAILURE,
                            tags={"dagster/failure_reason": "RUN_EXCEPTION", "dagster/root_run_id": crashed.run_id,
                                  "dagster/parent_run_id": crashed.run_id},
                            root_run_id=crashed.run_id, parent_run_id=crashed.run_id)
        assert sweep(instance, None)[0]["audits"] == 1
    with session_scope() as s:
        assert s.get(Audit, audit_id).status == "completed"
