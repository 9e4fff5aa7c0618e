"""Transcription runs against a fake ElevenLabs over HTTP (real multipart parsing):

* provider faults (429 + Retry-After, 500, a timeout, a malformed body) end as a retried success or
  a recorded failure with a sanitized message, and afterwards neither the API key nor the signed
  URL query appears in logs, Dagster event logs, the events table or any text column;
* two runs of the same fiche started together send each recording to the provider once;
* a run killed mid-fiche keeps what it paid for, and its retry transcribes only the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import materialize
from sqlalchemy import text

from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator
from auditflow_dagster.settings import get_settings
from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.server import Reply, serve_app

ROOT = Path(__file__).resolve().parents[2]
KEY = "xi-test-FAKE-not-a-key-00000000000000"
SIG = "X-Amz-Signature=deadbeefSECRETsig0123"


def _fiche_with_recordings(n: int) -> str:
    for day in range(2, 28):
        for f in generator.fiches_for_day(dt.date(2026, 2, day)):
            if len(f["recordings"]) >= n:
                return f["id"]
    raise AssertionError(f"no generated fiche with {n} recordings")


def _cache_fiche(instance, fiche_id: str, base: str) -> list[str]:
    """Fiche details cached, recording URLs pointed at the fake provider's signed audio store."""
    instance.add_dynamic_partitions("fiches", [fiche_id])
    assert materialize([fiche_details], partition_key=fiche_id, instance=instance,
                       resources={"crm": CrmResource(mode="sample"), "db": DatabaseResource()}).success
    with session_scope() as s:
        s.execute(text("UPDATE recordings SET recording_url = :b || '/audio/' || call_id || '.mp3?' || :sig"),
                  {"b": base, "sig": SIG})
        return list(s.scalars(text("SELECT call_id FROM recordings ORDER BY start_time, id")))


def _stored(fiche_id: str) -> dict[str, bool]:
    with session_scope() as s:
        rows = s.execute(text("SELECT r.call_id, r.has_transcription FROM recordings r JOIN fiche_cache f "
                              "ON f.id = r.fiche_cache_id WHERE f.fiche_id = :f"), {"f": fiche_id}).all()
    return dict(rows)


def _all_text_in_app_db(exclude: set[tuple[str, str]]) -> str:
    """Every text/json column of every application table, as one string (minus ``exclude``)."""
    with session_scope() as s:
        cols = s.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'jsonb', 'json', 'character varying', 'ARRAY')")).all()
        chunks = []
        for table, column in cols:
            if (table, column) in exclude:
                continue
            chunks.extend(str(v) for v in s.execute(text(f'SELECT "{column}"::text FROM "{table}"')).scalars())
    return "\n".join(chunks)


