"""Calibration (issue 11 §3, "What it must show": the numbers recompute exactly from the review
rows). Audits of two configs get AI step results (the finalizer's writer), then human reviews
through the real review routes (``PATCH …/review``) and reruns through the rerun persistence the
``rerun_audit_step`` job uses, on a controlled clock spread over several ISO weeks (one review on
a Sunday night UTC that is already Monday in Paris). Covered: agreements, disagreements of several
kinds, comment-only reviews, re-reviews, a control-point review before the step review, a rerun
confirmed by a reviewer, a rerun never reviewed, a step rerun before any point review
(unrecoverable), a deleted audit.

Expected numbers come from two independent computations: a ledger of what the test itself did
(the AI verdicts it wrote, the verdicts it sent, the weeks it chose in Paris time), and, for the
config without reruns, plain SQL over the review rows. ``GET /api/reports/calibration`` (filters,
errors, scope ALL) and the ``calibration_report`` asset must equal them."""

from __future__ import annotations

import base64
import datetime as dt
import io
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dagster import materialize
from PIL import Image
from sqlalchemy import text, update
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.assets.calibration import calibration_report
from auditflow_dagster.core.audit_config import AuditConfigSpec, AuditStepSpec
from auditflow_dagster.core.scoring import derived_step_score, niveau_for, step_ratio
from auditflow_dagster.db import api_keys, step_edits
from auditflow_dagster.db import audits as audit_db
from auditflow_dagster.db.configs import (
    ensure_bundled_config,
    import_config,
    load_config,
)
from auditflow_dagster.db.models import Audit, FicheCache
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.database import DatabaseResource

