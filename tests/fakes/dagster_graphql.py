"""A permissive fake of Dagster's GraphQL endpoint: answers every operation :mod:`api.dagster_client`
sends (version, workspace, dynamic partitions, run and backfill launches, run status, run logs), so
the API's launch paths answer 200 instead of 503 in tests that are not about Dagster.

Launched runs are known at once as ``SUCCESS`` with a two-event log (``RUN_START``,
``RUN_SUCCESS``); any other run id is ``RunNotFoundError``.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

JOBS = ("audit_fiche", "fetch_fiche", "transcribe_fiche", "sales_day", "automation_run_job", "rerun_audit_step")


class FakeDagsterGraphQL:
    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.backfills: list[dict[str, Any]] = []
        self.partitions: set[str] = set()
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/graphql", self.graphql, methods=["POST"])])

    async def graphql(self, request: Request) -> JSONResponse:
        body = await request.json()
        query, variables = body.get("query") or "", body.get("variables") or {}
        return JSONResponse({"data": self.answer(query, variables)})

    def answer(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        if "workspaceOrError" in query:
            return {"workspaceOrError": {"__typename": "Workspace", "locationEntries": [
                {"name": "auditflow", "locationOrLoadError": {
                    "__typename": "RepositoryLocation", "name": "auditflow",
                    "repositories": [{"name": "__repository__", "jobs": [{"name": j} for j in JOBS]}]}}]}}
        if "addDynamicPartition" in query:
            with self._lock:
                self.partitions.add(variables["key"])
            return {"addDynamicPartition": {"__typename": "AddDynamicPartitionSuccess",
                                            "partitionKey": variables["key"]}}
        if "launchRun" in query:
            run_id = str(uuid.uuid4())
            with self._lock:
                self.runs[run_id] = {"params": variables["params"], "at": time.time()}
            return {"launchRun": {"__typename": "LaunchRunSuccess", "run": {"runId": run_id}}}
        if "launchPartitionBackfill" in query:
            backfill_id = uuid.uuid4().hex[:8]
            with self._lock:
                self.backfills.append({"id": backfill_id, "params": variables["params"]})
            return {"launchPartitionBackfill": {"__typename": "LaunchBackfillSuccess", "backfillId": backfill_id}}
        if "runOrError" in query:
            if variables.get("runId") in self.runs:
                return {"runOrError": {"__typename": "Run", "status": "SUCCESS"}}
            return {"runOrError": {"__typename": "RunNotFoundError", "message": "Run not found"}}
        if "logsForRun" in query:
            run_id = variables.get("runId")
            if run_id not in self.runs:
                return {"logsForRun": {"__typename": "RunNotFoundError", "message": "Run not found"}}
            ts = str(int(self.runs[run_id]["at"] * 1000))
            events = [{"__typename": "RunStartEvent", "runId": run_id, "message": "Started", "timestamp": ts,
                       "level": "DEBUG", "stepKey": None, "eventType": "RUN_START"},
                      {"__typename": "RunSuccessEvent", "runId": run_id, "message": "Finished", "timestamp": ts,
                       "level": "DEBUG", "stepKey": None, "eventType": "RUN_SUCCESS"}]
            after = int(variables.get("after") or 0)
            return {"logsForRun": {"__typename": "EventConnection", "cursor": str(len(events)), "hasMore": False,
                                   "events": events[after:]}}
        return {"version": "1.13.27"}
