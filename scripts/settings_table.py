"""Render README's configuration table from the settings object, so it never drifts.

    .venv/bin/python scripts/settings_table.py           # rewrite the table in README.md
    .venv/bin/python scripts/settings_table.py --check   # exit 1 when README.md is out of date
    .venv/bin/python scripts/settings_table.py --print   # print the table

One row per field of :class:`auditflow_dagster.settings.Settings`, in declaration order, grouped by
the ``# --- section ---`` comments of ``settings.py``. Columns:

* **variable**: the field's env aliases (the first is the one to set; the others are read too);
* **default**: the field default — always empty for a secret (``SecretStr``), whatever it is;
* **description**: ``Field(description=…)`` when present, else the ``#:`` comment lines right above
  the field in ``settings.py``, else :data:`DESCRIPTIONS` below. ``Literal`` choices are appended
  from the annotation.

The table lives between ``<!-- settings-table:start -->`` and ``<!-- settings-table:end -->`` in
README.md; ``tests/unit/test_readme_settings_table.py`` fails when it differs from this output.
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import AliasChoices, SecretStr  # noqa: E402

from auditflow_dagster import settings as settings_module  # noqa: E402
from auditflow_dagster.settings import Settings  # noqa: E402

README = ROOT / "README.md"
START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"

#: Descriptions of the fields that have neither ``Field(description=…)`` nor a ``#:`` comment.
#: A new setting needs one of the three (the test says which field is missing).
DESCRIPTIONS: dict[str, str] = {
    # where things live
    "home": "state directory: the embedded PostgreSQL server, `dagster_home` (when `DAGSTER_HOME` is unset), "
            "the development `secret.key`",
    "database_url": "application database (SQLAlchemy URL, e.g. `postgresql+psycopg://…`); unset → the embedded "
                    "server under `AUDITFLOW_HOME`",
    "dagster_pg_url": "Dagster instance database; unset → the embedded server. The Dagster storage itself reads "
                      "`AUDITFLOW_DAGSTER_STORAGE_URL` (`postgresql+psycopg2://…`) from `dagster.yaml`",
    "dagster_graphql_url": "where the API (and the CLI) reach the Dagster webserver's GraphQL endpoint",
    "app_env": "`production` makes a missing `AUDITFLOW_SECRET_KEY` an error and refuses loopback webhook "
               "targets (SSRF check)",
    "business_timezone": "the CRM's business time zone (sales days, schedules)",
    # switches
    "crm_mode": "CRM gateway over HTTP, or the in-process synthetic twin",
    "stt_mode": "ElevenLabs speech-to-text, or the synthetic transcripts",
    "llm_mode": "any OpenAI-compatible endpoint, or the deterministic offline keyword auditor",
    # CRM
    "fiche_api_base_url": "CRM gateway base URL (`AUDITFLOW_CRM=http`)",
    "fiche_api_auth_token": "CRM gateway token (secret)",
    "fiche_sales_include_recordings": "ask the sales search for recordings too (only 0/false/no/off disables)",
    "fiche_sales_search_concurrency": "global cap on CRM sales searches, across all runs and processes",
    "fiche_fetch_concurrency": "global cap on CRM fiche-details fetches, across all runs and processes",
    "crm_max_attempts": "attempts per CRM call",
    "crm_timeout_seconds": "timeout of one CRM call",
    "cache_expiration_hours": "a cached fiche (sales-list row or full details) expires this long after it "
                              "was written",
    # STT
    "elevenlabs_api_key": "ElevenLabs key (secret)",
    "elevenlabs_base_url": "ElevenLabs endpoint",
    "elevenlabs_stt_model_id": "ElevenLabs speech-to-text model",
    "transcription_max_attempts": "attempts per provider call (the STT client owns the only retry loop)",
    "transcription_backoff_base_seconds": "first retry delay, doubled per attempt (at least 1)",
    "transcription_backoff_max_seconds": "longest retry delay",
    "transcription_download_timeout_seconds": "timeout of one recording download",
    "transcription_provider_timeout_seconds": "timeout of one provider call",
    "transcription_max_audio_bytes": "largest recording accepted",
    "transcription_max_recordings_per_fiche": "a fiche with more recordings is not transcribed "
                                              "(`transcription.failed`, `too_many_recordings`)",
    "transcription_progress_frequency": "a transcription progress webhook every N recordings",
    "stt_concurrency": "global cap on provider transcriptions, across all runs and processes",
    "transcription_per_fiche_concurrency": "recordings of one fiche transcribed at once",
    # LLM
    "openai_api_key": "LLM key (secret)",
    "openai_base_url": "OpenAI-compatible endpoint; unset → the SDK's default",
    "openai_model_audit": "model of the audit steps",
    "openai_timeout_seconds": "timeout of one LLM call",
    "openai_max_retries": "SDK retries per LLM call",
    "llm_concurrency": "global cap on LLM calls, across all runs and processes",
    "audit_step_per_audit_concurrency": "steps of one audit analysed at once (within the global cap)",
    "audit_evidence_gating": "check every citation against the transcript and downgrade unsupported claims "
                             "(only 0/false/no/off disables)",
    "audit_evidence_min_quote_chars": "shortest quote evidence gating accepts",
    "audit_step_timeline_excerpt": "freeze a timeline excerpt for `verifyProductInfo` steps in the audit "
                                   "snapshot (only 0/false/no/off disables)",
    "audit_step_timeline_max_chunks": "chunks in such an excerpt (at least 10)",
    "audit_watchdog_minutes": "`audit_watchdog` finalizes an audit `running` for longer than this whose run "
                              "(and every re-execution) has ended",
    "audit_tools_max_rounds": "transcript tools mode (`use_rlm`): model rounds (clamped to at least 2)",
    "audit_tools_max_search_results": "transcript tools mode: search results per call",
    "audit_tools_max_chunk_fetch": "transcript tools mode: chunks per fetch (clamped to 1..40)",
    "audit_tools_max_chunk_chars": "transcript tools mode: character budget of one fetch",
    "openai_model_chat": "model of the audit/fiche chat (empty → the default)",
    "openai_temperature_chat": "chat temperature (malformed → the default)",
    "openai_max_tokens_chat": "chat answer token limit (malformed → the default)",
    "chat_max_message_chars": "longest chat message accepted",
    # pipeline shape
    "fiches_per_run": "not read by the code at present: the fiche assets' backfill policies fix 50 "
                      "partitions per run",
    "fiche_concurrency": "fiches of one run processed at once",
    "default_audit_config_name": "not read by the code at present (the daily pipeline audits every automatic "
                                 "config)",
    # fiche cache lifecycle
    "fiche_force_refresh_cooldown_ms": "a forced details refresh within this window of the last fetch uses the "
                                       "cache (0 disables)",
    "fiche_not_found_ttl_ms": "how long a CRM 404 is remembered (at least 60000)",
    "fiche_partition_retention_days": "`partition_lifecycle` retires fiche partitions older than this once their "
                                      "audits are final (0 or less disables)",
    "run_retention_days": "`partition_lifecycle` deletes finished Dagster runs and their event logs older than "
                          "this (0 or less disables)",
    # progressive fetch / webhooks
    "progressive_fetch_max_range_days": "longest `status/by-date-range` request",
    "progressive_fetch_dedup_window_ms": "an identical progressive fetch within this window reuses the running job",
    "progressive_fetch_webhook_frequency": "a progressive fetch progress webhook every N days (at least 1)",
    "api_base_url": "the API's public base URL (the `dataUrl` of progressive fetch webhooks)",
    "webhook_allowed_origins": "comma-separated allowlist of webhook origins; set → any other origin is "
                               "refused",
    "webhook_max_attempts": "delivery attempts before a webhook is dead",
    "webhook_timeout_ms": "timeout of one webhook delivery",
    # database connections
    "db_max_overflow": "connections a process may open above its pool under load",
    # automation
    "automation_scheduler_cron": "UTC tick cron of the `automation_scheduler` sensor",
    "automation_scheduler_window_minutes": "due window of a schedule occurrence (at least 5, and at least one tick "
                                           "period + 1)",
    "automation_stale_threshold_ms": "a `running` schedule older than threshold + grace is stale (at least 60000)",
    "automation_scheduler_stale_grace_ms": "grace added to the stale threshold (at least 60000)",
    "automation_max_recordings_per_fiche": "fiches with more recordings are ignored (0 → the hard max)",
    "automation_hard_max_recordings_per_fiche": "upper bound of the recordings threshold (at least 1)",
    "smtp_host": "automation e-mails: SMTP host (no host or no sender → e-mails skipped with a run log line)",
    "smtp_port": "SMTP port",
    "smtp_secure": "`1`/`true` → implicit TLS (also on port 465)",
    "smtp_user": "SMTP user",
    "smtp_pass": "SMTP password (secret)",
    "smtp_from": "sender address of automation e-mails",
    "smtp_timeout_ms": "SMTP timeout (at least 1000)",
    # realtime / API
    "event_max_payload_bytes": "realtime event payloads are shrunk to fit this size",
    "api_max_body_bytes": "largest request body the API accepts (413 above)",
    "sse_heartbeat_seconds": "`: ping` heartbeat interval of SSE streams",
    "sse_poll_seconds": "poll interval of the run-events relay; the realtime bus also polls every 4× this "
                        "(a missed NOTIFY only delays)",
    "api_auth_tokens": "more legacy machine tokens (comma-separated; both variables are read)",
}

#: Fields that start a section of their own although ``settings.py`` declares them under another header.
SECTION_STARTS: dict[str, str] = {"db_pool_size": "database connections"}


def _source_comments() -> tuple[dict[str, str], dict[str, str]]:
    """``({field: '#:' comment text}, {field: section})`` read from ``settings.py``'s source."""
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string
    lines = source.splitlines()
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    docs: dict[str, str] = {}
    sections: dict[str, str] = {}
    field_lines = {n.lineno: n.target.id for n in cls.body
                   if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    section = ""
    for lineno in range(cls.lineno, (cls.end_lineno or cls.lineno) + 1):
        text = comments.get(lineno, "")
        if text.startswith("# ---") and lines[lineno - 1].strip() == text.strip():
            section = text.strip("# -").strip()
        name = field_lines.get(lineno)
        if name is None:
            continue
        sections[name] = section
        block: list[str] = []
        above = lineno - 1
        while above in comments and lines[above - 1].strip().startswith("#:"):
            block.insert(0, comments[above][2:].strip())
            above -= 1
        if block:
            docs[name] = " ".join(block)
    return docs, sections


def _rst_to_md(text: str) -> str:
    return text.replace("``", "`")


def _env_names(field: typing.Any, name: str) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(a) for a in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [name.upper()]


def _is_secret(field: typing.Any) -> bool:
    ann = field.annotation
    return ann is SecretStr or SecretStr in typing.get_args(ann) or isinstance(field.default, SecretStr)


def _duration(ms: int) -> str:
    for unit, size in (("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms} ms"


def _default(name: str, field: typing.Any) -> str:
    if _is_secret(field):
        return ""  # never a value, even if a default were ever set
    value = field.default
    if value is None or value == "":
        return "*unset*"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, int):
        text = f"`{value}`"
        if name.endswith("_ms") and value > 0:
            text += f" ({_duration(value)})"
        return text
    return f"`{value}`"


def _choices(field: typing.Any) -> str:
    ann = field.annotation
    if typing.get_origin(ann) is typing.Literal:
        return " | ".join(f"`{c}`" for c in typing.get_args(ann))
    return ""


def missing_descriptions() -> list[str]:
    docs, _ = _source_comments()
    return [name for name, field in Settings.model_fields.items()
            if not (field.description or docs.get(name) or DESCRIPTIONS.get(name))]


def render_table() -> str:
    docs, sections = _source_comments()
    rows = ["| variable | default | description |", "|---|---|---|"]
    current = None
    override: tuple[str, str] | None = None  # (source section it interrupts, its own name)
    for name, field in Settings.model_fields.items():
        source_section = sections.get(name, "")
        if name in SECTION_STARTS:
            override = (source_section, SECTION_STARTS[name])
        elif override and source_section != override[0]:
            override = None
        section = override[1] if override else source_section
        if section and section != current:
            rows.append(f"| **{section}** | | |")
        current = section
        names = _env_names(field, name)
        variable = f"`{names[0]}`" + (" (or " + ", ".join(f"`{n}`" for n in names[1:]) + ")" if names[1:] else "")
        description = _rst_to_md(field.description or docs.get(name) or DESCRIPTIONS.get(name, ""))
        if _is_secret(field) and "secret" not in description.lower():
            description += " (secret)"
        choices = _choices(field)
        if choices:
            description = f"{choices}: {description}" if description else choices
        description = description.replace("|", "\\|").replace("\n", " ").strip()
        rows.append(f"| {variable} | {_default(name, field)} | {description} |")
    return "\n".join(rows) + "\n"


def splice(readme: str, table: str) -> str:
    """README text with the block between the markers replaced by ``table``."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no {START} … {END} block")
    return readme[: start + len(START)] + "\n" + table + readme[end:]


def readme_table(readme: str) -> str:
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        return ""
    return readme[start + len(START): end].lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 when README.md's table is out of date")
    group.add_argument("--print", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    table = render_table()
    if args.print:
        sys.stdout.write(table)
        return 0
    text = README.read_text(encoding="utf-8")
    if args.check:
        if readme_table(text) != table:
            print("README.md's configuration table is out of date: run scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(splice(text, table), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
