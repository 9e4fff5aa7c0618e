"""The API's only way to reach Dagster: its GraphQL endpoint over HTTP (DESIGN §3.8).

The API never imports the code location; it launches runs, registers fiche partitions and reads
run events through ``AUDITFLOW_DAGSTER_GRAPHQL_URL``, so any number of API replicas can sit in
front of one Dagster deployment.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from auditflow_dagster.settings import get_settings

LOCATION_QUERY = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name locationOrLoadError {
  __typename ... on RepositoryLocation { name repositories { name jobs { name } } } } } } } }
"""

ADD_PARTITION = """
mutation($sel: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $sel, partitionsDefName: $name, partitionKey: $key) {
    __typename ... on AddDynamicPartitionSuccess { partitionKey }
    ... on DuplicateDynamicPartitionError { partitionName }
    ... on PythonError { message } ... on UnauthorizedError { message }
  }
}
"""

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on PresetNotFoundError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message }
  }
}
"""

LOGS_FOR_RUN = """
query($runId: ID!, $after: String, $limit: Int) {
  logsForRun(runId: $runId, afterCursor: $after, limit: $limit) {
    __typename
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on MessageEvent { runId message timestamp level stepKey eventType }
        ... on MaterializationEvent { assetKey { path } partition }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { pipelineName }
      }
    }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on RunConflict { message }
    ... on PresetNotFoundError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

RUN_STATUS = """
query($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } ... on RunNotFoundError { message } } }
"""

RUNS_WITH_TAGS = """
query($filter: RunsFilter) { runsOrError(filter: $filter) { __typename
  ... on Runs { results { runId status } }
  ... on InvalidPipelineRunsFilterError { message } ... on PythonError { message } } }
"""

BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status } ... on BackfillNotFoundError { message } ... on PythonError { message } } }
"""

TERMINAL_EVENT_TYPES = {"RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED"}
TERMINAL_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


class DagsterUnavailable(Exception):
    """GraphQL endpoint unreachable or answering with an error."""


class DagsterClient:
    def __init__(self, url: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = url or get_settings().dagster_graphql_url
        self._http = httpx.AsyncClient(timeout=timeout)
        self._location: tuple[str, str] | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            resp = await self._http.post(self.url, json={"query": query, "variables": variables or {}})
        except httpx.HTTPError as exc:
            raise DagsterUnavailable(f"Dagster GraphQL unreachable ({exc.__class__.__name__})") from None
        if resp.status_code != 200:
            raise DagsterUnavailable(f"Dagster GraphQL answered HTTP {resp.status_code}")
        body = resp.json()
        if body.get("errors"):
            raise DagsterUnavailable("Dagster GraphQL error: " + "; ".join(e.get("message", "") for e in body["errors"])[:500])
        return body["data"]

    async def location(self, job_name: str = "audit_fiche") -> tuple[str, str]:
        """(location name, repository name) of the code location that holds ``job_name``."""
        if self._location:
            return self._location
        data = await self.query(LOCATION_QUERY)
        ws = data["workspaceOrError"]
        for entry in ws.get("locationEntries", []):
            loc = entry.get("locationOrLoadError") or {}
            for repo in loc.get("repositories", []) or []:
                if any(j["name"] == job_name for j in repo["jobs"]):
                    self._location = (loc["name"], repo["name"])
                    return self._location
        raise DagsterUnavailable(f"no code location with job {job_name!r} is loaded")

    async def ping(self) -> bool:
        try:
            await self.query("query { version }")
            return True
        except DagsterUnavailable:
            return False

    async def add_fiche_partition(self, fiche_id: str) -> None:
        loc, repo = await self.location()
        data = await self.query(
            ADD_PARTITION, {"sel": {"repositoryLocationName": loc, "repositoryName": repo}, "name": "fiches", "key": fiche_id}
        )
        kind = data["addDynamicPartition"]["__typename"]
        if kind not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
            raise DagsterUnavailable(f"could not register fiche partition: {kind}")

    async def launch_job(
        self, job_name: str, *, run_config: dict[str, Any], tags: dict[str, str]
    ) -> str:
        loc, repo = await self.location(job_name)
        params = {
            "selector": {"repositoryLocationName": loc, "repositoryName": repo, "jobName": job_name},
            "runConfigData": json.dumps(run_config),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        data = await self.query(LAUNCH_RUN, {"params": params})
        result = data["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            detail = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
            raise DagsterUnavailable(f"run launch refused ({result['__typename']}): {detail}"[:500])
        return result["run"]["runId"]

    async def launch_asset_backfill(
        self, asset_keys: list[str], partition_names: list[str], *, tags: dict[str, str], title: str | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> str:
        """A partition backfill of some assets (visible in the Dagster UI as a backfill); ``run_config``
        (``LaunchBackfillParams.runConfigData``) is given to every run the backfill launches."""
        params: dict[str, Any] = {
            "partitionNames": partition_names,
            "assetSelection": [{"path": [k]} for k in asset_keys],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        if title:
            params["title"] = title
        if run_config is not None:
            params["runConfigData"] = json.dumps(run_config)
        data = await self.query(LAUNCH_BACKFILL, {"params": params})
        result = data["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise DagsterUnavailable(f"backfill launch refused ({result['__typename']}): {result.get('message', '')}"[:500])
        return result["backfillId"]

    async def logs_for_run(self, run_id: str, after: str | None, limit: int = 200) -> dict[str, Any]:
        data = await self.query(LOGS_FOR_RUN, {"runId": run_id, "after": after, "limit": limit})
        return data["logsForRun"]

    async def run_status(self, run_id: str) -> str | None:
        data = await self.query(RUN_STATUS, {"runId": run_id})
        r = data["runOrError"]
        return r.get("status") if r["__typename"] == "Run" else None

    async def runs_with_tags(self, tags: dict[str, str]) -> list[dict[str, str]]:
        """``[{runId, status}]`` of the runs carrying every one of ``tags``."""
        data = await self.query(RUNS_WITH_TAGS, {"filter": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}})
        result = data["runsOrError"]
        if result["__typename"] != "Runs":
            raise DagsterUnavailable(f"runs query refused ({result['__typename']}): {result.get('message', '')}"[:500])
        return result["results"]

    async def backfill_status(self, backfill_id: str) -> str | None:
        """The backfill's status (``REQUESTED``, ``COMPLETED_SUCCESS``, ``COMPLETED_FAILED``, ``FAILED``,
        ``CANCELED`` …), None when there is no such backfill."""
        data = await self.query(BACKFILL_STATUS, {"id": backfill_id})
        result = data["partitionBackfillOrError"]
        if result["__typename"] == "PythonError":
            raise DagsterUnavailable(f"backfill query failed: {result.get('message', '')}"[:500])
        return result.get("status") if result["__typename"] == "PartitionBackfill" else None
