"""The automation run's view from inside the fiche assets (spec 05 §3.6, §3.8).

Runs of an automation run's backfill carry the tag ``automation/run_id``. Each fiche asset asks the
gate which of its partitions are still in play (no verdict yet), and records a verdict the moment
it knows one: ignored after details (not found, groupe, too many / no recordings), failed at any
stage, successful when the last stage the schedule asks for is done. Outside automation runs the
gate is inactive and changes nothing.
"""

from typing import Any

from auditflow_dagster.core import automation as rules
from auditflow_dagster.db import automation_runs as runs_db
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.session import session_scope

RUN_ID_TAG = "automation/run_id"


class AutomationGate:
    """``active`` is False outside automation runs; every method is then a no-op."""

    def __init__(self, tags: dict[str, str]) -> None:
        raw = tags.get(RUN_ID_TAG)
        self.run_id: int | None = int(raw) if raw and raw.isdigit() else None
        self.plan: dict[str, Any] = {}
        if self.run_id is not None:
            with session_scope() as s:
                self.plan = runs_db.plan_of(s, self.run_id) or {}
        self.active = self.run_id is not None and bool(self.plan)
        # the run row is gone (its schedule was deleted with force=true): the rest of the
        # backfill does nothing rather than write audits linked to a run that no longer exists
        self.orphaned = self.run_id is not None and not self.plan

    def pending(self, keys: list[str]) -> list[str]:
        """The partitions without a verdict yet (the others are done for this run)."""
        if self.orphaned:
            return []
        if not self.active:
            return keys
        with session_scope() as s:
            done = runs_db.verdicts(s, self.run_id, keys)
        return [k for k in keys if k not in done]

    def _unless_stopped(self, keys: list[str]) -> list[str]:
        """``continueOnError`` off (spec 05 §3.8): once a fiche failed, no fiche starts a new stage;
        the ones that have not are ignored with the spec's reason (work already going finishes)."""
        if not self.active or self.plan.get("continue_on_error", True) or not keys:
            return keys
        with session_scope() as s:
            if not runs_db.has_failure(s, self.run_id):
                return keys
            for k in keys:
                runs_db.record_outcome(s, self.run_id, k, rules.Verdict("ignored", reason=rules.STOPPED))
        return []

    def record(self, fiche_id: str, verdict: rules.Verdict) -> None:
        if self.active:
            with session_scope() as s:
                runs_db.record_outcome(s, self.run_id, fiche_id, verdict)

    # -- stages ---------------------------------------------------------------------------------

    def start_details(self, keys: list[str]) -> list[str]:
        """The fiches that start now (none after a failure when ``continueOnError`` is off)."""
        return self._unless_stopped(self.pending(keys))

    def after_details(self, outcomes: dict[str, str], errors: dict[str, str]) -> None:
        """Not found ⇒ ignored; fetch failure ⇒ failed; else the post-details filters (§3.6 step 2)."""
        if not self.active:
            return
        with session_scope() as s:
            for fiche_id, outcome in outcomes.items():
                if outcome == "not_found":
                    verdict: rules.Verdict | None = rules.Verdict("ignored", reason=rules.NOT_FOUND, recordings_count=0)
                elif outcome == "failed":
                    verdict = rules.Verdict("failed", error=errors.get(fiche_id) or "Fiche details fetch failed")
                else:
                    row = fiche_db.get_row(s, fiche_id)
                    if row is None or not fiche_db.details_ready(s, row):
                        verdict = rules.Verdict("failed", error="Fiche details not fetched (cache incomplete)")
                    else:
                        verdict = rules.post_details_verdict(
                            row.groupe, len(fiche_db.recordings_of(s, row.id)), groupes=self.plan.get("groupes", []),
                            threshold=int(self.plan.get("threshold", 50)),
                            only_with_recordings=bool(self.plan.get("only_with_recordings")))
                if verdict is not None:
                    runs_db.record_outcome(s, self.run_id, fiche_id, verdict)

    def transcription_keys(self, keys: list[str]) -> list[str]:
        """The fiches to transcribe now: in play, and only when the schedule transcribes."""
        keys = self._unless_stopped(self.pending(keys))
        if self.active and not self.plan.get("run_transcription", True):
            return []
        return keys

    def after_transcription(self, results: list[dict[str, Any]], *, provider_ready: bool) -> None:
        """Every recording must be transcribed, else failed; with audits off, done ⇒ successful."""
        if not self.active:
            return
        for r in results:
            if not provider_ready and r.get("total", 0) and r.get("failed", 0):
                self.record(r["fiche_id"], rules.Verdict("failed", error=rules.PROVIDER_MISSING))
            elif r.get("skipped") or r.get("failed", 0):
                self.record(r["fiche_id"], rules.Verdict("failed", error=rules.TRANSCRIPTION_INCOMPLETE))
            elif not self.plan.get("run_audits", True):
                self.record(r["fiche_id"], rules.Verdict("successful"))

    def audit_keys(self, keys: list[str]) -> list[str]:
        """The fiches to audit now. Audits off ⇒ whatever is still in play succeeded; no configs ⇒
        failed; nothing transcribed ⇒ ignored (empty timeline)."""
        keys = self._unless_stopped(self.pending(keys))
        if not self.active or not keys:
            return keys
        if not self.plan.get("run_audits", True):
            for k in keys:
                self.record(k, rules.Verdict("successful"))
            return []
        if not self.plan.get("config_ids"):
            for k in keys:
                self.record(k, rules.Verdict("failed", error=rules.NO_CONFIGS))
            return []
        out = []
        with session_scope() as s:
            for k in keys:
                row = fiche_db.get_row(s, k)
                recs = fiche_db.recordings_of(s, row.id) if row is not None else []
                if row is not None and not any(r.has_transcription for r in recs):
                    runs_db.record_outcome(s, self.run_id, k, rules.Verdict(
                        "ignored", reason=rules.EMPTY_TIMELINE, recordings_count=len(recs)))
                else:
                    out.append(k)
        return out

    def after_audits(self, keys: list[str]) -> None:
        """Per fiche, the run's audits of every resolved config decide (§3.6 step 4)."""
        if not self.active:
            return
        keys = self.pending(keys)
        config_ids = [int(c) for c in self.plan.get("config_ids", [])]
        with session_scope() as s:
            for k in keys:
                statuses = runs_db.run_audit_statuses(s, self.run_id, k, config_ids)
                runs_db.record_outcome(s, self.run_id, k, rules.audits_verdict(statuses))
