"""CrmClient against a fake CRM gateway over real HTTP (spec 01 §1)."""

from __future__ import annotations

import asyncio
import email.utils
import time
from datetime import date
from typing import Any, Iterator

import pytest

from auditflow_dagster.resources.crm import (
    AUTH_ERROR,
    EXTERNAL_API_ERROR,
    NOT_FOUND,
    CrmClient,
    CrmError,
    CrmNotFound,
    CrmResource,
    SampleCrmClient,
    auth_header_value,
    normalize_base_url,
    parse_retry_after,
)
from tests.fakes.crm import (
    FakeCrmGateway,
    sample_details,
    sample_recording,
    sample_sales_fiche,
)
from tests.fakes.server import Reply, free_port_refusing, serve_app

TOKEN = "crm-secret-token-4242"


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def gateway() -> Iterator[tuple[FakeCrmGateway, str]]:
    fake = FakeCrmGateway()
    with serve_app(fake.app) as url:
        yield fake, url


def _client(url: str, sleep: RecordingSleep, **kw: Any) -> CrmClient:
    return CrmClient(url + "/", kw.pop("token", TOKEN), sleep=sleep, timeout=5.0, **kw)


async def _call(client: CrmClient, coro_fn: Any) -> Any:
    async with client:
        return await coro_fn(client)


def run(client: CrmClient, fn: Any) -> Any:
    return asyncio.run(_call(client, fn))


