"""A fake CRM gateway speaking the real protocol (spec 01 §1), with scriptable failures."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.server import Reply


def sample_recording(call_id: str = "1234567890123", url: str | None = "https://rec.example.invalid/a.mp3") -> dict[str, Any]:
    return {
        "call_id": call_id,
        "start_time": "2025-01-02T09:30:00.123456+01:00",
        "duration_seconds": 312,
        "direction": "out",
        "from_number": "33100000000",
        "to_number": "33600000000",
        "answered": True,
        "recording_url": url,
        "transcription": None,
    }


def sample_sales_fiche(fiche_id: str = "900000001", *, recordings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": fiche_id,
        "cle": "cle-synthetic-0001",
        "nom": "TESTNOM",
        "prenom": "Testprenom",
        "telephone": "0100000000",
        "telephone_2": None,
        "email": "test@example.invalid",
        "statut": "Vente",
        "date_insertion": "02/01/2025 09:15",
        "date_modification": None,
        "recordings": recordings if recordings is not None else [],
    }


def sample_details(fiche_id: str = "900000001") -> dict[str, Any]:
    return {
        "success": True,
        "message": "OK",
        "information": {"fiche_id": fiche_id, "cle": "cle-synthetic-0001", "groupe": "Equipe A"},
        "prospect": {"prospect_id": "1", "nom": "TESTNOM", "prenom": "Testprenom"},
        "conjoint": None,
        "enfants": [],
        "mails": [],
        "rendez_vous": [],
        "commentaires": [{"commentaire_id": "1", "date": "02/01/2025", "utilisateur": "x", "texte": "ok"}],
        "reclamations": [],
        "autres_contrats": [],
        "documents": [],
        "alertes": [],
        "elements_souscription": None,
        "tarification": [],
        "recordings": [sample_recording()],
        "raw_sections": {},
    }


class FakeCrmGateway:
    """Routes under ``/api`` plus ``/health`` at the root; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.sales: list[dict[str, Any]] = [sample_sales_fiche()]
        self.sales_total: int | None = None
        self.details: dict[str, dict[str, Any]] = {"900000001": sample_details()}
        self._script: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/health", self._health),
                Route("/api/fiches/sales-with-calls", self._sales),
                Route("/api/fiches/by-id/{fiche_id}", self._by_id),
                Route("/api/utilisateurs", self._users),
                Route("/api/utilisateurs/groupes", self._groups),
                Route("/{rest:path}", self._unknown),
            ]
        )

    def script(self, path: str, *replies: Reply) -> None:
        """Queue replies for ``path`` (e.g. ``/api/fiches/by-id/1``); served before the default."""
        with self._lock:
            self._script[path].extend(replies)

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    async def _record(self, request: Request) -> Reply | None:
        with self._lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": dict(request.query_params),
                    "headers": {k.lower(): v for k, v in request.headers.items()},
                }
            )
            queue = self._script.get(request.url.path)
            return queue.popleft() if queue else None

    async def _health(self, request: Request) -> Any:
        scripted = await self._record(request)
        return await scripted.render() if scripted else JSONResponse({"status": "ok"})

    async def _sales(self, request: Request) -> Any:
        scripted = await self._record(request)
        if scripted:
            return await scripted.render()
        total = self.sales_total if self.sales_total is not None else len(self.sales)
        return JSONResponse({"fiches": self.sales, "total": total})

    async def _by_id(self, request: Request) -> Any:
        scripted = await self._record(request)
        if scripted:
            return await scripted.render()
        details = self.details.get(request.path_params["fiche_id"])
        if details is None:
            return JSONResponse({"success": False, "error": "Fiche not found", "code": "FICHE_NOT_FOUND"}, status_code=404)
        body = dict(details)
        if request.query_params.get("include_mail_devis") == "true":
            body["mail_devis"] = None
        return JSONResponse(body)

    async def _users(self, request: Request) -> Any:
        scripted = await self._record(request)
        if scripted:
            return await scripted.render()
        return JSONResponse(
            {
                "success": True,
                "data": {
                    "utilisateurs": [{"id": 7, "nom": "Agent", "prenom": None, "email": "a@example.invalid"}, "junk"],
                    "total_count": 1,
                },
            }
        )

    async def _groups(self, request: Request) -> Any:
        scripted = await self._record(request)
        if scripted:
            return await scripted.render()
        groupe: dict[str, Any] = {"id": "3", "nom": "Equipe A", "membres_count": 1}
        if request.query_params.get("include_users") == "true":
            groupe["user_ids"] = ["7"]
        return JSONResponse({"success": True, "data": {"groupes": [groupe]}})

    async def _unknown(self, request: Request) -> Any:
        await self._record(request)
        return JSONResponse({"error": "no such route"}, status_code=400)
