"""``GET /api/reports/audits/export`` (issue 10 §2): the audits of a range of sales days as a CSV or
XLSX file, one row per control point (columns: :data:`auditflow_dagster.core.export.COLUMNS`).

**Query.** ``sales_date_from`` and ``sales_date_to`` (required, ``YYYY-MM-DD``, inclusive, at most
:data:`~auditflow_dagster.core.export.MAX_RANGE_DAYS` days) are sales days (``fiche_cache.sales_date``),
named like the audit list's filter of the same meaning; ``format`` ``csv`` (default) or ``xlsx``;
optional ``groupes`` and ``audit_config_ids`` (comma lists), ``status`` (comma list of audit
statuses) and ``latest_only`` (``true`` by default), with the list's meanings. Unlike the list, an
unknown value is a 400, not silently dropped: a typo in a file export must not export everything.

**Authorization.** ``audits.read``. Unlike the aggregate reports (scope ALL only), the export is
row level, so it is *narrowed* to the caller's scope with the list's own rule
(:func:`api.auth.scope_list_params`): GROUP keys get their groupes' fiches, SELF keys the fiches
attributed to their ``crm_user_id``.

**Streaming, bounded memory.** The read and the file writing happen in one producer thread per
export (:class:`ThreadedBody`): the query streams from a server-side cursor
(:func:`auditflow_dagster.db.exports.iter_export_records`), CSV is produced row by row in ~64 KiB
chunks; at most :data:`QUEUE_CHUNKS` chunks wait for the client (backpressure: a slow client slows
the read, it does not fill memory). XLSX is written by xlsxwriter in ``constant_memory`` mode into a
temporary directory, then streamed from disk in chunks and deleted; its first byte comes once the
workbook is complete (a zip cannot be streamed before its directory is known). A client that goes
away stops the producer, which closes the cursor and releases its connection. Each export holds a
database connection for its duration, so a process runs at most :data:`MAX_CONCURRENT_EXPORTS` at
once; another request gets 503 ``SERVICE_UNAVAILABLE`` with ``Retry-After``.

Errors before the first byte (validation, permission, busy) are the spec 06 envelope; a failure
after the response started cannot change its status, so the connection is aborted (the client sees
an incomplete download, never a silently truncated file that looks whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.auth import scope_list_params
from api.common import DIGITS, authorize, query_date, query_single
from api.errors import ApiError, validation_error
from auditflow_dagster.core import export as core
from auditflow_dagster.db.audit_reads import ListParams
from auditflow_dagster.db.audits import STATUSES
from auditflow_dagster.db.exports import iter_export_records
from auditflow_dagster.db.session import session_scope

log = logging.getLogger("auditflow.api.exports")

EXPORT_PERMISSION = "audits.read"
#: Exports a process runs at once (each holds a database connection and a thread).
MAX_CONCURRENT_EXPORTS = 2
#: Chunks that may wait between the producer thread and the client.
QUEUE_CHUNKS = 8
XLSX_READ_CHUNK = 256 * 1024
RETRY_AFTER_SECONDS = 30

# --------------------------------------------------------------------------------------------- #
# Query string
# --------------------------------------------------------------------------------------------- #


def _csv_param(request: Request, name: str) -> list[str]:
    raw = query_single(request, name)
    return [v.strip() for v in (raw or "").split(",") if v.strip()]


def _bool_param(request: Request, name: str, default: bool) -> bool:
    raw = query_single(request, name)
    if raw is None or raw == "":
        return default
    if raw.strip().lower() not in ("true", "false"):
        raise validation_error(f"Invalid {name}: true or false expected")
    return raw.strip().lower() == "true"


def export_query(request: Request) -> tuple[str, Any, Any, ListParams]:
    """(format, first day, last day, list params) of the request; any bad input is a 400."""
    fmt = (query_single(request, "format") or "csv").strip().lower()
    if fmt not in core.FORMATS:
        raise validation_error(f"Invalid format: one of {', '.join(core.FORMATS)} expected")
    days = []
    for name in ("sales_date_from", "sales_date_to"):
        raw = query_single(request, name)
        if raw is None or not raw.strip():
            raise validation_error(f"Missing required parameter {name} (YYYY-MM-DD)")
        days.append(query_date(raw.strip(), name))
    start, end = days
    problem = core.range_error(start, end)
    if problem:
        raise validation_error(problem)
    config_ids = _csv_param(request, "audit_config_ids")
    if any(not DIGITS.match(v) or not 0 < int(v) < 2**63 for v in config_ids):
        raise validation_error("Invalid audit_config_ids: comma-separated ids expected")
    statuses = _csv_param(request, "status")
    if any(v not in STATUSES for v in statuses):
        raise validation_error(f"Invalid status: comma-separated values of {', '.join(STATUSES)} expected")
    params = ListParams(
        sales_date_from=start.isoformat(), sales_date_to=end.isoformat(), groupes=_csv_param(request, "groupes"),
        audit_config_ids=[int(v) for v in config_ids], statuses=statuses,
        latest_only=_bool_param(request, "latest_only", True),
    )
    return fmt, start, end, params


# --------------------------------------------------------------------------------------------- #
# A producer thread feeding the response, with backpressure
# --------------------------------------------------------------------------------------------- #


class Stopped(Exception):
    """The response is over (finished, client gone): the producer stops where it is."""


_END = object()


class ExportSlots:
    """A per-process cap on exports running at once (non-blocking: busy → 503)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.active = max(0, self.active - 1)


