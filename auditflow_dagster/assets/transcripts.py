"""``transcripts[fiche]``: every recording of each fiche transcribed once (spec 02 §5).

Per recording: a Postgres advisory lock (two runs never pay twice for the same audio; a second run
waits for the first and then finds the transcript stored), a re-check of ``has_transcription``
under the lock, a global STT slot, then one provider call — the STT client owns the only retry
loop — and one transaction storing the chunks. A run killed mid-fiche keeps every transcript it
stored; its retry transcribes only the rest. Every ``transcription.*`` event carries the run id.
"""

import time
from typing import Any

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)
from sqlalchemy import select

from auditflow_dagster.assets.automation_gate import AutomationGate
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.runtime import (
    bounded_gather,
    in_tx,
    markdown_table,
    run_async,
)
from auditflow_dagster.core.rate_limit import burst_for
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.locks import advisory_lock, global_slot
from auditflow_dagster.db.models import Recording
from auditflow_dagster.db.rate_limit import acquire as acquire_rate_token
from auditflow_dagster.db.recordings import store_transcription
from auditflow_dagster.partitions import fiches_partitions
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.secrets import resolve_secret
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.settings import get_settings


def _public_url(url: str) -> str:
    """Recording URLs may be signed: events never carry the query string (spec 06 §1.4)."""
    return url.split("?", 1)[0].split("#", 1)[0]