PARIS = ZoneInfo("Europe/Paris")
STATUTS = ["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]
CONFORMES = ["CONFORME", "NON_CONFORME", "PARTIEL"]
UNREACHABLE_DAGSTER = "http://127.0.0.1:9/graphql"
IMAGE = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def paris(day: str, hour: int = 10, minute: int = 0) -> tuple[dt.datetime, str]:
    """(naive UTC instant, ISO week label) of a Paris wall-clock time — the week taken from the
    Paris calendar date, not computed from the instant."""
    local = dt.datetime.fromisoformat(f"{day}T{hour:02d}:{minute:02d}")
    year, week, _ = local.date().isocalendar()
    return local.replace(tzinfo=PARIS).astimezone(dt.UTC).replace(tzinfo=None), f"{year}-W{week:02d}"


# --------------------------------------------------------------------------------------------- #
# The world and its ledger
# --------------------------------------------------------------------------------------------- #


@dataclass
class Ev:
    kind: str  # review | cp_rerun | step_rerun (on a point) | rerun (on a step)
    at: dt.datetime
    week: str
    value: str | None = None


@dataclass
class World:
    client: TestClient
    cfg1: int
    cfg2: int
    specs: dict[int, dict[int, AuditStepSpec]]
    audits: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (audit id, config id)
    orig: dict[tuple, str] = field(default_factory=dict)  # item → AI verdict the audit run wrote
    state: dict[tuple, str] = field(default_factory=dict)  # item → current verdict
    events: dict[tuple, list[Ev]] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    now: dt.datetime = dt.datetime(2026, 1, 1)
    n: int = 0

    def cfg_of(self, audit_id: int) -> int:
        return next(c for a, c in self.audits.values() if a == audit_id)

    def log(self, item: tuple, ev: Ev) -> None:
        self.events.setdefault(item, []).append(ev)


def _audit(w: World, s, name: str, cfg: int, rnd: random.Random) -> None:
    fiche = FicheCache(fiche_id=f"{900 + len(w.audits)}", groupe="Azur", sales_date="2026-03-02",
                       expires_at=dt.datetime(2100, 1, 1), details_success=True)
    s.add(fiche)
    s.flush()
    audit = Audit(fiche_cache_id=fiche.id, audit_config_id=cfg, tracking_id=f"audit-{name}", status="completed")
    s.add(audit)
    s.flush()
    for pos, spec in w.specs[cfg].items():
        statuts = [rnd.choice(STATUTS) for _ in spec.control_points]
        conforme = rnd.choice(CONFORMES)  # the model's own verdict (not always the derived one)
        ratio = step_ratio(statuts)
        audit_db.upsert_step_result(s, audit.id, spec, {
            "traite": True, "conforme": conforme, "score": derived_step_score(ratio, spec.weight),
            "niveau_conformite": niveau_for(conforme, ratio), "commentaire_global": "analyse IA",
            "points_controle": [{"point": t, "statut": st_, "commentaire": "IA", "citations": []}
                                for t, st_ in zip(spec.control_points, statuts, strict=True)]},
            usage={"total_tokens": 10}, model="test-model")
        w.orig[(audit.id, pos)] = w.state[(audit.id, pos)] = conforme
        for i, st_ in enumerate(statuts, 1):
            w.orig[(audit.id, pos, i)] = w.state[(audit.id, pos, i)] = st_
    w.audits[name] = (audit.id, cfg)


def _act(w: World, action: tuple) -> None:
    at, week = action[0]
    w.now = at
    kind, name, pos = action[1], action[2], action[3]
    audit_id, cfg = w.audits[name]
    w.n += 1
    if kind == "cp_review":
        idx, statut, comment = action[4], action[5], action[6]
        body = {k: v for k, v in (("statut", statut), ("commentaire", comment)) if v is not None}
        r = w.client.patch(f"/api/audits/{audit_id}/steps/{pos}/control-points/{idx}/review",
                           json={**body, "reviewer": "qa@example.com"})
        assert r.status_code == 200, r.text
        value = statut if statut is not None else w.state[(audit_id, pos, idx)]
        assert r.json()["data"]["statut"] == value
        w.state[(audit_id, pos, idx)] = value
        w.log((audit_id, pos, idx), Ev("review", at, week, value))
    elif kind == "step_review":
        conforme = action[4]
        r = w.client.patch(f"/api/audits/{audit_id}/steps/{pos}/review",
                           json={"conforme": conforme, "reviewer": "qa@example.com", "reason": "calibration"})
        assert r.status_code == 200 and r.json()["data"]["conforme"] == conforme, r.text
        w.state[(audit_id, pos)] = conforme
        w.log((audit_id, pos), Ev("review", at, week, conforme))
    elif kind == "cp_rerun":
        idx, new = action[4], action[5]
        spec = w.specs[cfg][pos]
        with session_scope() as s:
            out = step_edits.persist_control_point_rerun(
                s, audit_id=audit_id, position=pos, index=idx, point_text=spec.control_points[idx - 1],
                new_point={"point": spec.control_points[idx - 1], "statut": new, "commentaire": "rerun", "citations": []},
                rerun_id=f"rerun-{audit_id}-{pos}-cp-{idx}-{w.n}", event_id=f"ev-{w.n}", custom_prompt="Relis l'appel",
                replace_human_review=False)
        assert out.applied
        w.state[(audit_id, pos, idx)] = new
        w.log((audit_id, pos, idx), Ev("cp_rerun", at, week))
        w.log((audit_id, pos), Ev("rerun", at, week))
    elif kind == "step_rerun":
        statuts, conforme = action[4], action[5]
        spec = w.specs[cfg][pos]
        ratio = step_ratio(statuts)
        payload = {"traite": True, "conforme": conforme, "score": derived_step_score(ratio, spec.weight),
                   "niveau_conformite": niveau_for(conforme, ratio), "commentaire_global": "rerun",
                   "points_controle": [{"point": t, "statut": s_, "commentaire": "rerun", "citations": []}
                                       for t, s_ in zip(spec.control_points, statuts, strict=True)]}
        with session_scope() as s:
            out = step_edits.persist_step_rerun(
                s, audit_id=audit_id, step=spec, gated=payload, raw_score=payload["score"], raw_conforme=conforme,
                usage={"total_tokens": 5}, model="test-model", rerun_id=f"rerun-{audit_id}-{pos}-{w.n}",
                event_id=f"ev-{w.n}", custom_prompt="Sois strict", replace_human_review=False)
        assert out.applied
        for i, s_ in enumerate(statuts, 1):
            w.state[(audit_id, pos, i)] = s_
            w.log((audit_id, pos, i), Ev("step_rerun", at, week))
        w.log((audit_id, pos), Ev("rerun", at, week))
    else:
        raise AssertionError(kind)


def _other(value: str, vocab: list[str], rnd: random.Random) -> str:
    return rnd.choice([v for v in vocab if v != value])


def _scenario(w: World, rnd: random.Random) -> list[tuple]:
    """Explicit cases on config 1 (audits A1–A6, steps 1–6), random reviews elsewhere."""
    o = w.orig
    a = {name: w.audits[name][0] for name in w.audits}
    rerun_value = _other(o[(a["A2"], 3, 2)], STATUTS, rnd)
    acts: list[tuple] = [
        # A1 step 1: agree, disagree, comment only, then the step (its first trail row is a point review)
        (paris("2026-03-02", 9), "cp_review", "A1", 1, 1, o[(a["A1"], 1, 1)], None),
        (paris("2026-03-02", 10), "cp_review", "A1", 1, 2, _other(o[(a["A1"], 1, 2)], STATUTS, rnd), None),
        (paris("2026-03-03", 11), "cp_review", "A1", 1, 3, None, "RAS, vu à l'écoute"),
        (paris("2026-03-03", 12), "step_review", "A1", 1, _other(o[(a["A1"], 1)], CONFORMES, rnd)),
        # A2 step 2 point 1: disagree in W10, the reviewer changes their mind in W11 (final = agree)
        (paris("2026-03-04", 15), "cp_review", "A2", 2, 1, _other(o[(a["A2"], 2, 1)], STATUTS, rnd), None),
        (paris("2026-03-10", 15), "cp_review", "A2", 2, 1, o[(a["A2"], 2, 1)], None),
        # A2 step 3: a point rerun changes the verdict and a reviewer confirms it (disagreement of the
        # original); another point is rerun and never reviewed (counts nothing)
        (paris("2026-03-05", 9), "cp_rerun", "A2", 3, 2, rerun_value),
        (paris("2026-03-05", 9, 30), "cp_rerun", "A2", 3, 3, _other(o[(a["A2"], 3, 3)], STATUTS, rnd)),
        (paris("2026-03-05", 14), "cp_review", "A2", 3, 2, rerun_value, None),
        # A3 step 4: a step rerun first — its points' originals are lost (unrecoverable), the step's is not
        (paris("2026-03-09", 8), "step_rerun", "A3", 4,
         [_other(o[(a["A3"], 4, i)], STATUTS, rnd) for i in (1, 2, 3)], _other(o[(a["A3"], 4)], CONFORMES, rnd)),
        (paris("2026-03-11", 16), "cp_review", "A3", 4, 1, "PRESENT", None),
        (paris("2026-03-11", 17), "step_review", "A3", 4, o[(a["A3"], 4)]),
        # A3 step 5: reviewed, then a step rerun after the review (the human verdict stands)
        (paris("2026-03-12", 9), "cp_review", "A3", 5, 1, o[(a["A3"], 5, 1)], None),
        (paris("2026-03-13", 9), "step_rerun", "A3", 5, ["ABSENT", "ABSENT", "ABSENT"], "NON_CONFORME"),
        # A4 step 6: step agreement; a point disagreement of another kind
        (paris("2026-03-16", 10), "step_review", "A4", 6, o[(a["A4"], 6)]),
        (paris("2026-03-17", 10), "cp_review", "A4", 6, 2, _other(o[(a["A4"], 6, 2)], STATUTS, rnd), None),
        # A5 is deleted at the end: its reviews never count
        (paris("2026-03-06", 10), "cp_review", "A5", 1, 1, _other(o[(a["A5"], 1, 1)], STATUTS, rnd), None),
        (paris("2026-03-06", 11), "step_review", "A5", 1, o[(a["A5"], 1)]),
        # A6: Monday 00:30 in Paris is Sunday 23:30 UTC — ISO week 12, not 11
        (paris("2026-03-16", 0, 30), "cp_review", "A6", 1, 1, _other(o[(a["A6"], 1, 1)], STATUTS, rnd), None),
        # A6 step 2: a point rerun that changes nothing, then confirmed (agreement, rerun-assisted)
        (paris("2026-03-18", 9), "cp_rerun", "A6", 2, 1, o[(a["A6"], 2, 1)]),
        (paris("2026-03-18", 10), "cp_review", "A6", 2, 1, o[(a["A6"], 2, 1)], None),
    ]
    days = [f"2026-03-{d:02d}" for d in range(2, 32)]
    targets = [(name, pos) for name in ("A1", "A2", "A3", "A4", "A6") for pos in (7, 8, 9)]
    targets += [(name, pos) for name in ("B1", "B2", "B3", "B4", "B5", "B6") for pos in w.specs[w.cfg2]]
    for name, pos in targets:
        cfg = w.audits[name][1]
        n_points = len(w.specs[cfg][pos].control_points)
        for _ in range(rnd.randint(2, 5)):
            at, week = paris(rnd.choice(days), rnd.randint(8, 19), rnd.choice([0, 15, 30, 45]))
            when = (at + dt.timedelta(seconds=len(acts)), week)  # distinct instants (daytime: same week)
            if rnd.random() < 0.3:
                acts.append((when, "step_review", name, pos, rnd.choice(CONFORMES)))
            else:
                idx = rnd.randint(1, n_points)
                statut = rnd.choice([*STATUTS, None]) if rnd.random() < 0.9 else None
                acts.append((when, "cp_review", name, pos, idx, statut, None if statut else "commentaire seul"))
    acts.sort(key=lambda x: x[0][0])
    assert len({x[0][0] for x in acts}) == len(acts)  # distinct instants: the order is the time order
    return acts


@pytest.fixture()
def world(db, monkeypatch) -> World:
    rnd = random.Random(11)
    with session_scope() as s:
        cfg1 = ensure_bundled_config(s)
        cfg2 = import_config(s, AuditConfigSpec(name="Calibration C2", steps=[
            AuditStepSpec(position=1, name="Accueil", prompt="p", control_points=["Bonjour", "Nom", "Société"],
                          severity_level="LOW", weight=4),
            AuditStepSpec(position=2, name="Clôture", prompt="p", control_points=["Récapitulatif", "Au revoir"],
                          severity_level="MEDIUM", weight=6)])).id
        specs = {c: {st_.position: st_ for st_ in load_config(s, c)[1].steps} for c in (cfg1, cfg2)}
    monkeypatch.setattr(step_edits, "now_utc", lambda: w.now)
    with TestClient(create_app(dagster_url=UNREACHABLE_DAGSTER), raise_server_exceptions=False) as client:
        w = World(client=client, cfg1=cfg1, cfg2=cfg2, specs=specs)
        with session_scope() as s:
            for name in ("A1", "A2", "A3", "A4", "A5", "A6"):
                _audit(w, s, name, cfg1, rnd)
            for name in ("B1", "B2", "B3", "B4", "B5", "B6"):
                _audit(w, s, name, cfg2, rnd)
        for action in _scenario(w, rnd):
            _act(w, action)
        deleted = w.audits["A5"][0]
        with session_scope() as s:
            s.execute(update(Audit).where(Audit.id == deleted).values(deleted_at=dt.datetime(2026, 4, 1)))
        w.deleted.add(deleted)
        yield w


# --------------------------------------------------------------------------------------------- #
# Expected numbers: the ledger, tallied by hand
# --------------------------------------------------------------------------------------------- #


def ledger_rows(w: World, *, config: int | None = None, since: dt.datetime | None = None,
                until: dt.datetime | None = None) -> list[dict[str, Any]]:
    out = []
    for item, evs in w.events.items():
        audit_id, pos = item[0], item[1]
        cfg = w.cfg_of(audit_id)
        if audit_id in w.deleted or (config is not None and cfg != config):
            continue
        reviews = [e for e in evs if e.kind == "review" and (until is None or e.at < until)]
        if not reviews or (since is not None and reviews[-1].at < since):
            continue
        final = reviews[-1]
        level = "control_point" if len(item) == 3 else "step"
        lost = level == "control_point" and evs[0].kind == "step_rerun"
        out.append({"level": level, "cfg": cfg, "pos": pos, "idx": item[2] if len(item) == 3 else None,
                    "ai": None if lost else w.orig[item], "human": final.value, "week": final.week,
                    "rerun": any(e.kind != "review" and e.at <= final.at for e in evs)})
    return out


def tally(rows: list[dict[str, Any]]) -> dict[str, Any]:
    usable = [r for r in rows if r["ai"] is not None]
    weeks: dict[str, list[int]] = {}
    for r in usable:
        cell = weeks.setdefault(r["week"], [0, 0])
        cell[0] += 1
        cell[1] += r["ai"] == r["human"]
    return {"reviewed": len(usable), "agreed": sum(r["ai"] == r["human"] for r in usable),
            "unrecoverable": len(rows) - len(usable), "rerun_assisted": sum(r["rerun"] for r in usable),
            "cells": Counter((r["ai"], r["human"]) for r in usable),
            "weekly": {k: tuple(v) for k, v in weeks.items()}}


def observed(stats: dict[str, Any]) -> dict[str, Any]:
    assert stats["agreement_rate"] == (stats["agreed"] / stats["reviewed"] if stats["reviewed"] else None)
    return {"reviewed": stats["reviewed"], "agreed": stats["agreed"], "unrecoverable": stats["unrecoverable"],
            "rerun_assisted": stats["rerun_assisted"],
            "cells": Counter({(a, h): n for a, row in stats["confusion"].items() for h, n in row.items() if n}),
            "weekly": {x["week"]: (x["reviewed"], x["agreed"]) for x in stats["weekly"]}}


def assert_report_matches(report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    for level, key in (("control_point", "control_points"), ("step", "steps")):
        mine = [r for r in rows if r["level"] == level]
        assert observed(report["totals"][key]) == tally(mine), level
        for c in report["configs"]:
            assert observed(c[key]) == tally([r for r in mine if r["cfg"] == c["config_id"]]), (level, c["config_id"])
        assert {c["config_id"] for c in report["configs"]} == {r["cfg"] for r in rows}
    steps = {(r["cfg"], r["pos"]) for r in rows if r["level"] == "step"}
    assert [(s["config_id"], s["step_position"]) for s in report["steps"]] == sorted(steps)
    for s in report["steps"]:
        assert observed(s) == tally([r for r in rows if r["level"] == "step"
                                     and (r["cfg"], r["pos"]) == (s["config_id"], s["step_position"])])
    points = {(r["cfg"], r["pos"], r["idx"]) for r in rows if r["level"] == "control_point"}
    assert [(p["config_id"], p["step_position"], p["control_point_index"]) for p in report["control_points"]] \
        == sorted(points)
    for p in report["control_points"]:
        assert observed(p) == tally([r for r in rows if r["level"] == "control_point" and (r["cfg"], r["pos"], r["idx"])
                                     == (p["config_id"], p["step_position"], p["control_point_index"])])


# --------------------------------------------------------------------------------------------- #
# Plain SQL over the review rows (the config without reruns)
# --------------------------------------------------------------------------------------------- #

PLAIN_SQL = """
SELECT i.kind, i.step_position, i.control_point_index, f.prev, l.over,
       to_char((l.at AT TIME ZONE 'UTC') AT TIME ZONE 'Europe/Paris', 'IYYY-"W"IW') AS week
FROM (SELECT DISTINCT r.kind, r.audit_id, r.step_position, r.control_point_index
      FROM audit_step_result_human_reviews r JOIN audits a ON a.id = r.audit_id
      WHERE a.audit_config_id = :cfg AND a.deleted_at IS NULL) i
CROSS JOIN LATERAL (  -- the first review of the item's step (steps) or of the point (points)
    SELECT CASE WHEN i.kind = 'step' THEN r.previous_conforme ELSE r.previous_statut END AS prev
    FROM audit_step_result_human_reviews r
    WHERE r.audit_id = i.audit_id AND r.step_position = i.step_position
      AND (i.kind = 'step' OR (r.kind = 'control_point' AND r.control_point_index = i.control_point_index))
    ORDER BY r.reviewed_at, r.id LIMIT 1) f
CROSS JOIN LATERAL (  -- the last review of the item
    SELECT CASE WHEN i.kind = 'step' THEN r.override_conforme ELSE r.override_statut END AS over, r.reviewed_at AS at
    FROM audit_step_result_human_reviews r
    WHERE r.audit_id = i.audit_id AND r.step_position = i.step_position AND r.kind = i.kind
      AND r.control_point_index IS NOT DISTINCT FROM i.control_point_index
    ORDER BY r.reviewed_at DESC, r.id DESC LIMIT 1) l
"""


# --------------------------------------------------------------------------------------------- #
# Tests
# --------------------------------------------------------------------------------------------- #


def test_api_numbers_recompute_from_the_review_rows(world):
    w = world
    r = w.client.get("/api/reports/calibration")
    assert r.status_code == 200, r.text
    report = r.json()["data"]
    assert report["filters"] == {"config_id": None, "since": None, "until": None}
    rows = ledger_rows(w)
    assert_report_matches(report, rows)

    # the scenario really covers what it claims
    t = report["totals"]
    assert t["control_points"]["unrecoverable"] == 1 and t["control_points"]["rerun_assisted"] >= 2
    assert t["steps"]["rerun_assisted"] == 1 and t["steps"]["unrecoverable"] == 0
    off = [(a, h) for a, row in t["control_points"]["confusion"].items() for h, n in row.items() if n and a != h]
    assert len(off) >= 4 and 0 < t["control_points"]["agreed"] < t["control_points"]["reviewed"]
    assert len({x["week"] for x in t["control_points"]["weekly"]}) >= 4
    a = {name: aid for name, (aid, _) in w.audits.items()}
    by_item = {(x["cfg"], x["pos"], x["idx"], x["level"]): x for x in rows}
    # the rerun confirmed by a reviewer is a disagreement of the original, flagged rerun-assisted
    confirmed = next(x for x in ledger_rows(w, config=w.cfg1) if x["level"] == "control_point" and x["pos"] == 3
                     and x["rerun"])
    assert confirmed["ai"] != confirmed["human"]
    # a reviewed step whose points were first reviewed keeps its original AI verdict (A1 step 1)
    assert by_item[(w.cfg1, 1, None, "step")]["ai"] is not None
    # A6's Sunday-night UTC review is in the Paris week 12
    [monday] = [e for e in w.events[(a["A6"], 1, 1)] if e.kind == "review"]
    assert monday.at == dt.datetime(2026, 3, 15, 23, 30) and monday.week == "2026-W12"

    # the config without reruns: plain SQL over the review rows gives the same numbers
    r2 = w.client.get(f"/api/reports/calibration?config_id={w.cfg2}")
    assert r2.status_code == 200
    only2 = r2.json()["data"]
    with session_scope() as s:
        assert s.execute(text("SELECT count(*) FROM audit_step_result_rerun_events e JOIN audits a ON a.id = e.audit_id "
                              "WHERE a.audit_config_id = :cfg"), {"cfg": w.cfg2}).scalar() == 0
        sql = [{"level": "step" if k == "step" else "control_point", "cfg": w.cfg2, "pos": pos, "idx": idx,
                "ai": prev, "human": over, "week": week, "rerun": False}
               for k, pos, idx, prev, over, week in s.execute(text(PLAIN_SQL), {"cfg": w.cfg2})]
    assert len(sql) > 15
    with session_scope() as s:  # some step's first review was a point review (the verdict it saw is recorded)
        assert s.execute(text("""
            SELECT count(*) FROM (SELECT DISTINCT ON (audit_id, step_position) kind, previous_conforme
                                  FROM audit_step_result_human_reviews ORDER BY audit_id, step_position, reviewed_at) f
            WHERE kind = 'control_point' AND previous_conforme IS NOT NULL""")).scalar() > 0
    assert_report_matches(only2, sql)
    assert sorted(sql, key=repr) == sorted(ledger_rows(w, config=w.cfg2), key=repr)
    assert [c["config_id"] for c in only2["configs"]] == [w.cfg2]
    assert only2["configs"][0]["config_name"] == "Calibration C2"


def test_filters_since_until(world):
    w = world
    since, until = dt.date(2026, 3, 9), dt.date(2026, 3, 15)  # ISO week 11, Paris days
    lo = dt.datetime.combine(since, dt.time(), PARIS).astimezone(dt.UTC).replace(tzinfo=None)
    hi = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), PARIS).astimezone(dt.UTC).replace(tzinfo=None)
    r = w.client.get(f"/api/reports/calibration?since={since}&until={until}&config_id={w.cfg1}")
    assert r.status_code == 200, r.text
    report = r.json()["data"]
    assert report["filters"] == {"config_id": w.cfg1, "since": "2026-03-09", "until": "2026-03-15"}
    rows = ledger_rows(w, config=w.cfg1, since=lo, until=hi)
    assert rows and {x["week"] for x in rows} == {"2026-W11"}
    assert_report_matches(report, rows)
    # the A2 point reviewed in W10 then in W11: its W11 review is the verdict; "until" W10 sees the first one
    early = w.client.get(f"/api/reports/calibration?until=2026-03-08&config_id={w.cfg1}").json()["data"]
    assert_report_matches(early, ledger_rows(w, config=w.cfg1, until=lo))
    a2 = w.audits["A2"][0]
    [p] = [p for p in early["control_points"] if (p["step_position"], p["control_point_index"]) == (2, 1)]
    assert p["agreed"] == 0 and p["reviewed"] == 1  # W10: the reviewer disagreed
    assert [e.kind for e in w.events[(a2, 2, 1)]] == ["review", "review"]
    # an empty window is an empty report, not an error
    empty = w.client.get("/api/reports/calibration?since=2030-01-01").json()["data"]
    assert empty["totals"]["control_points"]["reviewed"] == 0 and empty["control_points"] == []
    assert empty["totals"]["steps"]["agreement_rate"] is None


