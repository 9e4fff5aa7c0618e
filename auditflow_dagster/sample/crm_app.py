"""A fake CRM gateway (spec 01 §1) serving :mod:`auditflow_dagster.sample.generator` over HTTP.

Routes (``/api`` prefix as the real gateway; booleans are the strings ``true``/``false``):

* ``GET /api/fiches/sales-with-calls?start_date&end_date&status_id=53&include_recordings&include_transcriptions``
* ``GET /api/fiches/by-id/{fiche_id}?include_recordings&include_transcriptions&include_mail_devis`` (404 unknown)
* ``GET /api/utilisateurs`` · ``GET /api/utilisateurs/groupes?include_users``
* ``GET /health`` (root, never faulted, no auth)
* ``GET /recordings/{file name}?sig=…`` — fake MP3 bytes (no auth, like a signed storage URL)

Knobs: ``auth_token`` (Bearer, 401 otherwise), ``latency_ms``, ``error_rate`` (random 500/502/503)
and ``rate_429`` (429 with ``Retry-After: 1``) drawn from one seeded :class:`random.Random` per app,
applied to ``/api/*`` (and to ``/recordings/*`` only with ``faults_on_recordings``).

Run: ``python -m auditflow_dagster.sample.crm_app --host 127.0.0.1 --port 8101`` (env fallbacks
``AUDITFLOW_SAMPLE_CRM_{HOST,PORT,FICHES_PER_DAY,LATENCY_MS,ERROR_RATE,RATE_429,AUTH_TOKEN,SEED,BASE_URL}``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import threading
from datetime import date
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auditflow_dagster.sample import generator

ENV_PREFIX = "AUDITFLOW_SAMPLE_CRM_"


def _flag(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("true", "1", "yes")


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message, "error": message}, status_code=status, headers=headers or None)


def create_app(
    *,
    base_url_for_recordings: str | None = None,
    fiches_per_day: int = generator.DEFAULT_FICHES_PER_DAY,
    latency_ms: float = 0,
    error_rate: float = 0.0,
    rate_429: float = 0.0,
    auth_token: str | None = None,
    seed: int = 0,
    faults_on_recordings: bool = False,
) -> Starlette:
    """Build the fake gateway. Data depends only on dates/ids; ``seed`` drives the fault knobs."""
    fiches_per_day = max(0, min(int(fiches_per_day), generator.MAX_FICHES_PER_DAY + 1))
    token = (auth_token or "").strip() or None
    rng = random.Random(seed)
    rng_lock = threading.Lock()
    stats: dict[str, Any] = {"requests": 0, "faults_5xx": 0, "faults_429": 0, "unauthorized": 0,
                             "in_flight": {}, "max_in_flight": {}}

    def base_url(request: Request) -> str:
        if base_url_for_recordings:
            return base_url_for_recordings.rstrip("/")
        return str(request.base_url).rstrip("/")

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and value.strip() == token

    async def faults(request: Request) -> Response | None:
        """Latency, then (maybe) a random 429 or 5xx."""
        stats["requests"] += 1
        if latency_ms and latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000.0)
        with rng_lock:
            x = rng.random()
            pick = rng.choice((500, 502, 503))
        if x < rate_429:
            stats["faults_429"] += 1
            return _error(429, "Too Many Requests", **{"Retry-After": "1"})
        if x < rate_429 + error_rate:
            stats["faults_5xx"] += 1
            return _error(pick, "Upstream CRM error")
        return None

    def api(handler: Callable[[Request], Awaitable[Response]], kind: str) -> Callable[[Request], Awaitable[Response]]:
        """Auth, faults, and concurrency accounting per kind of call (tests check the global caps)."""

        async def wrapped(request: Request) -> Response:
            if not authorized(request):
                stats["unauthorized"] += 1
                return _error(401, "Unauthorized", **{"WWW-Authenticate": "Bearer"})
            now = stats["in_flight"][kind] = stats["in_flight"].get(kind, 0) + 1
            stats["max_in_flight"][kind] = max(stats["max_in_flight"].get(kind, 0), now)
            try:
                fault = await faults(request)
                if fault is not None:
                    return fault
                return await handler(request)
            finally:
                stats["in_flight"][kind] -= 1

        return wrapped

    async def stats_view(request: Request) -> Response:
        if request.method == "DELETE":
            stats.update({"requests": 0, "faults_5xx": 0, "faults_429": 0, "unauthorized": 0,
                          "in_flight": {}, "max_in_flight": {}})
        return JSONResponse(stats)

    async def sales_with_calls(request: Request) -> Response:
        q = request.query_params
        try:
            start = date.fromisoformat(q.get("start_date", ""))
            end = date.fromisoformat(q.get("end_date", ""))
        except ValueError:
            return _error(400, "start_date and end_date (YYYY-MM-DD) are required")
        status_id = (q.get("status_id") or "53").strip()
        if status_id != "53":  # only sales (status 53) are generated
            return JSONResponse({"fiches": [], "total": 0})
        try:
            body = generator.sales_list_payload(
                start,
                end,
                _flag(request, "include_recordings", False),
                base_url=base_url(request),
                fiches_per_day=fiches_per_day,
            )
        except ValueError as exc:
            return _error(400, str(exc))
        return JSONResponse(body)

    async def by_id(request: Request) -> Response:
        fiche_id = request.path_params["fiche_id"]
        body = generator.fiche_details_payload(
            fiche_id,
            _flag(request, "include_mail_devis", False),
            include_recordings=_flag(request, "include_recordings", True),
            base_url=base_url(request),
            fiches_per_day=fiches_per_day,
        )
        if body is None:
            return _error(404, f"Fiche {fiche_id} not found")
        return JSONResponse(body)

    async def users(request: Request) -> Response:
        return JSONResponse(generator.users_payload())

    async def groups(request: Request) -> Response:
        return JSONResponse(generator.groups_payload(_flag(request, "include_users", False)))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": "auditflow-sample-crm"})

    async def recording(request: Request) -> Response:
        filename = request.path_params["filename"]
        if faults_on_recordings:
            fault = await faults(request)
            if fault is not None:
                return fault
        sig = request.query_params.get("sig")
        if sig is not None and not generator.verify_signature(filename, sig):
            return _error(403, "Invalid signature")
        try:
            data = generator.audio_bytes_for_recording_url(filename)
        except KeyError:
            return _error(404, "Recording not found")
        return Response(data, media_type="audio/mpeg", headers={"Content-Disposition": f'inline; filename="{filename}"'})

    routes = [
        Route("/api/fiches/sales-with-calls", api(sales_with_calls, "sales_search"), methods=["GET"]),
        Route("/api/fiches/by-id/{fiche_id}", api(by_id, "details"), methods=["GET"]),
        Route("/api/utilisateurs", api(users, "users"), methods=["GET"]),
        Route("/api/utilisateurs/groupes", api(groups, "groups"), methods=["GET"]),
        Route("/__stats", stats_view, methods=["GET", "DELETE"]),
        Route("/health", health, methods=["GET"]),
        Route("/api/health", health, methods=["GET"]),
        Route("/recordings/{filename}", recording, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.stats = stats
    app.state.settings = {
        "fiches_per_day": fiches_per_day,
        "latency_ms": latency_ms,
        "error_rate": error_rate,
        "rate_429": rate_429,
        "auth": token is not None,
        "seed": seed,
    }
    return app


def _env(name: str, default: Any) -> Any:
    return os.environ.get(ENV_PREFIX + name, default)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="AuditFlow sample CRM gateway")
    parser.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(_env("PORT", 8101)))
    parser.add_argument("--fiches-per-day", type=int, default=int(_env("FICHES_PER_DAY", generator.DEFAULT_FICHES_PER_DAY)))
    parser.add_argument("--latency-ms", type=float, default=float(_env("LATENCY_MS", 0)))
    parser.add_argument("--error-rate", type=float, default=float(_env("ERROR_RATE", 0.0)))
    parser.add_argument("--rate-429", type=float, default=float(_env("RATE_429", 0.0)))
    parser.add_argument("--auth-token", default=_env("AUTH_TOKEN", None))
    parser.add_argument("--seed", type=int, default=int(_env("SEED", 0)))
    parser.add_argument("--base-url", default=_env("BASE_URL", None), help="base URL put in recording links")
    parser.add_argument("--faults-on-recordings", action="store_true")
    args = parser.parse_args(argv)

    import uvicorn

    app = create_app(
        base_url_for_recordings=args.base_url or None,
        fiches_per_day=args.fiches_per_day,
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        rate_429=args.rate_429,
        auth_token=args.auth_token or None,
        seed=args.seed,
        faults_on_recordings=args.faults_on_recordings,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
