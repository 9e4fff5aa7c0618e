"""How good is the offline keyword auditor? Per-control-point precision/recall against the
synthetic CRM's ground truth (issue 5).

The offline auditor is the demo's and the tests' LLM. It is a keyword matcher, not a judge, and
this says how far to trust it: for every control point of the bundled checklist, over N days of
synthetic fiches, its statut (PRESENT / PARTIEL / ABSENT) is compared with the generator's ground
truth. The timeline is built exactly as the pipeline builds it (sample STT words → chunking →
timeline), so the numbers describe what the demo shows.

    .venv/bin/python -m bench.offline_auditor [--days 10] [--start 2026-03-02]

Prints one JSON line, then a table: per control point, precision and recall of "mentioned"
(PRESENT or PARTIEL), exact-statut accuracy, and the confusion counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections import Counter, defaultdict

from auditflow_dagster.core.timeline import build_timeline, chunk_words
from auditflow_dagster.sample import generator
from auditflow_dagster.sample.offline_auditor import audit_step


def fiche_timeline(fiche_id: str) -> list[dict]:
    recs = []
    for i, r in enumerate(generator.recordings_for_fiche(fiche_id)):
        words = generator.transcript_for_recording_url(r["recording_url"])["words"]
        recs.append({"call_id": r["call_id"], "start_time": dt.datetime(2026, 1, 1, 9, i), "duration_seconds": r.get("duration_seconds"),
                     "recording_url": r["recording_url"], "recording_date": "", "recording_time": "", "from_number": "",
                     "to_number": "", "has_transcription": True, "chunks": chunk_words(words),
                     "transcription_data": None, "transcription_text": None})
    return build_timeline(recs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--start", default="2026-03-02")
    args = ap.parse_args(argv)
    cfg = generator.load_checklist()
    start = dt.date.fromisoformat(args.start)
    confusion: dict[tuple[int, int], Counter] = defaultdict(Counter)
    fiches = 0
    t0 = time.perf_counter()
    for d in range(args.days):
        for f in generator.fiches_for_day(start + dt.timedelta(days=d)):
            timeline = fiche_timeline(f["id"])
            if not timeline:
                continue  # no recording: not auditable
            fiches += 1
            truth = generator.ground_truth(f["id"])
            for step in cfg.steps:
                out = audit_step(cfg, step, timeline)
                for i, point in enumerate(out["points_controle"], start=1):
                    confusion[(step.position, i)][(truth[(step.position, i)]["statut"], point["statut"])] += 1
    elapsed = time.perf_counter() - t0

    def mentioned(s: str) -> bool:
        return s in ("PRESENT", "PARTIEL")

    rows, totals = [], Counter()
    for (pos, idx), c in sorted(confusion.items()):
        tp = sum(n for (t, p), n in c.items() if mentioned(t) and mentioned(p))
        fp = sum(n for (t, p), n in c.items() if not mentioned(t) and mentioned(p))
        fn = sum(n for (t, p), n in c.items() if mentioned(t) and not mentioned(p))
        exact = sum(n for (t, p), n in c.items() if t == p)
        total = sum(c.values())
        totals.update({"tp": tp, "fp": fp, "fn": fn, "exact": exact, "total": total})
        rows.append({"step": pos, "point": idx, "text": cfg.steps[pos - 1].control_points[idx - 1][:60],
                     "precision": round(tp / (tp + fp), 3) if tp + fp else None,
                     "recall": round(tp / (tp + fn), 3) if tp + fn else None,
                     "exact_statut": round(exact / total, 3), "n": total,
                     "confusion": {f"{t}->{p}": n for (t, p), n in sorted(c.items()) if t != p}})
    summary = {
        "bench": "offline_auditor", "days": args.days, "fiches": fiches, "control_points": len(rows),
        "judgements": totals["total"], "seconds": round(elapsed, 2),
        "micro_precision": round(totals["tp"] / (totals["tp"] + totals["fp"]), 4) if totals["tp"] + totals["fp"] else None,
        "micro_recall": round(totals["tp"] / (totals["tp"] + totals["fn"]), 4) if totals["tp"] + totals["fn"] else None,
        "exact_statut_accuracy": round(totals["exact"] / totals["total"], 4) if totals["total"] else None,
        "min_point_precision": min((r["precision"] for r in rows if r["precision"] is not None), default=None),
        "min_point_recall": min((r["recall"] for r in rows if r["recall"] is not None), default=None),
    }
    print(json.dumps(summary))
    print(f"\noffline keyword auditor vs ground truth — {fiches} auditable fiches, {totals['total']} control-point judgements")
    print(f"{'step.pt':8} {'prec':>6} {'recall':>6} {'exact':>6}  errors (truth->auditor)      control point")
    for r in rows:
        p = "-" if r["precision"] is None else f"{r['precision']:.3f}"
        rc = "-" if r["recall"] is None else f"{r['recall']:.3f}"
        errs = ", ".join(f"{k}:{v}" for k, v in r["confusion"].items()) or "none"
        print(f"{r['step']}.{r['point']:<6} {p:>6} {rc:>6} {r['exact_statut']:>6.3f}  {errs[:28]:28} {r['text']}")


if __name__ == "__main__":
    main()