SLOTS = ExportSlots(MAX_CONCURRENT_EXPORTS)


class Sink:
    """What a producer writes to: :meth:`put` hands a chunk to the response (blocking while
    ``slots`` chunks already wait: backpressure on the producer, never on the event loop);
    :meth:`check` lets long work without output (an XLSX workbook) notice that nobody waits any
    more. Both raise :class:`Stopped` once the response is over."""

    def __init__(self, deliver: Callable[[Any], None], slots: int) -> None:
        self._deliver = deliver
        self.slots = threading.Semaphore(slots)
        self.stop = threading.Event()

    def check(self) -> None:
        if self.stop.is_set():
            raise Stopped

    def put(self, chunk: bytes) -> None:
        while not self.slots.acquire(timeout=0.25):
            self.check()
        self.check()
        self._deliver(chunk)


Producer = Callable[[Sink], None]


class ThreadedBody:
    """The body of one export: ``produce(sink)`` runs in its own thread once the response starts
    iterating, and the chunks it puts are yielded on the event loop in order. No executor thread
    ever waits on the producer. :meth:`close` (the response is over, whatever the reason) stops the
    producer at its next ``put``/``check``, so it unwinds and releases its cursor and connection;
    ``on_done`` runs once, when the producer has ended (or at close, if it never started)."""

    def __init__(self, produce: Producer, *, slots: int = QUEUE_CHUNKS,
                 on_done: Callable[[], None] = lambda: None) -> None:
        self._produce, self._on_done = produce, on_done
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sink = Sink(self._deliver, slots)
        self.thread: threading.Thread | None = None
        self._done_lock = threading.Lock()
        self._done = False

    def _finish(self) -> None:
        with self._done_lock:
            if self._done:
                return
            self._done = True
        self._on_done()

    def _deliver(self, item: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody listens any more
            raise Stopped from None

    def _run(self) -> None:
        try:
            self._produce(self.sink)
            self._deliver(_END)
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the response, which aborts
            log.exception("audit export failed")
            try:
                self._deliver(exc)
            except Stopped:
                pass
        finally:
            self._finish()

    async def chunks(self) -> AsyncIterator[bytes]:
        self._loop = asyncio.get_running_loop()
        self.thread = threading.Thread(target=self._run, name="audit-export", daemon=True)
        self.thread.start()
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise RuntimeError("audit export failed while streaming") from item
            self.sink.slots.release()
            yield item

    def close(self) -> None:
        self.sink.stop.set()
        if self.thread is None:  # never started: nothing else would run on_done
            self._finish()


class ExportResponse(StreamingResponse):
    """A streamed download whose producer is stopped however the response ends (finished, client
    gone, cancelled); ``HEAD`` gets the headers without running the export."""

    def __init__(self, body: ThreadedBody, *, media_type: str, filename: str) -> None:
        self.export_body = body
        super().__init__(body.chunks(), media_type=media_type, headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        })

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope.get("method", "GET").upper() == "HEAD":
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await super().__call__(scope, receive, send)
        finally:
            self.export_body.close()
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------- #
# Producers (run in the export thread)
# --------------------------------------------------------------------------------------------- #