@pytest.fixture()
def serial_transcription(monkeypatch):
    """One recording at a time, so the provider script applies in order; short provider timeout."""
    monkeypatch.setenv("TRANSCRIPTION_RECORDING_PER_FICHE_CONCURRENCY", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_provider_faults_are_retried_or_recorded_and_leak_nothing(db, dagster_instance, serial_transcription, caplog):
    instance = dagster_instance
    fiche_id = _fiche_with_recordings(2)
    fake = FakeElevenLabs(api_key=KEY, any_audio=True)
    # recording 1: 429 (Retry-After 1) → 500 echoing the key → success on the 3rd attempt
    # recording 2: a timeout → a 200 whose body is not JSON (non-retryable) → failed
    fake.stt_script.extend([
        Reply(429, json={"detail": "rate limited"}, headers={"Retry-After": "1"}),
        Reply(500, json={"detail": f"internal error for key {KEY} url https://x/a.mp3?{SIG}"}),
        None,
        Reply(200, json={"ok": True}, delay=3.0),
        Reply(200, text="<html>gateway</html>"),
    ])
    caplog.set_level(logging.DEBUG)
    with serve_app(fake.app) as base:
        calls = _cache_fiche(instance, fiche_id, base)
        stt = SttResource(mode="elevenlabs", api_key=f'  "{KEY}" ', base_url=base, max_attempts=4,
                          backoff_base_seconds=1, backoff_max_seconds=1, provider_timeout_seconds=1.5)
        result = materialize([transcripts], partition_key=fiche_id, instance=instance,
                             resources={"stt": stt, "db": DatabaseResource()})
    assert result.success  # failures are reported per recording, the asset completes
    stored = _stored(fiche_id)
    assert stored[calls[0]] is True
    assert all(stored[c] is False for c in calls[1:])
    assert len(fake.uploads) >= 5 and all(u["headers"]["xi-api-key"] == KEY for u in fake.uploads)  # key normalized
    with session_scope() as s:
        events = s.execute(text("SELECT name, payload FROM events WHERE payload->>'fiche_id' = :f ORDER BY id"),
                           {"f": fiche_id}).all()
    failed = [p for n, p in events if n == "transcription.recording_failed"]
    assert failed[0]["call_id"] == calls[1]
    assert failed[0]["error"].startswith("ElevenLabs speech-to-text failed") and "status=200" in failed[0]["error"]
    assert all(p.get("run_id") == result.run_id for _, p in events)
    completed = next(p for n, p in events if n == "transcription.completed")
    assert completed["failed"] == len(calls) - 1 and completed["transcribed"] == 1
    [mat] = result.asset_materializations_for_node("transcripts")
    assert mat.metadata["newly_transcribed"].value == 1 and mat.metadata["failed"].value == len(calls) - 1

    # the scan: logs, Dagster event log, events table, every text column (the recording URL column is
    # the one place the signed URL must live: it is what gets downloaded)
    blobs = {
        "python logs": caplog.text,
        "dagster event log": json.dumps([str(e) for e in instance.all_logs(result.run_id)]),
        "events": json.dumps([list(map(str, e)) for e in events]),
        "app tables": _all_text_in_app_db(exclude={("recordings", "recording_url")}),
    }
    for where, blob in blobs.items():
        assert KEY not in blob, where
        assert "deadbeefSECRET" not in blob, where


def _worker(go: Path, fiche_id: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.integration.cap_worker", str(go), "transcripts", fiche_id],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _env(base: str) -> dict[str, str]:
    return {**os.environ, "AUDITFLOW_STT": "elevenlabs", "ELEVENLABS_API_KEY": KEY, "ELEVENLABS_BASE_URL": base,
            "TRANSCRIPTION_RECORDING_PER_FICHE_CONCURRENCY": "1"}


def _downloads_per_call(fake: FakeElevenLabs) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in fake.downloads:
        call = d["path"].rsplit("/", 1)[-1].removesuffix(".mp3")
        out[call] = out.get(call, 0) + 1
    return out


def test_two_runs_together_pay_once_per_recording(db, dagster_instance, tmp_path):
    fiche_id = _fiche_with_recordings(3)
    fake = FakeElevenLabs(api_key=KEY, any_audio=True, stt_delay=0.4)
    with serve_app(fake.app) as base:
        calls = _cache_fiche(dagster_instance, fiche_id, base)
        go = tmp_path / "go"
        procs = [_worker(go, fiche_id, _env(base)) for _ in range(2)]
        time.sleep(1.0)
        go.touch()
        outs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert all(_stored(fiche_id).values())
    assert len(fake.uploads) == len(calls)  # each recording sent to the provider once
    assert _downloads_per_call(fake) == {c: 1 for c in calls}
    # neither run reported the fiche done before its transcripts were really stored: the run that
    # waited on a recording lock found the other run's transcript, it did not just skip it
    with session_scope() as s:
        events = s.execute(text("SELECT id, name, payload->>'run_id' FROM events WHERE payload->>'fiche_id' = :f "
                                "ORDER BY id"), {"f": fiche_id}).all()
    last_store = max(i for i, n, _ in events if n == "transcription.recording_completed")
    done = [(i, r) for i, n, r in events if n == "transcription.completed"]
    assert len(done) == 2 and len({r for _, r in done}) == 2
    assert all(i > last_store for i, _ in done)


def test_killed_run_keeps_what_it_paid_for_and_the_retry_finishes(db, dagster_instance, tmp_path):
    fiche_id = _fiche_with_recordings(3)
    fake = FakeElevenLabs(api_key=KEY, any_audio=True, stt_delay=1.0)
    with serve_app(fake.app) as base:
        calls = _cache_fiche(dagster_instance, fiche_id, base)
        go = tmp_path / "go"
        go.touch()
        first = _worker(go, fiche_id, _env(base))
        deadline = time.monotonic() + 120
        while sum(_stored(fiche_id).values()) < 1:
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read().decode(errors="replace")
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)  # mid-fiche: at least one stored, the others not
        first.wait(timeout=30)
        kept = {c for c, done in _stored(fiche_id).items() if done}
        assert 1 <= len(kept) < len(calls)
        uploads_before = len(fake.uploads)
        retry = _worker(go, fiche_id, _env(base))
        out = retry.communicate(timeout=240)[0].decode(errors="replace")
        assert retry.returncode == 0, out[-3000:]
    assert all(_stored(fiche_id).values())
    downloads = _downloads_per_call(fake)
    assert all(downloads[c] == 1 for c in kept)  # a stored transcript is never paid for again
    # the retry sent only what was not stored (the call in flight at the kill may be paid twice: it
    # was never stored, so nothing says it was paid)
    assert len(fake.uploads) - uploads_before == len(calls) - len(kept)
