"""The audit export's file format (issue 10 §2): columns, CSV cells and chunks, XLSX cell types and
the workbook writer (read back with the standard library only: zipfile + ElementTree)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from api.routes.exports import write_xlsx
from auditflow_dagster.core import export as core

NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_ESCAPED = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _col_index(ref: str) -> int:
    letters = re.match(r"[A-Z]+", ref).group(0)
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def read_xlsx(data: bytes) -> dict[str, list[list[object]]]:
    """``{sheet name: rows}`` of a workbook, each row a list of cells (None where no cell):
    inline/shared strings → str, ``t="b"`` → bool, numbers → float, styled date cells → ``date`` /
    ``datetime`` (from the 1900 serial). Enough for what xlsxwriter writes, nothing more."""
    z = zipfile.ZipFile(io.BytesIO(data))
    wb = ET.fromstring(z.read("xl/workbook.xml"))
    rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
    targets = {r.get("Id"): r.get("Target") for r in rels}
    styles = ET.fromstring(z.read("xl/styles.xml"))
    numfmts = {f.get("numFmtId"): f.get("formatCode") for f in styles.iterfind(".//m:numFmts/m:numFmt", NS)}
    xfs = [numfmts.get(x.get("numFmtId"), "") for x in styles.iterfind("m:cellXfs/m:xf", NS)]
    shared: list[str] = []
    if "xl/sharedStrings.xml" in z.namelist():
        shared = ["".join(t.text or "" for t in si.iterfind(".//m:t", NS))
                  for si in ET.fromstring(z.read("xl/sharedStrings.xml")).iterfind("m:si", NS)]
    out: dict[str, list[list[object]]] = {}
    rid = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
    for sheet in wb.iterfind("m:sheets/m:sheet", NS):
        xml = ET.fromstring(z.read("xl/" + targets[sheet.get(rid)]))
        rows: list[list[object]] = []
        for row in xml.iterfind("m:sheetData/m:row", NS):
            cells: dict[int, object] = {}
            for c in row.iterfind("m:c", NS):
                t, v = c.get("t"), c.find("m:v", NS)
                if t == "inlineStr":
                    value: object = "".join(x.text or "" for x in c.iterfind(".//m:t", NS))
                    value = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), value)
                elif t == "s":
                    value = shared[int(v.text)]
                elif t == "b":
                    value = v.text == "1"
                else:
                    value = float(v.text)
                    fmt = xfs[int(c.get("s") or 0)]
                    if "yy" in fmt:
                        instant = dt.datetime(1899, 12, 30) + dt.timedelta(milliseconds=round(value * 86_400_000))
                        value = instant if "hh" in fmt else instant.date()
                cells[_col_index(c.get("r"))] = value
            rows.append([cells.get(i) for i in range(max(cells) + 1)] if cells else [])
        out[sheet.get("name")] = rows
    return out


def record(**overrides: object) -> core.Record:
    base = {
        "sales_date": "2026-10-01", "fiche_id": "5001", "groupe": "Azur Énergie", "advisor": "Zoé Lefèvre",
        "audit_id": 7, "audit_config_id": 2, "audit_config_name": "Checklist, vente", "audit_status": "completed",
        "score_percentage": "87.5", "niveau": "BON", "is_compliant": True, "is_latest": True,
        "completed_at_utc": "2026-10-01T10:11:12.345Z", "step_position": 3, "step_name": 'Prix "TTC"',
        "step_weight": 5, "step_is_critical": False, "step_conforme": "CONFORME", "step_score": 5,
        "step_niveau_conformite": "BON", "step_human_override": False, "step_override_reviewer": None,
        "step_override_reviewed_at_utc": None, "control_point_index": 1, "control_point": "Prix annoncé\nclairement",
        "control_point_statut": "PRESENT", "control_point_citations": 2, "control_point_reviewer": None,
        "control_point_reviewed_at_utc": None,
    }
    base.update(overrides)
    assert set(base) == set(core.HEADER)
    return tuple(base[name] for name in core.HEADER)


def test_columns_are_one_unique_list():
    assert len(set(core.HEADER)) == len(core.HEADER) == len(core.KINDS)
    assert set(core.KINDS) <= {"text", "int", "number", "bool", "date", "datetime"}
    assert core.HEADER[:3] == ("sales_date", "fiche_id", "groupe")
    assert all(c.description for c in core.COLUMNS)


def test_csv_cells():
    assert core.csv_cell(None, "text") == ""
    assert core.csv_cell(True, "bool") == "true" and core.csv_cell(False, "bool") == "false"
    assert core.csv_cell(0, "int") == "0" and core.csv_cell("87.5", "number") == "87.5"
    assert core.csv_cell("Élodie", "text") == "Élodie"
    for dangerous in ("=1+1", "+33 6", "-x", "@SUM(A1)", "\tx", "\rx"):
        assert core.csv_cell(dangerous, "text") == "'" + dangerous  # never a formula in Excel
    assert core.csv_cell(-3, "int") == "-3"  # numbers are not text: left alone


def test_csv_file_has_bom_header_and_quoted_rows():
    rows = [record(), record(control_point_index=2, advisor="=HYPERLINK(\"x\")", control_point_statut=None)]
    data = b"".join(core.csv_chunks(rows))
    assert data.startswith(b"\xef\xbb\xbf" + b"sales_date,fiche_id,groupe,")
    text = data.decode("utf-8")
    assert "\r\n" in text
    parsed = list(csv.reader(io.StringIO(text[1:])))
    assert parsed[0] == list(core.HEADER)
    assert parsed[1][core.HEADER.index("audit_config_name")] == "Checklist, vente"
    assert parsed[1][core.HEADER.index("step_name")] == 'Prix "TTC"'
    assert parsed[1][core.HEADER.index("control_point")] == "Prix annoncé\nclairement"
    assert parsed[1][core.HEADER.index("is_compliant")] == "true"
    assert parsed[1][core.HEADER.index("step_override_reviewer")] == ""
    assert parsed[2][core.HEADER.index("advisor")] == "'=HYPERLINK(\"x\")"
    assert parsed[2][core.HEADER.index("control_point_statut")] == ""
    assert len(parsed) == 3


def test_csv_is_produced_in_bounded_chunks_before_the_input_ends():
    def endless():
        n = 0
        while True:
            n += 1
            if n > 5_000:
                raise AssertionError("csv_chunks read far more rows than one chunk needs")
            yield record(control_point_index=n)

    chunks = core.csv_chunks(endless(), chunk_bytes=16 * 1024)
    first = next(chunks)
    assert 16 * 1024 <= len(first) < 20 * 1024  # one chunk: a row more than the threshold at most
    second = next(chunks)
    assert 16 * 1024 <= len(second) < 20 * 1024
    # and the chunks of a finite input concatenate to the whole file
    rows = [record(control_point_index=i) for i in range(1, 1001)]
    whole = b"".join(core.csv_chunks(rows, chunk_bytes=4096))
    assert len(list(csv.reader(io.StringIO(whole.decode("utf-8")[1:])))) == 1001


def test_xlsx_cells_are_typed():
    assert core.xlsx_cell(None, "int") is None
    assert core.xlsx_cell(True, "bool") is True
    assert core.xlsx_cell(7, "int") == 7 and core.xlsx_cell("87.5", "number") == 87.5
    assert core.xlsx_cell("2026-10-01", "date") == dt.date(2026, 10, 1)
    assert core.xlsx_cell("2026-10-01T10:11:12.345Z", "datetime") == dt.datetime(2026, 10, 1, 10, 11, 12, 345000)
    assert core.xlsx_cell("01/10/2026", "date") == "01/10/2026"  # not a date: kept as text
    assert core.xlsx_cell("=1+1", "text") == "=1+1"  # a string cell, never a formula


def test_range_rules_and_filename():
    d = dt.date.fromisoformat
    assert core.range_error(d("2026-10-02"), d("2026-10-01")) == "sales_date_from must not be after sales_date_to"
    assert core.range_error(d("2026-10-01"), d("2026-10-01")) is None
    assert core.range_error(d("2024-01-01"), d("2024-12-31")) is None  # 366 days (leap year)
    assert core.range_error(d("2025-01-01"), d("2026-01-02")) is not None  # 367 days
    assert core.filename(d("2026-10-01"), d("2026-10-31"), "csv") == "audits_2026-10-01_2026-10-31.csv"
    assert [core.sheet_name(i) for i in range(3)] == ["audits", "audits (2)", "audits (3)"]


def test_workbook_has_typed_cells_and_continues_on_a_new_sheet(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(core, "XLSX_MAX_ROWS", 3)  # header + 2 rows per sheet
    rows = [record(control_point_index=i, advisor="=1+1" if i == 1 else "Zoé") for i in range(1, 6)]
    path = tmp_path / "x.xlsx"
    assert write_xlsx(rows, str(path), str(tmp_path)) == 5
    sheets = read_xlsx(path.read_bytes())
    assert list(sheets) == ["audits", "audits (2)", "audits (3)"]
    assert [len(s) for s in sheets.values()] == [3, 3, 2]
    for s in sheets.values():
        assert s[0] == list(core.HEADER)
    first = dict(zip(core.HEADER, sheets["audits"][1], strict=False))
    assert first["sales_date"] == dt.date(2026, 10, 1)
    assert first["completed_at_utc"] == dt.datetime(2026, 10, 1, 10, 11, 12, 345000)
    assert first["advisor"] == "=1+1" and first["groupe"] == "Azur Énergie"
    assert first["score_percentage"] == 87.5 and first["audit_id"] == 7.0
    assert first["is_compliant"] is True and first["step_human_override"] is False
    assert first["step_override_reviewer"] is None
    indexes = [r[core.HEADER.index("control_point_index")] for s in sheets.values() for r in s[1:]]
    assert indexes == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("rows", [0, 1])
def test_workbook_of_zero_or_one_row_is_valid(tmp_path: Path, rows: int):
    path = tmp_path / "x.xlsx"
    assert write_xlsx([record()] * rows, str(path), str(tmp_path)) == rows
    sheet = read_xlsx(path.read_bytes())["audits"]
    assert sheet[0] == list(core.HEADER) and len(sheet) == 1 + rows
