"""Rows of the audit export (issue 10 §2): ``GET /api/reports/audits/export`` as CSV or XLSX.

One spreadsheet row per **control point** (audit → step → control point); a step without control
points still gives one row (control-point cells empty), and so does an audit without any stored
step (step cells empty), so a failed or unfinished audit is visible in the file rather than absent.

Why this module is pure: the database layer (:mod:`auditflow_dagster.db.exports`) yields each row
as a tuple of values **as the audit API shows them** (``GET /api/audits/{id}``: effective verdicts
with human reviews applied, scores as their shortest decimal string, instants as ISO-8601 UTC with
ms and ``Z``); this module only decides the columns and how a value becomes a CSV or XLSX cell.
That makes the file format testable in milliseconds and keeps "what a row says" in one place: the
column list :data:`COLUMNS` drives the header, the CSV text and the XLSX cell types.

CSV dialect (chosen for spreadsheets, documented in ``docs/api.md``): UTF-8 **with BOM** (so Excel
opens French accents correctly), comma separator, ``"`` quoting only where needed (``csv.QUOTE_MINIMAL``),
CRLF line ends (RFC 4180), booleans ``true``/``false`` like the JSON API, empty cell for null. A
text cell that Excel would take for a formula (first character ``= + - @``, tab or CR) is prefixed
with ``'`` (CSV injection, OWASP); XLSX cells are typed, so they never need that.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["text", "int", "number", "bool", "date", "datetime"]


@dataclass(frozen=True)
class Column:
    """One column: its header ``name``, the ``kind`` of cell it becomes, and what it means."""

    name: str
    kind: Kind
    description: str


#: The export's columns, in file order. A row (:data:`Record`) holds one value per column, in this order.
COLUMNS: tuple[Column, ...] = (
    Column("sales_date", "date", "sales day of the fiche (fiche_cache.sales_date, YYYY-MM-DD)"),
    Column("fiche_id", "text", "CRM fiche id"),
    Column("groupe", "text", "the fiche's effective groupe (as the audit detail shows it)"),
    Column("advisor", "text", "attribution_user_nom of the fiche"),
    Column("audit_id", "int", "audit database id"),
    Column("audit_config_id", "int", "audit config id"),
    Column("audit_config_name", "text", "audit config name"),
    Column("audit_status", "text", "pending | running | completed | failed"),
    Column("score_percentage", "number", "audit score, 0..100 (reviews applied)"),
    Column("niveau", "text", "PENDING | EXCELLENT | BON | ACCEPTABLE | INSUFFISANT | REJET"),
    Column("is_compliant", "bool", "audit compliant"),
    Column("is_latest", "bool", "latest audit of this fiche and config"),
    Column("completed_at_utc", "datetime", "audit completion time, UTC"),
    Column("step_position", "int", "step position (1-based)"),
    Column("step_name", "text", "step name"),
    Column("step_weight", "int", "step weight (its maximum score)"),
    Column("step_is_critical", "bool", "critical step"),
    Column("step_conforme", "text", "effective step verdict: CONFORME | NON_CONFORME | PARTIEL"),
    Column("step_score", "int", "effective step score"),
    Column("step_niveau_conformite", "text", "effective step niveau"),
    Column("step_human_override", "bool", "a human step review's verdict is in force"),
    Column("step_override_reviewer", "text", "reviewer of the step review in force"),
    Column("step_override_reviewed_at_utc", "datetime", "time of the step review in force, UTC"),
    Column("control_point_index", "int", "control point index within the step (1-based)"),
    Column("control_point", "text", "control point text"),
    Column("control_point_statut", "text", "effective statut: PRESENT | ABSENT | PARTIEL | NON_APPLICABLE"),
    Column("control_point_citations", "int", "evidence citations kept for the control point"),
    Column("control_point_reviewer", "text", "reviewer of the latest human review of the control point"),
    Column("control_point_reviewed_at_utc", "datetime",
           "time of that review, UTC (a later rerun may have replaced its statut: see the audit's trail)"),
)
HEADER: tuple[str, ...] = tuple(c.name for c in COLUMNS)
KINDS: tuple[Kind, ...] = tuple(c.kind for c in COLUMNS)

#: One export row: values in :data:`COLUMNS` order, shaped as the audit API shows them (str, int,
#: bool, None; ``date`` as ``YYYY-MM-DD``, ``datetime`` as ISO-8601 UTC ``…Z``, ``number`` as a
#: decimal string).
Record = tuple[Any, ...]

FORMATS = ("csv", "xlsx")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
#: The longest range accepted, in days, both ends included (a year, leap day included).
MAX_RANGE_DAYS = 366
#: Excel's row limit per worksheet (header included): a longer export continues on a new sheet.
XLSX_MAX_ROWS = 1_048_576
CSV_CHUNK_BYTES = 64 * 1024
BOM = "\ufeff"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def range_error(start: dt.date, end: dt.date) -> str | None:
    """Why ``start..end`` (inclusive) is not an acceptable export range, or None."""
    if start > end:
        return "sales_date_from must not be after sales_date_to"
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        return f"The range may cover at most {MAX_RANGE_DAYS} days"
    return None


def filename(start: dt.date, end: dt.date, fmt: str) -> str:
    """``audits_<from>_<to>.<fmt>``: ASCII only, so it needs no RFC 5987 encoding."""
    return f"audits_{start.isoformat()}_{end.isoformat()}.{fmt}"


# --------------------------------------------------------------------------------------------- #
# CSV
# --------------------------------------------------------------------------------------------- #


def csv_cell(value: Any, kind: Kind) -> str:
    """The CSV text of one value (null → empty; booleans as the JSON API writes them)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if kind == "text" and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def csv_row(record: Record) -> list[str]:
    return [csv_cell(v, k) for v, k in zip(record, KINDS, strict=True)]


def csv_chunks(records: Iterable[Record], chunk_bytes: int = CSV_CHUNK_BYTES) -> Iterator[bytes]:
    """The whole CSV file as UTF-8 byte chunks of about ``chunk_bytes`` (BOM and header first).

    Rows are written one at a time into a small buffer that is flushed whenever it holds
    ``chunk_bytes`` characters, so memory stays bounded whatever the number of rows, and the first
    chunk is ready long before the last row is read.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    buf.write(BOM)
    writer.writerow(HEADER)
    for record in records:
        writer.writerow(csv_row(record))
        if buf.tell() >= chunk_bytes:
            yield buf.getvalue().encode("utf-8")
            buf.seek(0)
            buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode("utf-8")


# --------------------------------------------------------------------------------------------- #
# XLSX (the cell values; the workbook itself is written by the API with xlsxwriter)
# --------------------------------------------------------------------------------------------- #


def xlsx_cell(value: Any, kind: Kind) -> Any:
    """The typed value of one XLSX cell: None (no cell), bool, int, float, date, naive UTC
    datetime or str. A value that does not parse as its kind is kept as text, never dropped."""
    if value is None or isinstance(value, bool):
        return value
    try:
        if kind == "int":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "date":
            return dt.date.fromisoformat(str(value))
        if kind == "datetime":
            parsed = dt.datetime.fromisoformat(str(value))
            return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    except (TypeError, ValueError):
        return str(value)
    return value if isinstance(value, str) else str(value)


def xlsx_row(record: Record) -> list[Any]:
    return [xlsx_cell(v, k) for v, k in zip(record, KINDS, strict=True)]


def sheet_name(n: int) -> str:
    """Name of the ``n``-th (0-based) worksheet: ``audits``, ``audits (2)``, …"""
    return "audits" if n == 0 else f"audits ({n + 1})"