@asset(
    partitions_def=fiches_partitions,
    deps=[fiche_details],
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=50),
    group_name="fiches",
    kinds={"python", "postgres"},
    description="Speech-to-text of every recording of the fiche, stored as the chunks audits cite.",
)
def transcripts(context: AssetExecutionContext, stt: SttResource, db: DatabaseResource) -> MaterializeResult:
    settings = get_settings()
    gate = AutomationGate(context.run.tags)
    keys = gate.transcription_keys(list(context.partition_keys))
    run_id = context.run_id
    priority = context.run.tags.get("auditflow/priority", "normal")

    async def fiche(fiche_id: str) -> dict[str, Any]:
        started = time.monotonic()

        def plan(s) -> tuple[int | None, list[tuple[int, str, str, int]], int]:
            row = fiche_db.get_row(s, fiche_id)
            if row is None:
                return None, [], 0
            recs = fiche_db.recordings_of(s, row.id)
            todo = [(r.id, r.call_id, r.recording_url, r.duration_seconds or 0) for r in recs if not r.has_transcription]
            total, already = len(recs), len(recs) - len(todo)
            emit(s, "transcription.status_check", {
                "fiche_id": fiche_id, "total_recordings": total, "already_transcribed": already,
                "needs_transcription": len(todo), "is_complete": not todo, "status": "checked", "run_id": run_id})
            if total <= settings.transcription_max_recordings_per_fiche:
                emit(s, "transcription.started", {
                    "fiche_id": fiche_id, "total_recordings": total, "priority": priority,
                    "started_at": iso(now_utc()), "status": "started", "run_id": run_id})
            return row.id, todo, total

        cache_id, todo, total = await in_tx(plan)
        if cache_id is None:
            await in_tx(lambda s: emit(s, "transcription.failed", {
                "fiche_id": fiche_id, "error": "Fiche not cached (details fetch failed or fiche not found)",
                "failed_at": iso(now_utc()), "status": "failed", "run_id": run_id,
                "partial_results": {"total": 0, "transcribed": 0, "failed": 0}}))
            return {"fiche_id": fiche_id, "total": 0, "transcribed": 0, "cached": 0, "failed": 0,
                    "audio_seconds": 0, "skipped": "not cached"}
        if total > settings.transcription_max_recordings_per_fiche:
            # the guardrail is explicit and visible (spec 02 §5.2 step 4, PROPOSED failed event)
            await in_tx(lambda s: emit(s, "transcription.failed", {
                "fiche_id": fiche_id, "error": f"too_many_recordings ({total} > "
                f"{settings.transcription_max_recordings_per_fiche}, TRANSCRIPTION_MAX_RECORDINGS_PER_FICHE)",
                "failed_at": iso(now_utc()), "status": "failed", "run_id": run_id,
                "partial_results": {"total": total, "transcribed": total - len(todo), "failed": 0}}))
            context.log.warning("fiche %s: %s recordings, over the per-fiche limit; not transcribed", fiche_id, total)
            return {"fiche_id": fiche_id, "total": total, "transcribed": 0, "cached": 0, "failed": 0,
                    "audio_seconds": 0, "skipped": "too_many_recordings"}
        progress = {"processed": 0, "failed": 0}

        def report_progress(s, counts: dict[str, int]) -> None:
            """Every N processed recordings and after the last one (spec 02 §5.4, failures excluded)."""
            done = counts["processed"]
            if done % settings.transcription_progress_frequency and done != len(todo):
                return
            transcribed = total - len(todo) + done - counts["failed"]
            emit(s, "transcription.progress", {
                "fiche_id": fiche_id, "total_recordings": total, "transcribed": transcribed,
                "pending": max(0, total - transcribed), "failed": counts["failed"],
                "progress_percentage": round(100 * transcribed / total) if total else 0,
                "status": "in_progress", "run_id": run_id})

        async def recording(item: tuple[int, int, str, str, int]) -> str:
            index, rec_id, call_id, url, _ = item
            base = {"fiche_id": fiche_id, "call_id": call_id, "recording_index": index,
                    "total_to_transcribe": len(todo), "run_id": run_id}
            outcome = await transcribe_one(rec_id, call_id, url, base)
            progress["processed"] += 1  # counted on the event loop: no two reports see the same count
            progress["failed"] += outcome == "failed"
            snapshot = dict(progress)
            await in_tx(lambda s: report_progress(s, snapshot))
            return outcome

        async def transcribe_one(rec_id: int, call_id: str, url: str, base: dict[str, Any]) -> str:
            lock = f"transcription:recording:{fiche_id}:{call_id}"
            async with advisory_lock(lock, timeout_seconds=settings.transcription_lock_wait_seconds) as held:
                if not held:  # another run has been at it for too long; do not pay a second time
                    msg = "Recording is being transcribed by another run (lock wait timed out)"
                    await in_tx(lambda s: emit(s, "transcription.recording_failed", {**base, "error": msg, "status": "failed"}))
                    return "failed"
                done = await in_tx(lambda s: s.scalar(select(Recording.has_transcription).where(Recording.id == rec_id)))
                if done:
                    return "cached"  # stored by the run that held the lock before us
                if not url:
                    await in_tx(lambda s: emit(s, "transcription.recording_failed", {
                        **base, "error": "No recording URL available", "status": "failed"}))
                    return "failed"
                await in_tx(lambda s: emit(s, "transcription.recording_started", {
                    **base, "recording_url": _public_url(url), "status": "processing"}))
                try:
                    async with global_slot("stt", settings.stt_concurrency):
                        result = await client.transcribe(url)
                except Exception as exc:  # noqa: BLE001 - the client's message is already sanitized
                    msg = str(exc)
                    context.log.warning("fiche %s call %s: %s", fiche_id, call_id, msg)
                    await in_tx(lambda s: emit(s, "transcription.recording_failed", {**base, "error": msg, "status": "failed"}))
                    return "failed"

                def store(s) -> None:
                    store_transcription(
                        s, rec_id, transcription_id=result.transcription_id, text=result.text, words=result.words,
                        language_code=result.language_code, language_probability=result.language_probability)
                    emit(s, "transcription.recording_completed", {
                        **base, "transcription_id": result.transcription_id, "status": "completed"})

                await in_tx(store)  # the paid result is committed before anything else can fail
                return "transcribed"

        items = [(i, rid, cid, url, secs) for i, (rid, cid, url, secs) in enumerate(todo, start=1)]
        outcomes = await bounded_gather(settings.transcription_per_fiche_concurrency, items, recording)
        failed = outcomes.count("failed")
        transcribed = total - failed  # already done + newly done (spec 02 §5.4, failures excluded)
        await in_tx(lambda s: emit(s, "transcription.completed", {
            "fiche_id": fiche_id, "total_recordings": total, "transcribed": transcribed, "failed": failed,
            "duration_seconds": round(time.monotonic() - started), "completed_at": iso(now_utc()),
            "status": "completed", "run_id": run_id}))
        return {"fiche_id": fiche_id, "total": total, "transcribed": outcomes.count("transcribed"),
                "cached": total - len(todo) + outcomes.count("cached"), "failed": failed,
                "audio_seconds": sum(it[4] for it, o in zip(items, outcomes) if o == "transcribed")}

    client: Any = None

    async def main() -> list[dict[str, Any]]:
        nonlocal client
        per_minute = settings.transcription_rate_limit_per_minute

        async def rate_token() -> None:  # every provider attempt, system-wide (spec 02 §2)
            await acquire_rate_token("elevenlabs_stt", per_minute, burst_for(per_minute))

        async with stt.client(before_attempt=rate_token) as client:  # one connection pool for the run
            return await bounded_gather(settings.fiche_concurrency, keys, fiche)

    results = run_async(main) if keys else []
    gate.after_transcription(results, provider_ready=stt.mode == "sample" or bool(resolve_secret(stt.api_key)))
    totals = {k: sum(r[k] for r in results) for k in ("total", "transcribed", "cached", "failed", "audio_seconds")}
    skipped = [r for r in results if r.get("skipped")]
    return MaterializeResult(
        metadata={
            "fiches": len(keys),
            "recordings": totals["total"],
            "newly_transcribed": totals["transcribed"],
            "already_transcribed": totals["cached"],
            "failed": totals["failed"],
            "skipped_fiches": len(skipped),
            "audio_minutes_transcribed": round(totals["audio_seconds"] / 60, 1),
            "per_fiche": MetadataValue.md(
                markdown_table(
                    ["fiche", "recordings", "new", "cached", "failed", "note"],
                    [[r["fiche_id"], r["total"], r["transcribed"], r["cached"], r["failed"], r.get("skipped", "")]
                     for r in results[:200]],
                )
            ),
        }
    )