# --- base URL and auth rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://gw.example.invalid", "https://gw.example.invalid/api"),
        ("https://gw.example.invalid/", "https://gw.example.invalid/api"),
        ("https://gw.example.invalid/api", "https://gw.example.invalid/api"),
        ("https://gw.example.invalid/api///", "https://gw.example.invalid/api"),
        ("https://gw.example.invalid/api/api/", "https://gw.example.invalid/api"),
        ("  https://gw.example.invalid/v2/  ", "https://gw.example.invalid/v2/api"),
        ("http://api", "http://api/api"),  # a host called "api" is not a path segment
        ("http://127.0.0.1:8080/gateway/api", "http://127.0.0.1:8080/gateway/api"),
    ],
)
def test_normalize_base_url(raw: str, expected: str) -> None:
    assert normalize_base_url(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", None, "/api", "gw.example.invalid"])
def test_normalize_base_url_rejects_empty_or_relative(raw: Any) -> None:
    with pytest.raises(ValueError):
        normalize_base_url(raw)


def test_resource_paths_never_double_api() -> None:
    c = CrmClient("https://gw.example.invalid/api/")
    assert c.url_for("/api/fiches/by-id/1") == "https://gw.example.invalid/api/fiches/by-id/1"
    assert c.url_for("fiches/by-id/1") == "https://gw.example.invalid/api/fiches/by-id/1"
    assert c.root_url == "https://gw.example.invalid"


def test_bearer_rule() -> None:
    assert auth_header_value("abc") == "Bearer abc"
    assert auth_header_value("  abc  ") == "Bearer abc"
    assert auth_header_value("bearer xyz") == "bearer xyz"
    assert auth_header_value("BEARER xyz") == "BEARER xyz"
    assert auth_header_value("") is None
    assert auth_header_value("   ") is None
    assert TOKEN not in repr(CrmClient("https://gw.example.invalid", TOKEN))


# --- sales list ------------------------------------------------------------------------------


def test_sales_list_request_shape_and_row_validation(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    good = sample_sales_fiche("900000001", recordings=[sample_recording(), {"call_id": None}])
    good["unknown_key"] = "dropped"
    good["telephone_2"] = None
    numeric_id = sample_sales_fiche("1")
    numeric_id["id"] = 900000002  # numbers are coerced to the string type
    fake.sales = [good, {"nom": "no id"}, {**sample_sales_fiche("3"), "recordings": "not-a-list"}, numeric_id, "junk"]
    fake.sales_total = 4
    sleep = RecordingSleep()

    result = run(_client(url, sleep), lambda c: c.sales_with_calls(date(2025, 1, 2), date(2025, 1, 3), True))

    (req,) = fake.requests
    assert req["path"] == "/api/fiches/sales-with-calls"
    assert req["query"] == {
        "start_date": "2025-01-02",
        "end_date": "2025-01-03",
        "status_id": "53",
        "include_recordings": "true",
        "include_transcriptions": "false",
    }
    assert req["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert [f["id"] for f in result["fiches"]] == ["900000001", "900000002"]
    assert result["total"] == 4
    first = result["fiches"][0]
    assert "unknown_key" not in first
    assert [r["call_id"] for r in first["recordings"]] == ["1234567890123"]  # invalid recording skipped
    assert result["fiches"][1]["recordings"] == []
    assert sleep.delays == []


def test_sales_list_without_token_sends_no_authorization(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    fake.sales = []
    result = run(_client(url, RecordingSleep(), token="   "), lambda c: c.sales_with_calls(date(2025, 1, 2), date(2025, 1, 2), False))
    assert result == {"fiches": [], "total": 0}
    (req,) = fake.requests
    assert "authorization" not in req["headers"]
    assert req["query"]["include_recordings"] == "false"


def test_token_already_prefixed_is_sent_unchanged(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    run(_client(url, RecordingSleep(), token="bearer pre-made"), lambda c: c.sales_with_calls(date(2025, 1, 2), date(2025, 1, 2), False))
    assert fake.requests[0]["headers"]["authorization"] == "bearer pre-made"


# --- retries ---------------------------------------------------------------------------------


def test_retries_404_429_retry_after_and_5xx_then_succeeds(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    path = "/api/fiches/by-id/900000001"
    fake.script(
        path,
        Reply(404, json={"error": "not found"}),
        Reply(429, json={"error": "slow down"}, headers={"Retry-After": "7"}),
        Reply(503, text="upstream down"),
    )
    sleep = RecordingSleep()
    details = run(_client(url, sleep, max_attempts=4), lambda c: c.fiche_details("900000001"))

    assert len(fake.calls(path)) == 4
    assert details["information"]["fiche_id"] == "900000001"
    assert len(sleep.delays) == 3
    assert 0.8 <= sleep.delays[0] <= 1.2  # 1 s × 2^0 ± 20 %
    assert sleep.delays[1] == 7  # Retry-After wins
    assert 3.2 <= sleep.delays[2] <= 4.8  # 1 s × 2^2 ± 20 %


def test_retry_after_http_date_and_cap(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    path = "/api/fiches/sales-with-calls"
    future = email.utils.formatdate(time.time() + 5, usegmt=True)
    fake.script(path, Reply(503, headers={"Retry-After": "120"}), Reply(429, headers={"Retry-After": future}))
    sleep = RecordingSleep()
    run(_client(url, sleep), lambda c: c.sales_with_calls(date(2025, 1, 2), date(2025, 1, 2), False))
    assert len(fake.calls(path)) == 3
    assert sleep.delays[0] == 15  # capped
    assert 3 <= sleep.delays[1] <= 5.5


def test_backoff_is_capped_at_15s() -> None:
    c = CrmClient("https://gw.example.invalid", backoff_base=1.0)
    for attempt in range(1, 10):
        d = c.retry_delay(attempt, None)
        nominal = min(2 ** (attempt - 1), 15)
        assert nominal * 0.8 <= d <= nominal * 1.2


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3
    assert parse_retry_after("0") is None
    assert parse_retry_after("-4") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert parse_retry_after(past) is None


def test_5xx_exhausts_attempts_and_maps_to_external_error(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    path = "/api/fiches/sales-with-calls"
    fake.script(path, *[Reply(502, json={"code": "BAD_GATEWAY", "message": f"leak {TOKEN}"})] * 3)
    sleep = RecordingSleep()
    with pytest.raises(CrmError) as ei:
        run(_client(url, sleep), lambda c: c.sales_with_calls(date(2025, 1, 2), date(2025, 1, 3), True))
    err = ei.value
    assert not isinstance(err, CrmNotFound)
    assert (err.status, err.code, err.path, err.http_status) == (502, EXTERNAL_API_ERROR, "/fiches/sales-with-calls", 502)
    assert err.upstream_code == "BAD_GATEWAY"
    assert len(fake.calls(path)) == 3 and len(sleep.delays) == 2
    msg = str(err)
    assert "status=502" in msg and "/fiches/sales-with-calls" in msg
    for forbidden in (TOKEN, "leak", "start_date", "2025-01-02", "?", "127.0.0.1", "http"):
        assert forbidden not in msg


def test_400_is_not_retried(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    path = "/api/fiches/by-id/900000001"
    fake.script(path, Reply(400, json={"error": "bad"}))
    sleep = RecordingSleep()
    with pytest.raises(CrmError) as ei:
        run(_client(url, sleep), lambda c: c.fiche_details("900000001"))
    assert ei.value.status == 400 and ei.value.code == EXTERNAL_API_ERROR
    assert len(fake.calls(path)) == 1 and sleep.delays == []


def test_401_is_auth_error_without_retry(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    path = "/api/fiches/by-id/900000001"
    fake.script(path, Reply(401, json={"error": "bad token"}))
    with pytest.raises(CrmError) as ei:
        run(_client(url, RecordingSleep()), lambda c: c.fiche_details("900000001"))
    assert ei.value.code == AUTH_ERROR and ei.value.status == 401
    assert TOKEN not in str(ei.value)
    assert len(fake.calls(path)) == 1


def test_persistent_404_is_not_found_after_retries(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    sleep = RecordingSleep()
    with pytest.raises(CrmNotFound) as ei:
        run(_client(url, sleep), lambda c: c.fiche_details("123"))
    err = ei.value
    assert (err.status, err.code, err.http_status, err.path) == (404, NOT_FOUND, 404, "/fiches/by-id/123")
    assert err.upstream_code == "FICHE_NOT_FOUND"
    assert len(fake.calls("/api/fiches/by-id/123")) == 3 and len(sleep.delays) == 2


def test_network_failure_is_retried_then_external_error() -> None:
    url = free_port_refusing()
    sleep = RecordingSleep()
    with pytest.raises(CrmError) as ei:
        run(CrmClient(url + "?sig=abc", TOKEN, sleep=sleep, timeout=2.0), lambda c: c.fiche_details("42"))
    err = ei.value
    assert err.status is None and err.code == EXTERNAL_API_ERROR
    assert len(sleep.delays) == 2
    assert "code=ECONNREFUSED" in str(err)
    for forbidden in (TOKEN, "127.0.0.1", "sig=", "include_recordings"):
        assert forbidden not in str(err)


def test_invalid_json_body_is_external_error(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    fake.script("/api/fiches/sales-with-calls", Reply(200, text="<html>oops</html>"))
    with pytest.raises(CrmError) as ei:
        run(_client(url, RecordingSleep()), lambda c: c.sales_with_calls(date(2025, 1, 2), date(2025, 1, 2), False))
    assert ei.value.code == EXTERNAL_API_ERROR and "oops" not in str(ei.value)


# --- details ---------------------------------------------------------------------------------


def test_details_request_and_normalisation(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    body = sample_details("900000001")
    body["surprise"] = {"x": 1}
    body["mails"] = [{"date_envoi": "02/01/2025", "type_mail": "devis", "utilisateur": "u"}, "junk"]
    body["recordings"] = [sample_recording("111"), {"no": "call id"}]
    del body["alertes"]
    body["prospect"] = "not an object"
    fake.details["900000001"] = body

    with_md = run(_client(url, RecordingSleep()), lambda c: c.fiche_details("900000001", include_mail_devis=True))
    without_md = run(_client(url, RecordingSleep()), lambda c: c.fiche_details("900000001"))

    q1, q2 = (r["query"] for r in fake.calls("/api/fiches/by-id/900000001"))
    assert q1 == {"include_recordings": "true", "include_transcriptions": "false", "include_mail_devis": "true"}
    assert q2["include_mail_devis"] == "false"
    assert "cle" not in q1
    assert "mail_devis" in with_md and with_md["mail_devis"] is None
    assert "mail_devis" not in without_md
    assert "surprise" not in with_md
    assert with_md["alertes"] == []
    assert with_md["prospect"] is None
    assert len(with_md["mails"]) == 1
    assert [r["call_id"] for r in with_md["recordings"]] == ["111"]


def test_details_success_false_mapping(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    path = "/api/fiches/by-id/5"
    fake.script(path, Reply(200, json={"success": False, "message": "Fiche introuvable"}))
    with pytest.raises(CrmNotFound):
        run(_client(url, RecordingSleep()), lambda c: c.fiche_details("5"))
    fake.script(path, Reply(200, json={"success": False, "message": "CRM session expired"}))
    with pytest.raises(CrmError) as ei:
        run(_client(url, RecordingSleep()), lambda c: c.fiche_details("5"))
    assert not isinstance(ei.value, CrmNotFound)
    assert ei.value.code == EXTERNAL_API_ERROR and ei.value.http_status == 502
    assert "session" not in str(ei.value)


# --- users, groups, health -------------------------------------------------------------------


def test_users_and_groups(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    users = run(_client(url, RecordingSleep()), lambda c: c.users())
    groups = run(_client(url, RecordingSleep()), lambda c: c.groups(include_users=True))
    assert users["data"]["utilisateurs"] == [{"id": "7", "nom": "Agent", "prenom": "", "email": "a@example.invalid"}]
    assert groups["data"]["groupes"][0]["user_ids"] == ["7"]
    assert fake.calls("/api/utilisateurs/groupes")[0]["query"] == {"include_users": "true"}
    assert fake.calls("/api/utilisateurs")[0]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_users_are_not_retried(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    fake.script("/api/utilisateurs", Reply(503))
    sleep = RecordingSleep()
    with pytest.raises(CrmError):
        run(_client(url, sleep), lambda c: c.users())
    assert len(fake.calls("/api/utilisateurs")) == 1 and sleep.delays == []


def test_health_uses_root_url(gateway: tuple[FakeCrmGateway, str]) -> None:
    fake, url = gateway
    assert run(_client(url, RecordingSleep()), lambda c: c.health()) is True
    assert fake.requests[-1]["path"] == "/health"
    fake.script("/health", Reply(503))
    assert run(_client(url, RecordingSleep()), lambda c: c.health()) is False
    assert run(CrmClient(free_port_refusing()), lambda c: c.health()) is False


# --- resource --------------------------------------------------------------------------------


def test_resource_http_mode_requires_base_url() -> None:
    with pytest.raises(ValueError, match="FICHE_API_BASE_URL"):
        CrmResource(mode="http").client()
    with pytest.raises(ValueError, match="mode"):
        CrmResource(mode="ftp").client()


def test_resource_from_settings_builds_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from auditflow_dagster.settings import Settings

    monkeypatch.setenv("AUDITFLOW_CRM", "http")
    monkeypatch.setenv("FICHE_API_BASE_URL", "https://gw.example.invalid/")
    monkeypatch.setenv("FICHE_API_AUTH_TOKEN", f'"{TOKEN}"')
    monkeypatch.setenv("AUDITFLOW_CRM_MAX_ATTEMPTS", "5")
    resource = CrmResource.from_settings(Settings())
    assert TOKEN not in repr(resource)
    client = resource.client()
    assert isinstance(client, CrmClient)
    assert client.base_url == "https://gw.example.invalid/api"
    assert client.max_attempts == 5
    assert client._auth == f"Bearer {TOKEN}"


def test_resource_sample_mode() -> None:
    assert isinstance(CrmResource(mode="sample").client(), SampleCrmClient)


def test_sample_client_serves_generator_payloads() -> None:
    pytest.importorskip("auditflow_dagster.sample.generator")
    from auditflow_dagster.sample import generator

    async def go() -> tuple[dict[str, Any], Any]:
        async with SampleCrmClient() as c:
            sales = await c.sales_with_calls(date(2025, 1, 6), date(2025, 1, 7), True)
            details = await c.fiche_details(sales["fiches"][0]["id"]) if sales["fiches"] else None
            assert await c.health() is True
            return sales, details

    sales, details = asyncio.run(go())
    raw = generator.sales_list_payload(date(2025, 1, 6), date(2025, 1, 7), True)
    assert len(sales["fiches"]) == len(raw["fiches"])  # no generated row is rejected by validation
    if details is not None:
        assert details["success"] is True
    with pytest.raises(CrmNotFound):
        asyncio.run(SampleCrmClient().fiche_details("999999999999999"))


def test_http_library_logs_never_carry_url_query_strings(caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs each request URL at INFO; signed recording URLs must not reach any log handler."""
    import logging

    from auditflow_dagster.resources.http_errors import redact_url_queries

    caplog.set_level(logging.DEBUG)
    logging.getLogger("httpx").info('HTTP Request: GET %s "HTTP/1.1 200 OK"', "https://s3.example/a/b.mp3?X-Amz-Signature=abc123&x=1")
    assert "abc123" not in caplog.text and "https://s3.example/a/b.mp3?<redacted>" in caplog.text
    assert redact_url_queries("see http://h:8/p?q=1#frag and https://x/y") == "see http://h:8/p?<redacted>#frag and https://x/y"
