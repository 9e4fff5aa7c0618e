"""``GET /api/reports/audits/export`` (issue 10 §2) against real PostgreSQL, auth on.

The world: fiches of two groupes over four sales days (two inside the exported range), audits of
two configs written with the engine's step writer (``upsert_step_result``), human reviews through
the real review routes, a legacy step whose points live only in ``raw_result``, a failed step
without control points, an audit without any step, an older (not latest) audit, a deleted one.

The expected rows are recomputed independently from what the JSON API shows: the audit list
(same range, same key) picks the audits, each audit's detail (``GET /api/audits/{id}``) gives the
step results, control points, citations and review trails; only the sales day and the advisor name,
which the detail does not carry, come from plain SQL. Then: scope (GROUP, SELF), filters,
validation, XLSX = CSV, and over a real socket that the body really streams (first chunk while
the producer still holds an open server-side cursor), that a client leaving stops the export and
frees its connection, and that a failure mid-stream aborts the download instead of truncating it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, text, update
from starlette.testclient import TestClient

from api.app import create_app
from api.routes import exports as export_route
from auditflow_dagster.core.audit_config import AuditConfigSpec, AuditStepSpec
from auditflow_dagster.core.export import COLUMNS, HEADER
from auditflow_dagster.db import api_keys
from auditflow_dagster.db import audits as audit_db
from auditflow_dagster.db.audit_reads import ListParams
from auditflow_dagster.db.configs import (
    ensure_bundled_config,
    import_config,
    load_config,
)
from auditflow_dagster.db.exports import iter_export_records
from auditflow_dagster.db.models import (
    Audit,
    AuditStepResult,
    AuditStepResultControlPoint,
    FicheCache,
    FicheCacheInformation,
)
from auditflow_dagster.db.session import session_scope
from tests.fakes.server import serve_app
from tests.unit.test_export import read_xlsx

URL = "/api/reports/audits/export"
FROM, TO = "2026-10-01", "2026-10-02"
UNREACHABLE_DAGSTER = "http://127.0.0.1:9/graphql"
STATUTS = ["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]
ALL_PERMISSIONS = [p for p in api_keys.PERMISSIONS if p != "*"]

#: name, fiche id, sales day, information groupe (None: no information groupe), fiche groupe, user, advisor
FICHES = [
    ("a1", "5001", "2026-10-01", "Azur Énergie", "Azur Énergie", "u1", "Zoé Lefèvre"),
    ("a2", "5002", "2026-10-02", "Azur Énergie", "Azur Énergie", "u1", '=HYPERLINK("http://x.invalid")'),
    ("b1", "5003", "2026-10-01", "Bretagne", "Bretagne", "u2", 'Élodie "Lo" Marchand, senior'),
    ("b2", "5004", "2026-10-02", None, "Bretagne", "u2", None),
    ("before", "5000", "2026-09-30", "Azur Énergie", "Azur Énergie", "u1", "Zoé Lefèvre"),
    ("after", "5006", "2026-10-03", "Bretagne", "Bretagne", "u2", "Élodie"),
]


@dataclass
class World:
    cfg: int
    cfg2: int
    audits: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str = "all") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def _citations(rnd: random.Random, n: int) -> list[dict[str, Any]]:
    return [{"texte": f"citation {i} où l'on entend le conseiller", "minutage": f"00:{10 + i:02d}",
             "minutage_secondes": 10.0 + i, "speaker": "conseiller", "recording_index": 0, "chunk_index": i}
            for i in range(n)]


def _audit(s, w: World, name: str, fiche: FicheCache, cfg: int, steps: list[AuditStepSpec], rnd: random.Random, *,
           status: str = "completed", latest: bool = True, completed: dt.datetime | None = None,
           failed_positions: tuple[int, ...] = ()) -> int:
    audit = Audit(fiche_cache_id=fiche.id, audit_config_id=cfg, tracking_id=f"audit-{fiche.fiche_id}-{cfg}-{name}",
                  status=status, is_latest=latest, completed_at=completed, niveau="BON" if status == "completed" else "PENDING",
                  score_percentage=rnd.choice(["87.50", "62.25", "100.00"]), is_compliant=status == "completed",
                  result_data={"audit": {"results": {}}} if status == "completed" else None)
    s.add(audit)
    s.flush()
    for spec in steps:
        if spec.position in failed_positions:  # the model returned nothing: a step without control points
            audit_db.upsert_step_result(s, audit.id, spec, {"points_controle": []}, usage={"total_tokens": 3},
                                        failed=True, error="timeout")
            continue
        statuts = [rnd.choice(STATUTS) for _ in spec.control_points]
        audit_db.upsert_step_result(s, audit.id, spec, {
            "traite": True, "conforme": rnd.choice(["CONFORME", "NON_CONFORME", "PARTIEL"]),
            "score": rnd.randint(0, spec.weight), "niveau_conformite": rnd.choice(["BON", "INSUFFISANT"]),
            "commentaire_global": "analyse",
            "points_controle": [{"point": t, "statut": st, "commentaire": "vu",
                                 "citations": _citations(rnd, rnd.randint(0, 2))}
                                for t, st in zip(spec.control_points, statuts, strict=True)]},
            usage={"total_tokens": 10}, model="test-model")
    w.audits[name] = audit.id
    return audit.id


@pytest.fixture()
def world(auth_on) -> World:
    rnd = random.Random(20261001)
    with session_scope() as s:
        cfg = ensure_bundled_config(s)
        steps = load_config(s, cfg)[1].steps
        cfg2 = import_config(s, AuditConfigSpec(name="Contrôle qualité, court", steps=[
            AuditStepSpec(position=1, name="Identité, ORIAS", prompt="p", control_points=["Nom annoncé", "ORIAS cité"],
                          severity_level="HIGH", is_critical=True, weight=5),
            AuditStepSpec(position=2, name="Prix", prompt="p", control_points=["Prix TTC"], severity_level="MEDIUM",
                          weight=3),
            AuditStepSpec(position=3, name="Rétractation", prompt="p", control_points=["Délai de 14 jours"],
                          severity_level="HIGH", weight=4),
        ])).id
        steps2 = load_config(s, cfg2)[1].steps
        w = World(cfg=cfg, cfg2=cfg2)
        fiches: dict[str, FicheCache] = {}
        for name, fiche_id, day, info_groupe, groupe, user, advisor in FICHES:
            row = FicheCache(fiche_id=fiche_id, groupe=groupe, sales_date=day, expires_at=dt.datetime(2100, 1, 1),
                             details_success=True)
            s.add(row)
            s.flush()
            s.add(FicheCacheInformation(fiche_cache_id=row.id, groupe=info_groupe, attribution_user_id=user,
                                        attribution_user_nom=advisor))
            fiches[name] = row
        at = dt.datetime(2026, 10, 3, 9, 30, 15, 123000)
        _audit(s, w, "a1_old", fiches["a1"], cfg, steps[:2], rnd, latest=False, completed=at - dt.timedelta(hours=5))
        _audit(s, w, "a1", fiches["a1"], cfg, steps, rnd, completed=at)
        _audit(s, w, "a2", fiches["a2"], cfg2, steps2, rnd, completed=at, failed_positions=(2,))
        deleted = _audit(s, w, "a2_deleted", fiches["a2"], cfg, steps[:3], rnd, completed=at)
        s.execute(update(Audit).where(Audit.id == deleted).values(deleted_at=at))
        _audit(s, w, "b1", fiches["b1"], cfg, steps, rnd, completed=at + dt.timedelta(minutes=3))
        _audit(s, w, "b2", fiches["b2"], cfg, [], rnd, status="pending")  # no step yet
        _audit(s, w, "before", fiches["before"], cfg, steps[:2], rnd, completed=at)
        _audit(s, w, "after", fiches["after"], cfg, steps[:2], rnd, completed=at)
        # a legacy step: its points only in raw_result.points_controle (not yet normalized)
        legacy = [{"point": "Point historique, repris", "statut": "PARTIEL", "citations": [{"texte": "a"}, {"texte": "b"}]},
                  {"point": "Second point", "statut": "ABSENT", "citations": []}]
        s.execute(delete(AuditStepResultControlPoint).where(AuditStepResultControlPoint.audit_id == w.audits["a1"],
                                                            AuditStepResultControlPoint.step_position == 5))
        row = s.query(AuditStepResult).filter_by(audit_id=w.audits["a1"], step_position=5).one()
        row.raw_result = {**row.raw_result, "points_controle": legacy}
        for who, perms, scope, groupes, user in (("all", ["*"], "ALL", (), None),
                                                 ("group_a", ["audits.read"], "GROUP", ("Azur Énergie",), None),
                                                 ("self_u2", ["audits.read"], "SELF", (), "u2"),
                                                 ("no_read", [p for p in ALL_PERMISSIONS if p != "audits.read"],
                                                  "ALL", (), None)):
            _, w.tokens[who] = api_keys.create_key(s, name=who, permissions=perms, scope=scope, groupes=list(groupes),
                                                   crm_user_id=user)
    return w


@pytest.fixture()
def client(world):
    with TestClient(create_app(dagster_url=UNREACHABLE_DAGSTER), raise_server_exceptions=False) as c:
        _review(c, world)
        yield c


def _review(c: TestClient, w: World) -> None:
    """Human reviews through the real routes: a step override in force, a control point reviewed
    twice (the latest reviewer counts), and a point review on a step that is then overridden."""
    h = w.headers()
    for path, body in (
        (f"/api/audits/{w.audits['a1']}/steps/2/review",
         {"conforme": "NON_CONFORME", "score": 0, "reviewer": "qa@exemple.fr", "reason": "preuve insuffisante"}),
        (f"/api/audits/{w.audits['b1']}/steps/3/control-points/1/review", {"statut": "ABSENT", "reviewer": "relecteur"}),
        (f"/api/audits/{w.audits['b1']}/steps/3/control-points/1/review", {"statut": "PRESENT", "reviewer": "chef"}),
        (f"/api/audits/{w.audits['a2']}/steps/1/control-points/2/review", {"statut": "PARTIEL", "reviewer": "qa"}),
        (f"/api/audits/{w.audits['a2']}/steps/1/review", {"conforme": "CONFORME", "reviewer": "chef"}),
    ):
        r = c.patch(path, json=body, headers=h)
        assert r.status_code == 200, r.text


# --------------------------------------------------------------------------------------------- #
# The independent recomputation (JSON API + the two fiche columns from SQL)
# --------------------------------------------------------------------------------------------- #


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    s = str(v)
    return "'" + s if s.startswith(("=", "+", "-", "@")) else s


def expected_rows(c: TestClient, headers: dict[str, str], **filters: str) -> list[list[str]]:
    listing = c.get("/api/audits", params={"sales_date_from": FROM, "sales_date_to": TO, "limit": "500", **filters},
                    headers=headers)
    assert listing.status_code == 200, listing.text
    with session_scope() as s:
        fiche_info = {f: (d, n) for f, d, n in s.execute(text(
            "SELECT f.fiche_id, f.sales_date, i.attribution_user_nom FROM fiche_cache f "
            "LEFT JOIN fiche_cache_information i ON i.fiche_cache_id = f.id"))}
    rows: list[tuple[tuple, list[Any]]] = []
    for item in listing.json()["data"]:
        d = c.get(f"/api/audits/{item['id']}", headers=headers).json()["data"]
        fiche_id = d["ficheCache"]["ficheId"]
        day, advisor = fiche_info[fiche_id]
        audit_part = [day, fiche_id, d["ficheCache"]["groupe"], advisor, d["id"], d["auditConfigId"],
                      d["auditConfig"]["name"], d["status"], d["scorePercentage"], d["niveau"], d["isCompliant"],
                      d["isLatest"], d["completedAt"]]
        key = (day, fiche_id, int(d["id"]))
        if not d["stepResults"]:
            rows.append(((*key, 0, 0), audit_part + [None] * 16))
        view = ((d["resultData"] or {}).get("audit") or {}).get("results") or {}
        trails = {st["step_metadata"]["position"]: st["human_review"] for st in view.get("steps") or []}
        for sr in d["stepResults"]:
            pos = sr["stepPosition"]
            trail = trails.get(pos, [])
            marker = sr["rawResult"].get("human_override")
            step_reviews = [e for e in trail if e.get("kind") != "control_point"]
            step_part = [pos, sr["stepName"], sr["weight"], sr["isCritical"], sr["conforme"], sr["score"],
                         sr["niveauConformite"], isinstance(marker, dict),
                         step_reviews[-1]["by"] if marker else None, marker["reviewed_at"] if marker else None]
            points = [(p["controlPointIndex"], p["point"], p["statut"], len(p["citations"])) for p in sr["controlPoints"]]
            if not points and isinstance(sr["rawResult"].get("points_controle"), list):  # legacy step
                points = [(i, p["point"], p["statut"], len(p.get("citations") or []))
                          for i, p in enumerate(sr["rawResult"]["points_controle"], 1)]
            if not points:
                rows.append(((*key, pos, 0), audit_part + step_part + [None] * 6))
            for index, point, statut, n in points:
                reviews = [e for e in trail if e.get("kind") == "control_point" and e["control_point_index"] == index]
                last = reviews[-1] if reviews else {}
                rows.append(((*key, pos, index), audit_part + step_part + [index, point, statut, n, last.get("by"),
                                                                           last.get("at")]))
    rows.sort(key=lambda r: r[0])
    return [[_text(v) for v in row] for _, row in rows]


def csv_rows(r: httpx.Response) -> list[list[str]]:
    assert r.status_code == 200, r.text
    assert r.content.startswith(b"\xef\xbb\xbf"), r.content[:20]
    parsed = list(csv.reader(io.StringIO(r.content.decode("utf-8")[1:])))
    assert parsed[0] == list(HEADER)
    return parsed[1:]


def export(c: TestClient, w: World, who: str = "all", **params: str) -> httpx.Response:
    return c.get(URL, params={"sales_date_from": FROM, "sales_date_to": TO, **params}, headers=w.headers(who))


def col(rows: list[list[str]], name: str) -> list[str]:
    return [r[HEADER.index(name)] for r in rows]


# --------------------------------------------------------------------------------------------- #
# Tests
# --------------------------------------------------------------------------------------------- #


def test_csv_rows_equal_what_the_api_shows(client, world):
    r = export(client, world)
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == f'attachment; filename="audits_{FROM}_{TO}.csv"'
    rows = csv_rows(r)
    assert rows == expected_rows(client, world.headers())
    # and the rows say what they should (the recomputation above could share a blind spot)
    by_audit = {a: [row for row in rows if row[HEADER.index("audit_id")] == str(i)] for a, i in world.audits.items()}
    assert set(col(rows, "fiche_id")) == {"5001", "5002", "5003", "5004"}  # days out of range: none
    assert not by_audit["a1_old"] and not by_audit["a2_deleted"] and not by_audit["before"] and not by_audit["after"]
    with session_scope() as s:
        n_points = s.scalar(text("SELECT count(*) FROM audit_step_result_control_points WHERE audit_id = :a"),
                            {"a": world.audits["a1"]})
    assert len(by_audit["a1"]) == n_points + 2  # + the legacy step's two points
    overridden = [row for row in by_audit["a1"] if row[HEADER.index("step_position")] == "2"]
    assert overridden and all(row[HEADER.index("step_conforme")] == "NON_CONFORME" and row[HEADER.index("step_score")] == "0"
                              and row[HEADER.index("step_human_override")] == "true"
                              and row[HEADER.index("step_override_reviewer")] == "qa@exemple.fr"
                              and row[HEADER.index("step_override_reviewed_at_utc")].endswith("Z")
                              for row in overridden)
    assert {row[HEADER.index("step_human_override")] for row in by_audit["b1"]} == {"false"}
    point = next(row for row in by_audit["b1"] if row[HEADER.index("step_position")] == "3"
                 and row[HEADER.index("control_point_index")] == "1")
    assert point[HEADER.index("control_point_statut")] == "PRESENT" and point[HEADER.index("control_point_reviewer")] == "chef"
    legacy = [row for row in by_audit["a1"] if row[HEADER.index("step_position")] == "5"]
    assert [(row[HEADER.index("control_point")], row[HEADER.index("control_point_statut")],
             row[HEADER.index("control_point_citations")]) for row in legacy] == [
        ("Point historique, repris", "PARTIEL", "2"), ("Second point", "ABSENT", "0")]
    failed_step = [row for row in by_audit["a2"] if row[HEADER.index("step_position")] == "2"]
    assert len(failed_step) == 1 and failed_step[0][HEADER.index("control_point_index")] == ""
    assert failed_step[0][HEADER.index("step_name")] == "Prix"
    assert len(by_audit["b2"]) == 1 and by_audit["b2"][0][HEADER.index("audit_status")] == "pending"
    assert by_audit["b2"][0][HEADER.index("step_position")] == "" and by_audit["b2"][0][HEADER.index("groupe")] == "Bretagne"
    assert by_audit["a2"][0][HEADER.index("advisor")] == "'" + FICHES[1][6]  # never a formula in Excel
    assert by_audit["a2"][0][HEADER.index("audit_config_name")] == "Contrôle qualité, court"
    # deterministic order: sales day, fiche, audit, step, point
    keys = [(row[0], row[1], int(row[4]), int(row[13] or 0), int(row[23] or 0)) for row in rows]
    assert keys == sorted(keys)


def test_filters_narrow_like_the_list(client, world):
    cases = [({"audit_config_ids": str(world.cfg2)}, {"a2"}), ({"groupes": "Azur Énergie"}, {"a1", "a2"}),
             ({"status": "pending"}, {"b2"}), ({"latest_only": "false"}, {"a1", "a1_old", "a2", "b1", "b2"}),
             ({"status": "completed,failed", "audit_config_ids": f"{world.cfg},{world.cfg2}"}, {"a1", "a2", "b1"})]
    names = {str(i): a for a, i in world.audits.items()}
    for params, audits in cases:
        rows = csv_rows(export(client, world, **params))
        assert {names[a] for a in col(rows, "audit_id")} == audits, params
        list_params = {k: v for k, v in params.items()}
        assert rows == expected_rows(client, world.headers(), **list_params), params
    # a range of one day without audits: the header only
    assert csv_rows(client.get(URL, params={"sales_date_from": "2026-11-01", "sales_date_to": "2026-11-01"},
                               headers=world.headers())) == []


def test_scope_group_and_self_keys_see_only_their_fiches(client, world):
    everything = csv_rows(export(client, world))
    group = csv_rows(export(client, world, "group_a"))
    assert group and set(col(group, "groupe")) == {"Azur Énergie"}
    assert group == [row for row in everything if row[HEADER.index("groupe")] == "Azur Énergie"]
    assert group == expected_rows(client, world.headers("group_a"))
    mine = csv_rows(export(client, world, "self_u2"))
    assert set(col(mine, "fiche_id")) == {"5003", "5004"}
    assert mine == [row for row in everything if row[HEADER.index("fiche_id")] in ("5003", "5004")]
    # a GROUP key asking for another groupe gets nothing of it (filter ∧ scope), not an error
    assert csv_rows(export(client, world, "group_a", groupes="Bretagne")) == []
    # permission and credential
    r = export(client, world, "no_read")
    assert r.status_code == 403 and r.json() == {"success": False, "error": "Missing permission",
                                                 "code": "AUTHORIZATION_ERROR"}
    r = client.get(URL, params={"sales_date_from": FROM, "sales_date_to": TO})
    assert r.status_code == 401 and r.json()["code"] == "AUTHENTICATION_ERROR"


def test_xlsx_has_the_csv_rows(client, world):
    r = export(client, world, format="xlsx")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert r.headers["content-disposition"] == f'attachment; filename="audits_{FROM}_{TO}.xlsx"'
    sheets = read_xlsx(r.content)
    assert list(sheets) == ["audits"]
    header, *cells = sheets["audits"]
    assert header == list(HEADER)
    rows = csv_rows(export(client, world))
    assert len(cells) == len(rows) > 50
    for got, want in zip(cells, rows, strict=True):
        got = got + [None] * (len(HEADER) - len(got))
        for column, value, expected in zip(COLUMNS, got, want, strict=True):
            if expected == "":
                assert value is None, (column.name, value)
            elif column.kind == "text":
                assert value == expected.removeprefix("'") if expected.startswith("'=") else value == expected
            elif column.kind == "bool":
                assert value is (expected == "true"), column.name
            elif column.kind in ("int", "number"):
                assert value == float(expected), column.name
            elif column.kind == "date":
                assert value == dt.date.fromisoformat(expected)
            else:
                assert value == dt.datetime.fromisoformat(expected).replace(tzinfo=None), column.name


@pytest.mark.parametrize("query,message", [
    ({}, "Missing required parameter sales_date_from (YYYY-MM-DD)"),
    ({"sales_date_from": FROM}, "Missing required parameter sales_date_to (YYYY-MM-DD)"),
    ({"sales_date_from": "01/10/2026", "sales_date_to": TO}, "Invalid sales_date_from format, expected YYYY-MM-DD"),
    ({"sales_date_from": FROM, "sales_date_to": "2026-02-30"}, "Invalid sales_date_to: 2026-02-30 is not a calendar date"),
    ({"sales_date_from": TO, "sales_date_to": FROM}, "sales_date_from must not be after sales_date_to"),
    ({"sales_date_from": "2025-01-01", "sales_date_to": "2026-01-02"}, "The range may cover at most 366 days"),
    ({"sales_date_from": FROM, "sales_date_to": TO, "format": "pdf"}, "Invalid format: one of csv, xlsx expected"),
    ({"sales_date_from": FROM, "sales_date_to": TO, "audit_config_ids": "1,x"},
     "Invalid audit_config_ids: comma-separated ids expected"),
    ({"sales_date_from": FROM, "sales_date_to": TO, "status": "done"},
     "Invalid status: comma-separated values of pending, running, completed, failed expected"),
    ({"sales_date_from": FROM, "sales_date_to": TO, "latest_only": "maybe"}, "Invalid latest_only: true or false expected"),
    ({"sales_date_from": [FROM, TO], "sales_date_to": TO}, "Query parameter 'sales_date_from' must be given once"),
])
def test_bad_queries_are_400_in_the_envelope(client, world, query, message):
    r = client.get(URL, params=query, headers=world.headers())
    assert r.status_code == 400, r.text
    assert r.json() == {"success": False, "error": message, "code": "VALIDATION_ERROR"}


def test_a_busy_process_answers_503(client, world, monkeypatch):
    monkeypatch.setattr(export_route, "SLOTS", export_route.ExportSlots(0))
    r = export(client, world)
    assert r.status_code == 503 and r.headers["retry-after"] == "30"
    assert r.json() == {"success": False, "error": "Too many exports in progress, retry later",
                        "code": "SERVICE_UNAVAILABLE"}


def test_head_runs_no_export(client, world, monkeypatch):
    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("HEAD must not read the audits")

    monkeypatch.setattr(export_route, "iter_export_records", boom)
    r = client.head(URL, params={"sales_date_from": FROM, "sales_date_to": TO}, headers=world.headers())
    assert r.status_code == 200 and r.content == b"" and r.headers["content-type"].startswith("text/csv")
    assert export_route.SLOTS.active == 0


# --------------------------------------------------------------------------------------------- #
# Over a real socket: streaming, a client leaving, a failure mid-stream
# --------------------------------------------------------------------------------------------- #


class Gate:
    """Wraps the real record stream (a 5-row cursor fetch size): after ``after`` real records it
    emits ``pad`` copies (enough for a first CSV chunk to leave), waits for ``released``, then
    emits ``tail`` more copies (more chunks than the response buffers) and the rest."""

    def __init__(self, after: int = 12, pad: int = 600, tail: int = 0) -> None:
        self.after, self.pad, self.tail = after, pad, tail
        self.reached, self.released = threading.Event(), threading.Event()
        self.finished = threading.Event()

    def __call__(self, session, params):
        try:
            for n, record in enumerate(iter_export_records(session, params, chunk_rows=5), start=1):
                yield record
                if n == self.after:
                    for _ in range(self.pad):
                        yield record
                    self.reached.set()
                    assert self.released.wait(30), "the test never released the gate"
                    for _ in range(self.tail):
                        yield record
        finally:
            self.finished.set()


def _fetching_cursors() -> list[str]:
    with session_scope() as s:
        return list(s.scalars(text("SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND pid <> pg_backend_pid() AND query LIKE 'FETCH FORWARD%'")))


@pytest.fixture()
def served(world):
    app = create_app(dagster_url=UNREACHABLE_DAGSTER)
    with serve_app(app) as url:
        yield url


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_the_body_streams_from_an_open_server_side_cursor(served, world, monkeypatch):
    gate = Gate()
    monkeypatch.setattr(export_route, "iter_export_records", gate)
    params = {"sales_date_from": FROM, "sales_date_to": TO}
    with httpx.stream("GET", served + URL, params=params, headers=world.headers(), timeout=30) as r:
        assert r.status_code == 200
        assert "content-length" not in r.headers and r.headers.get("transfer-encoding") == "chunked"
        chunks = r.iter_raw()
        first = next(chunks)
        # the first bytes are here while the producer is parked mid-read, its cursor still open
        assert first.startswith(b"\xef\xbb\xbf" + ",".join(HEADER).encode())
        assert gate.reached.wait(10) and not gate.finished.is_set()
        assert any(q.startswith("FETCH FORWARD 5 FROM") for q in _fetching_cursors())
        gate.released.set()
        body = first + b"".join(chunks)
    rows = list(csv.reader(io.StringIO(body.decode("utf-8")[1:])))[1:]
    with session_scope() as s:
        real = sum(1 for _ in iter_export_records(s, ListParams(sales_date_from=FROM, sales_date_to=TO)))
    assert len(rows) == real + gate.pad
    assert _wait(lambda: export_route.SLOTS.active == 0)


def test_a_client_leaving_stops_the_export_and_frees_its_connection(served, world, monkeypatch):
    gate = Gate(tail=20_000)  # ~5 MB after the gate: far more than the chunks the response may buffer
    monkeypatch.setattr(export_route, "iter_export_records", gate)
    with httpx.stream("GET", served + URL, params={"sales_date_from": FROM, "sales_date_to": TO},
                      headers=world.headers(), timeout=30) as r:
        assert r.status_code == 200
        next(r.iter_raw())
        assert export_route.SLOTS.active == 1
    # the client is gone; the producer learns it at its next put and unwinds
    gate.released.set()
    assert _wait(gate.finished.is_set)
    assert _wait(lambda: export_route.SLOTS.active == 0)
    assert _wait(lambda: not _fetching_cursors())


def test_a_failure_mid_stream_aborts_the_download(served, world, monkeypatch):
    def failing(session, params):
        for n, record in enumerate(iter_export_records(session, params), start=1):
            yield record
            if n == 5:
                for _ in range(600):
                    yield record
                raise RuntimeError("database went away")

    monkeypatch.setattr(export_route, "iter_export_records", failing)
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", served + URL, params={"sales_date_from": FROM, "sales_date_to": TO},
                          headers=world.headers(), timeout=30) as r:
            assert r.status_code == 200
            b"".join(r.iter_raw())
    assert _wait(lambda: export_route.SLOTS.active == 0)