def csv_producer(params: ListParams) -> Producer:
    def produce(sink: Sink) -> None:
        with session_scope() as s, contextlib.closing(iter_export_records(s, params)) as records:
            for chunk in core.csv_chunks(records):
                sink.put(chunk)
    return produce


def write_xlsx(records: Iterable[core.Record], path: str, tmpdir: str) -> int:
    """Write ``records`` into a new workbook at ``path`` with xlsxwriter's ``constant_memory`` mode
    (each row goes to a temporary file in ``tmpdir`` as soon as the next one starts: memory holds
    one row); a new worksheet starts when one is full (Excel's row limit). Cells are typed (number,
    boolean, date, UTC date-time, text — text is never read as a formula). Returns the data rows."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(path, {"constant_memory": True, "tmpdir": tmpdir, "strings_to_numbers": False,
                                    "strings_to_formulas": False, "strings_to_urls": False})
    date_fmt = wb.add_format({"num_format": "yyyy-mm-dd"})
    time_fmt = wb.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    bold = wb.add_format({"bold": True})
    last_col = len(core.COLUMNS) - 1
    sheets: list[Any] = []
    row = total = 0

    def new_sheet() -> Any:
        nonlocal row
        if sheets:
            sheets[-1].autofilter(0, 0, row - 1, last_col)
        sheet = wb.add_worksheet(core.sheet_name(len(sheets)))
        sheets.append(sheet)
        for c, column in enumerate(core.COLUMNS):
            sheet.set_column(c, c, max(10, min(40, len(column.name) + 2)))
        sheet.freeze_panes(1, 0)
        for c, name in enumerate(core.HEADER):
            sheet.write_string(0, c, name, bold)
        row = 1
        return sheet

    ws = new_sheet()
    for record in records:
        if row >= core.XLSX_MAX_ROWS:
            ws = new_sheet()
        for c, value in enumerate(core.xlsx_row(record)):
            if value is None:
                continue
            if isinstance(value, str):
                ws.write_string(row, c, value)
            elif isinstance(value, bool):
                ws.write_boolean(row, c, value)
            elif isinstance(value, (int, float)):
                ws.write_number(row, c, value)
            elif isinstance(value, dt.datetime):
                ws.write_datetime(row, c, value, time_fmt)
            else:
                ws.write_datetime(row, c, value, date_fmt)
        row += 1
        total += 1
    ws.autofilter(0, 0, row - 1, last_col)
    wb.close()
    return total


def xlsx_producer(params: ListParams) -> Producer:
    def produce(sink: Sink) -> None:
        tmpdir = tempfile.mkdtemp(prefix="auditflow-export-")
        try:
            path = os.path.join(tmpdir, "export.xlsx")

            def checked(records: Iterable[core.Record]) -> Iterator[core.Record]:
                for n, record in enumerate(records):
                    if n % 1000 == 0:
                        sink.check()
                    yield record

            with session_scope() as s, contextlib.closing(iter_export_records(s, params)) as records:
                write_xlsx(checked(records), path, tmpdir)
            with open(path, "rb") as fh:
                while chunk := fh.read(XLSX_READ_CHUNK):
                    sink.put(chunk)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return produce


PRODUCERS = {"csv": csv_producer, "xlsx": xlsx_producer}

# --------------------------------------------------------------------------------------------- #
# Route
# --------------------------------------------------------------------------------------------- #


async def export_audits(request: Request) -> Response:
    await authorize(request, EXPORT_PERMISSION)
    fmt, start, end, params = export_query(request)
    params = scope_list_params(request, params)
    if not SLOTS.try_acquire():
        busy = ApiError(503, "Too many exports in progress, retry later", "SERVICE_UNAVAILABLE").response()
        busy.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return busy
    body = ThreadedBody(PRODUCERS[fmt](params), on_done=SLOTS.release)
    return ExportResponse(body, media_type=core.MEDIA_TYPES[fmt], filename=core.filename(start, end, fmt))


routes = [
    Route("/api/reports/audits/export", export_audits, methods=["GET"]),
]