def test_asset_shows_the_same_numbers(world, dagster_instance):
    w = world
    api = w.client.get("/api/reports/calibration").json()["data"]
    result = materialize([calibration_report], instance=dagster_instance, resources={"db": DatabaseResource()})
    assert result.success
    [mat] = result.asset_materializations_for_node("calibration_report")
    md = {k: v.value for k, v in mat.metadata.items()}
    t = api["totals"]
    assert md["control_points_reviewed"] == t["control_points"]["reviewed"]
    assert md["control_points_agreed"] == t["control_points"]["agreed"]
    assert md["steps_reviewed"] == t["steps"]["reviewed"] and md["steps_agreed"] == t["steps"]["agreed"]
    assert md["unrecoverable"] == 1
    assert md["control_point_agreement_rate"] == round(t["control_points"]["agreed"] / t["control_points"]["reviewed"], 4)
    table = md["per_control_point"]
    assert table.startswith("| config | step | # | control point | reviewed | agreement |")
    assert len(table.splitlines()) == 2 + len(api["control_points"])
    assert "2026-W12" in md["weekly_trend"] and "Reruns" in md["method"]
    for key in ("chart_trend", "chart_control_points"):
        [b64] = IMAGE.findall(md[key])
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert img.format == "PNG" and img.size[0] > 300


