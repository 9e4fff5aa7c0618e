"""Fake CRM gateway (auditflow_dagster.sample.crm_app) over Starlette's TestClient."""

from __future__ import annotations

import time
from datetime import date

import httpx
import pytest
from starlette.testclient import TestClient

from auditflow_dagster.sample import crm_app
from auditflow_dagster.sample import generator as g

DAY = "2025-01-02"
SALES = f"/api/fiches/sales-with-calls?start_date={DAY}&end_date={DAY}&status_id=53&include_recordings=true&include_transcriptions=false"


def client(**kw) -> TestClient:
    return TestClient(crm_app.create_app(**kw))


def _fid_with_recordings() -> str:
    return next(g.fiche_id_for(date(2025, 1, 2), i) for i in range(40) if g.recordings_for_fiche(g.fiche_id_for(date(2025, 1, 2), i)))


def test_health_and_sales_list():
    c = client()
    assert c.get("/health").status_code == 200
    r = c.get(SALES)
    assert r.status_code == 200
    body = r.json()
    assert body == g.sales_list_payload(date(2025, 1, 2), date(2025, 1, 2), True, base_url="http://testserver")
    assert body["total"] == 40
    urls = [rec["recording_url"] for f in body["fiches"] for rec in f["recordings"]]
    assert urls and all(u.startswith("http://testserver/recordings/") for u in urls)
    r = c.get(SALES.replace("include_recordings=true", "include_recordings=false"))
    assert all(f["recordings"] == [] for f in r.json()["fiches"])


def test_sales_list_window_knobs_and_errors():
    c = client(fiches_per_day=3, base_url_for_recordings="https://crm.example.test/")
    body = c.get(SALES.replace(f"end_date={DAY}", "end_date=2025-01-04")).json()
    assert body["total"] == 9
    urls = [rec["recording_url"] for f in body["fiches"] for rec in f["recordings"]]
    assert urls and all(u.startswith("https://crm.example.test/recordings/") for u in urls)
    assert c.get(SALES.replace("status_id=53", "status_id=12")).json() == {"fiches": [], "total": 0}
    assert c.get("/api/fiches/sales-with-calls?start_date=02/01/2025&end_date=2025-01-02").status_code == 400
    assert c.get("/api/fiches/sales-with-calls").status_code == 400
    assert c.get("/api/fiches/sales-with-calls?start_date=2020-01-01&end_date=2025-01-01").status_code == 400


def test_fiche_details():
    c = client()
    fid = _fid_with_recordings()
    r = c.get(f"/api/fiches/by-id/{fid}?include_recordings=true&include_transcriptions=false")
    assert r.status_code == 200
    body = r.json()
    assert body == g.fiche_details_payload(fid, base_url="http://testserver")
    assert body["success"] is True and body["information"]["fiche_id"] == fid
    assert "mail_devis" not in body and body["recordings"]
    assert "mail_devis" in c.get(f"/api/fiches/by-id/{fid}?include_mail_devis=true").json()
    assert c.get(f"/api/fiches/by-id/{fid}?include_recordings=false").json()["recordings"] == []
    assert c.get(f"/api/fiches/by-id/{fid}").json()["recordings"]  # default true


def test_unknown_fiches_are_404():
    c = client(fiches_per_day=5)
    for fid in ("123", "abc", "920251340001", g.fiche_id_for(date(2025, 1, 2), 7)):
        r = c.get(f"/api/fiches/by-id/{fid}")
        assert r.status_code == 404, fid
        assert r.json()["success"] is False
    assert c.get(f"/api/fiches/by-id/{g.fiche_id_for(date(2025, 1, 2), 4)}").status_code == 200


def test_users_and_groups():
    c = client()
    users = c.get("/api/utilisateurs").json()
    assert users == g.users_payload()
    groups = c.get("/api/utilisateurs/groupes?include_users=false").json()["data"]["groupes"]
    assert all("user_ids" not in x for x in groups)
    groups = c.get("/api/utilisateurs/groupes?include_users=true").json()["data"]["groupes"]
    assert all(x["user_ids"] for x in groups)


