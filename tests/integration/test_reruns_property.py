"""Property: any random sequence of step reruns, control-point reruns, step reviews and
control-point reviews on a completed audit leaves the stored summary equal to the summary
recomputed from the rows, scores in bounds, and exactly one trail row per action, in order.

The reruns go through :func:`execute_rerun` (the body of the ``rerun_audit_step`` asset) with a
randomizing wrapper of the offline auditor: random statuses, verdicts, scores above the weight and
invented quotes (which gating must drop), so gating and clamping are exercised too.
"""

from __future__ import annotations

import random
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from auditflow_dagster.assets.checks import bound_problems, summary_problems
from auditflow_dagster.assets.reruns import RerunConfig, execute_rerun
from auditflow_dagster.core.scoring import StepScoreInput, compute_compliance
from auditflow_dagster.db import step_edits
from auditflow_dagster.db.models import (
    Audit,
    AuditSnapshot,
    AuditStepResult,
    AuditStepResultHumanReview,
    AuditStepResultRerunEvent,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.db.trails import step_trails
from auditflow_dagster.resources.llm import LlmResource, StepCallResult
from tests.integration.test_reruns import audited  # noqa: F401 - the fixture

STATUTS = ["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]


class RandomAuditor:
    """The offline auditor's answer, then randomly perturbed."""

    def __init__(self, seed: int) -> None:
        self.inner = LlmResource(mode="offline").client()
        self.rnd = random.Random(seed)

    async def analyze_step(self, **kw) -> StepCallResult:
        call = await self.inner.analyze_step(**kw)
        out, r = dict(call.output), self.rnd
        for p in out["points_controle"]:
            if r.random() < 0.5:
                p["statut"] = r.choice(STATUTS)
            for c in p["citations"]:
                if r.random() < 0.3:
                    c["texte"] = "une citation inventée qui ne figure nulle part"
        out["score"] = r.randint(0, kw["step"].weight + 3)
        out["conforme"] = r.choice(["CONFORME", "NON_CONFORME", "PARTIEL"])
        return StepCallResult(output=out, usage=call.usage, model=call.model)

    async def aclose(self) -> None:
        return None


def _trail_ids(s) -> list[tuple[str, int]]:
    reviews = [("review", r.id) for r in s.scalars(select(AuditStepResultHumanReview))]
    reruns = [("rerun", r.id) for r in s.scalars(select(AuditStepResultRerunEvent))]
    return reviews + reruns


def _check_summary(audit_id: int) -> None:
    with session_scope() as s:
        audit = s.get(Audit, audit_id)
        assert summary_problems(s, audit) == []
        assert bound_problems(s, audit) == []
        rows = s.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id)).all()
        c = compute_compliance([StepScoreInput(r.step_position, r.weight, r.is_critical, r.score, r.conforme)
                                for r in rows])
        assert (audit.score_percentage, audit.niveau, audit.is_compliant, audit.critical_passed,
                audit.critical_total) == (c.score_percentage, c.niveau, c.is_compliant, c.critical_passed,
                                          c.critical_total)
        assert audit.overall_score == audit.score_percentage


def test_random_sequences_keep_summary_and_trails(audited):  # noqa: F811 - the imported fixture
    _, _, audit_id = audited
    with session_scope() as s:
        steps = {st_["position"]: (len(st_["control_points"]), st_["weight"])
                 for st_ in s.get(AuditSnapshot, audit_id).config["steps"]}
    positions = sorted(steps)

    step_rerun = st.tuples(st.just("step_rerun"), st.sampled_from(positions), st.booleans(), st.integers(0, 10**6))
    cp_rerun = st.tuples(st.just("cp_rerun"), st.sampled_from(positions), st.integers(1, 50), st.booleans(),
                         st.integers(0, 10**6))
    step_review = st.tuples(st.just("step_review"), st.sampled_from(positions),
                            st.sampled_from(["CONFORME", "NON_CONFORME", "PARTIEL"]),
                            st.one_of(st.none(), st.floats(0, 1)), st.one_of(st.none(), st.booleans()))
    cp_review = st.tuples(st.just("cp_review"), st.sampled_from(positions), st.integers(1, 50),
                          st.one_of(st.none(), st.sampled_from(STATUTS)), st.one_of(st.none(), st.text(max_size=30)))

    @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.one_of(step_rerun, cp_rerun, step_review, cp_review), min_size=1, max_size=6))
    def run(actions):
        for action in actions:
            kind, pos = action[0], action[1]
            n_points, weight = steps[pos]
            with session_scope() as s:
                before = _trail_ids(s)
            if kind == "step_rerun":
                _, _, replace, seed = action
                out = execute_rerun(RerunConfig(audit_id=audit_id, step_position=pos, replace_human_review=replace),
                                    auditor=RandomAuditor(seed), event_id=str(uuid.uuid4()))
                assert out["status"] == "applied"
                expect = ("rerun", "step_rerun", None)
            elif kind == "cp_rerun":
                _, _, i, replace, seed = action
                i = 1 + (i - 1) % n_points
                out = execute_rerun(RerunConfig(audit_id=audit_id, step_position=pos, control_point_index=i,
                                                replace_human_review=replace),
                                    auditor=RandomAuditor(seed), event_id=str(uuid.uuid4()))
                assert out["status"] == "applied"
                expect = ("rerun", "control_point_rerun", i)
            elif kind == "step_review":
                _, _, conforme, frac, traite = action
                score = None if frac is None else int(frac * weight)
                with session_scope() as s:
                    step_edits.review_step(s, audit_id, pos, conforme=conforme, score=score, traite=traite)
                expect = ("review", "step", None)
            else:
                _, _, i, statut, commentaire = action
                i = 1 + (i - 1) % n_points
                if statut is None and commentaire is None:
                    statut = "PRESENT"
                with session_scope() as s:
                    step_edits.review_control_point(s, audit_id, pos, i, statut=statut, commentaire=commentaire)
                expect = ("review", "control_point", i)
            _check_summary(audit_id)
            with session_scope() as s:
                after = _trail_ids(s)
                new = sorted(set(after) - set(before))
                assert len(new) == 1, (action, new)  # exactly one trail row per action
                table, row_id = new[0]
                model = AuditStepResultHumanReview if table == "review" else AuditStepResultRerunEvent
                row = s.get(model, row_id)
                assert (table, row.kind, row.control_point_index, row.step_position) == (*expect, pos)
                # and it is the newest entry of the step's trail (oldest first)
                trails = step_trails(s, audit_id)[pos]
                last = trails["human_review" if table == "review" else "rerun_history"][-1]
                assert last.get("kind", "step") == row.kind
                if table == "review":
                    assert last["at"] is not None
                else:
                    assert last["rerun_id"] == row.rerun_id
                # a step override in force holds the step verdict
                step_row = s.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                                  AuditStepResult.step_position == pos))
                marker = (step_row.raw_result or {}).get("human_override")
                if marker is not None:
                    assert (step_row.conforme, step_row.score) == (marker["conforme"], marker["score"])

    run()