def test_endpoint_errors(world):
    c = world.client
    for url in ("?config_id=abc", "?config_id=0", "?config_id=-1", f"?config_id={2**63}", "?since=2026-02-30",
                "?until=yesterday", "?since=2026-03-10&until=2026-03-09", "?since=2026-03-01&since=2026-03-02"):
        r = c.get("/api/reports/calibration" + url)
        assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR", (url, r.text)
    r = c.get("/api/reports/calibration?config_id=999999")
    assert r.status_code == 404 and r.json() == {"success": False, "error": "Audit config not found",
                                                   "code": "NOT_FOUND"}


def test_endpoint_needs_audits_read_and_scope_all(auth_on):
    def key(permissions: list[str], scope: str = "ALL", **kw) -> dict[str, str]:
        with session_scope() as s:
            _, token = api_keys.create_key(s, name=f"k-{scope}-{len(permissions)}", permissions=permissions,
                                           scope=scope, **kw)
        return {"Authorization": f"Bearer {token}"}

    url = "/api/reports/calibration"
    with TestClient(create_app(dagster_url=UNREACHABLE_DAGSTER), raise_server_exceptions=False) as client:
        assert client.get(url).status_code == 401
        ok = client.get(url, headers=key(["audits.read"]))
        assert ok.status_code == 200 and ok.json()["data"]["totals"]["steps"]["reviewed"] == 0
        assert client.get(url, headers=key(["fiches.read", "audits.write"])).status_code == 403
        group = client.get(url, headers=key(["*"], "GROUP", groupes=["Azur"]))
        assert group.status_code == 403 and group.json()["error"] == "Compliance reports need scope ALL"
        assert client.get(url, headers=key(["*"], "SELF", crm_user_id="u1")).status_code == 403
        # authorization comes before input validation
        assert client.get(url + "?since=nope", headers=key(["audits.read"], "GROUP", groupes=["B"])).status_code == 403