def test_recording_download_round_trip():
    c = client()
    fid = _fid_with_recordings()
    url = c.get(f"/api/fiches/by-id/{fid}").json()["recordings"][0]["recording_url"]
    path = url.replace("http://testserver", "")
    r = c.get(path)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
    assert g.transcript_for_audio_bytes(r.content) == g.transcript_for_recording_url(url)
    assert c.get(path.split("?")[0]).status_code == 200  # unsigned fetch tolerated
    assert c.get(path.split("?")[0] + "?sig=forged").status_code == 403
    assert c.get("/recordings/nothing-here.mp3").status_code == 404


def test_bearer_auth():
    c = client(auth_token="s3cret")
    assert c.get(SALES).status_code == 401
    assert c.get(SALES, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get(SALES, headers={"Authorization": "s3cret"}).status_code == 401
    assert c.get(SALES, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get(SALES, headers={"Authorization": "bearer s3cret"}).status_code == 200
    assert c.get("/api/utilisateurs").status_code == 401
    assert c.get("/api/fiches/by-id/920250102001").status_code == 401
    assert c.get("/health").status_code == 200  # health and signed recordings need no token
    fid = _fid_with_recordings()
    url = c.get(f"/api/fiches/by-id/{fid}", headers={"Authorization": "Bearer s3cret"}).json()["recordings"][0]["recording_url"]
    assert c.get(url.replace("http://testserver", "")).status_code == 200
    assert client().get(SALES, headers={"Authorization": "Bearer anything"}).status_code == 200  # no token configured


def test_error_and_429_knobs():
    c = client(error_rate=1.0)
    for _ in range(10):
        r = c.get(SALES)
        assert r.status_code in (500, 502, 503)
    assert c.get("/health").status_code == 200
    fid = _fid_with_recordings()
    rec_path = g.recordings_for_fiche(fid, "http://testserver")[0]["recording_url"].replace("http://testserver", "")
    assert c.get(rec_path).status_code == 200  # recordings are not faulted by default
    assert client(error_rate=1.0, faults_on_recordings=True).get(rec_path).status_code in (500, 502, 503)

    c = client(rate_429=1.0)
    r = c.get(SALES)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"


def _statuses(seed: int, n: int = 40) -> list[int]:
    c = client(error_rate=0.3, rate_429=0.2, seed=seed, fiches_per_day=2)
    return [c.get("/api/utilisateurs").status_code for _ in range(n)]


def test_fault_sequence_is_seeded():
    a, b, other = _statuses(7), _statuses(7), _statuses(8)
    assert a == b
    assert a != other
    assert {200, 429} <= set(a) and set(a) & {500, 502, 503}
    assert 0.25 <= a.count(200) / len(a) <= 0.75


def test_latency_knob():
    c = client(latency_ms=60)
    t0 = time.perf_counter()
    assert c.get("/api/utilisateurs").status_code == 200
    assert time.perf_counter() - t0 >= 0.055


@pytest.mark.anyio
async def test_works_over_httpx_asgi_transport():
    app = crm_app.create_app(auth_token="tok")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crm.test") as http:
        r = await http.get("/api/fiches/by-id/920250102003", headers={"Authorization": "Bearer tok"})
        assert r.status_code == 200
        for rec in r.json()["recordings"]:
            assert rec["recording_url"].startswith("http://crm.test/recordings/")


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_main_parses_args_and_env(monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setenv("AUDITFLOW_SAMPLE_CRM_AUTH_TOKEN", "envtok")
    monkeypatch.setenv("AUDITFLOW_SAMPLE_CRM_FICHES_PER_DAY", "4")
    crm_app.main(["--host", "127.0.0.1", "--port", "8101", "--latency-ms", "0", "--error-rate", "0"])
    (app, kw), = calls
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8101
    assert app.state.settings["fiches_per_day"] == 4 and app.state.settings["auth"] is True
    c = TestClient(app)
    assert c.get(SALES).status_code == 401
    assert c.get(SALES, headers={"Authorization": "Bearer envtok"}).json()["total"] == 4
