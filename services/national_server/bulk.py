"""Bulk provision (一括提供): jobs of up to millions of queries, answered row by row.

Why it looks like this (docs/bulk.md has the whole story):

- The upload is streamed into ``bulk_rows`` with ``COPY`` inside one
  transaction that also creates the job, so a job exists only once every row
  is stored, and millions of rows never sit in memory.
- A background worker answers a job in chunks. Each chunk is ONE transaction
  that locks the job, answers the rows after the job's cursor, writes their
  results, one provision record per person provided (into the outbox, as the
  interactive API does) and moves the cursor. A crash at any point rolls back
  the unfinished chunk, so after a restart the worker resumes at the first
  unanswered row and every row is answered, and recorded, exactly once.
- Interactive lookups come first (R-OPS-2): the worker is its own process
  at a lower CPU priority with its own small connection pool, started and
  stopped by the national server, so bulk work never holds the event loop
  or the connections that interactive lookups need. Measured in
  bench/bench_bulk.py and docs/bulk.md: with the worker in the server's
  event loop, interactive p99 grew several times over during a job.
"""


import asyncio
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import String, any_, bindparam, event, insert, make_url, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import async_sessionmaker

from contracts.affairs import Affair, Item, Level
from contracts.bulk import (
    MAX_BODY_BYTES, MAX_LINE_BYTES, MAX_ROWS, NDJSON_MEDIA_TYPE, BulkByBasicItems, BulkByIndividualNumber, BulkByPseudonym,
    BulkByResidentCode, BulkJob, BulkJobList, BulkQuery, BulkResultRow,
)
from contracts.provision import ByBasicItems, ProvidedPerson
from contracts.text import ReasonText, ShortCode
from services.common.auth import bearer_verifier
from services.common.db import make_engine
from services.common import metrics
from services.common.metrics import count_provisions
from services.common.outbox import OutboxBacklog
from services.common.problems import ProblemError
from services.common.provision import (
    AGENCY_PARTY_PREFIX, Grant, ProvisionRefused, TooManyResults, authorise, check_criteria, find, items_for, project, record_provisions, refused_criteria,
    subject_for,
)
from services.common.telemetry import tracer
from services.common.tokens import VerifiedToken
from services.national_server.bulk_models import BulkJobRow, BulkOutbox, BulkRow
from services.national_server.models import ProtectionMarkerRow

log = logging.getLogger(__name__)

#: Rows answered per transaction: short enough that a crash loses little work and locks are brief.
CHUNK_ROWS = 500
#: Rows looked up with one `= ANY(...)` statement and written back with one UPDATE; the loop gets a turn between them.
SUB_BATCH_ROWS = 100
#: A chunk that fails this many times in a row at the same row fails its job (a persistent fault, not a blip).
MAX_CHUNK_FAILURES = 5
RESULT_PAGE_ROWS = 5000
#: How often an idle worker looks for a new job (one indexed query; a submitted job waits at most this long).
IDLE_POLL_SECONDS = 0.5
RELAY_IDLE_SECONDS = 2.0  # the bulk records' relay: every chunk wakes it, so its own poll only retries a failed pass
ACCEPTED_MEDIA_TYPES = (NDJSON_MEDIA_TYPE, "application/jsonl")

_QUERY = TypeAdapter(BulkQuery)


# --- pure parts: splitting the upload, reading a row, writing a result --------------------------


@dataclass
class LineSplitter:
    """Splits an NDJSON byte stream into numbered lines without holding more than one line.

    Yields ``(line number, line bytes or None)``; None means the line was
    longer than ``max_line`` bytes and was dropped. Blank lines are not
    yielded but are counted, so row numbers are the file's line numbers.
    """

    max_line: int = MAX_LINE_BYTES
    _buffer: bytearray = field(default_factory=bytearray)
    _line_no: int = 0
    _overlong: bool = False

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes | None]]:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            yield from self._finish_line(data[start:end])
            start = end + 1
        rest = data[start:]
        if not self._overlong:
            self._buffer += rest
            if len(self._buffer) > self.max_line:
                self._overlong = True
                self._buffer.clear()

    def close(self) -> Iterator[tuple[int, bytes | None]]:
        if self._buffer or self._overlong:
            yield from self._finish_line(b"")

    def _finish_line(self, tail: bytes) -> Iterator[tuple[int, bytes | None]]:
        self._line_no += 1
        if self._overlong or len(self._buffer) + len(tail) > self.max_line:
            self._overlong = False
            self._buffer.clear()
            yield self._line_no, None
            return
        line = bytes(self._buffer + tail) if self._buffer else tail
        self._buffer.clear()
        line = line.strip(b" \t\r")
        if line:
            yield self._line_no, line


def looks_like_ndjson(line: bytes) -> bool:
    """The first line decides whether a body is NDJSON at all: it must be a JSON object."""
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def parse_row(query: str) -> BulkQuery | str:
    """The row's query, or why it is invalid (a short, human-readable reason)."""
    try:
        return _QUERY.validate_json(query)
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_url=False, include_input=False)[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("ByResidentCode", "ByIndividualNumber", "ByPseudonym", "ByBasicItems"))
            parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
        return "; ".join(parts)[:500]


def criteria_refusal(affair: Affair, query: BulkQuery, *, refused: tuple[str, ...] | None = None) -> str | None:
    """Why a row may not be answered for the job's affair (a criterion on an item it does not receive), or None."""
    try:
        check_criteria(affair, query, refused=refused)
    except ProvisionRefused as exc:
        return f"{exc.slug}: {exc.detail}"
    return None


def refused_criteria_in(line: bytes, refused: frozenset[str]) -> list[str]:
    """The criteria of one uploaded line that its job's affair may not use (pure, fast: a line that does not
    even name one, and has no escape that could spell one, is not parsed). A line that is not JSON is left to the
    worker to answer ``invalid``."""
    if not refused or (b"\\" not in line and not any(f'"{name}"'.encode() in line for name in refused)):
        return []
    try:
        row = json.loads(line)
    except ValueError:
        return []
    return sorted(name for name in refused if isinstance(row, dict) and row.get(name) is not None)


def result_line(row_no: int, status: str, *, persons: list[ProvidedPerson] = (), reason: str | None = None) -> str:
    """One line of the result file; items not provided are left out rather than sent as nulls."""
    return BulkResultRow(row=row_no, status=status, reason=reason, persons=list(persons)).model_dump_json(exclude_none=True)


def job_view(job: BulkJobRow) -> BulkJob:
    return BulkJob(
        job_id=job.job_id, affair=job.affair, items=json.loads(job.items), reason=job.reason, status=job.status, total_rows=job.total_rows,
        done_rows=job.done_rows, found_rows=job.found_rows, created_at=job.created_at, finished_at=job.finished_at, error=job.error,
    )


# --- the worker -----------------------------------------------------------------------------------


class BulkWorker:
    """Answers open jobs chunk by chunk; jobs take turns, so a small job is not stuck behind a huge one."""

    def __init__(self, *, sessions, provider: str, topology, identity_model, outbox_model, pseudonymizer, idle_seconds: float = 1.0, after_chunk: Callable[[], None] = lambda: None):
        self._sessions = sessions
        self._after_chunk = after_chunk  # e.g. wake the relay of the provision records the chunk wrote
        self._provider = provider
        self._topology = topology
        self._identity = identity_model
        self._outbox = outbox_model
        self._pseudonymizer = pseudonymizer
        self._idle = idle_seconds
        self._current: uuid.UUID | None = None

    async def run_forever(self) -> None:
        while True:
            self._current = None
            try:
                worked = await self.run_chunk()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("bulk chunk failed")
                if self._current is not None:
                    await self._count_failure(self._current, exc)
                await asyncio.sleep(self._idle)
                continue
            if worked:
                self._after_chunk()
                await asyncio.sleep(0)  # other tasks of the loop get a turn between two chunks
                continue
            await asyncio.sleep(self._idle)

    async def _next_job_id(self):
        async with self._sessions() as session:
            return (
                await session.execute(
                    select(BulkJobRow.job_id).where(BulkJobRow.status.in_(("queued", "running")))
                    .order_by(BulkJobRow.last_chunk_at.asc().nulls_first(), BulkJobRow.created_at).limit(1)
                )
            ).scalar_one_or_none()

    async def run_chunk(self) -> bool:
        """Answer the next chunk of the job whose turn it is; False when there is nothing to do."""
        job_id = self._current = await self._next_job_id()
        if job_id is None:
            return False
        with tracer().start_as_current_span("bulk chunk", attributes={"jukinet.bulk.job_id": str(job_id)}) as span:
            async with self._sessions() as session, session.begin():
                job = (await session.execute(select(BulkJobRow).where(BulkJobRow.job_id == job_id).with_for_update(skip_locked=True))).scalar_one_or_none()
                if job is None or job.status not in ("queued", "running"):
                    return False  # another worker holds it, or it just finished
                try:
                    grant = authorise(self._topology, agency_id=job.agency_id, affair_id=job.affair, fields=[Item(i) for i in json.loads(job.items)], level=Level.national, prefecture=None)
                except ProvisionRefused as exc:  # the topology changed since the job was accepted
                    job.status, job.error, job.finished_at = "failed", f"{exc.slug}: {exc.detail}", datetime.now(UTC)
                    return True
                rows = (
                    await session.execute(
                        select(BulkRow.row_no, BulkRow.query, BulkRow.status).where(BulkRow.job_id == job_id, BulkRow.row_no > job.cursor)
                        .order_by(BulkRow.row_no).limit(CHUNK_ROWS)
                    )
                ).all()
                trace_id = f"{span.get_span_context().trace_id:032x}"
                found = provided = 0
                for start in range(0, len(rows), SUB_BATCH_ROWS):
                    f, p = await self._answer(session, job, grant, rows[start:start + SUB_BATCH_ROWS], trace_id)
                    found += f
                    provided += p
                    await asyncio.sleep(0)
                now = datetime.now(UTC)
                job.done_rows += len(rows)
                job.found_rows += found
                job.failures = 0
                job.last_chunk_at = now
                if rows:
                    job.cursor = rows[-1].row_no
                job.status = "running"
                if not rows or job.done_rows >= job.total_rows:
                    job.status, job.finished_at = "completed", now
                span.set_attribute("jukinet.bulk.rows", len(rows))
            count_provisions(affair=grant.affair.id, provider=self._provider, persons=provided)
            return True

    async def _answer(self, session, job: BulkJobRow, grant: Grant, rows: list, trace_id: str) -> tuple[int, int]:
        """Answer some rows of a chunk inside its transaction: results, then provision records."""
        agency_id = job.agency_id
        parsed: list[tuple[int, BulkQuery | str | None]] = []
        codes: set[str] = set()
        numbers: set[str] = set()
        resolved: dict[str, str | None] = {}
        refused = refused_criteria(grant.affair)
        for row in rows:
            if row.status is not None:  # refused at upload; its result is already stored
                parsed.append((row.row_no, None))
                continue
            query = parse_row(row.query)
            if not isinstance(query, str):  # the upload refuses a job with such rows; this holds should the catalogue change meanwhile
                query = criteria_refusal(grant.affair, query, refused=refused) or query
            parsed.append((row.row_no, query))
            if isinstance(query, BulkByResidentCode):
                codes.add(query.resident_code)
            elif isinstance(query, BulkByIndividualNumber):
                numbers.add(query.individual_number)
            elif isinstance(query, BulkByPseudonym):
                code = resolved[query.pseudonym] = self._pseudonymizer.resolve(agency_id, query.pseudonym)
                if code is not None:
                    codes.add(code)
        by_code, by_number = await self._lookup(session, codes, numbers)
        # DV support measures: protected: true, and the address only for affairs that require it
        shielded = {p.resident_code for p in (*by_code.values(), *by_number.values()) if p.protected}

        statuses: list[str] = []
        results: list[str] = []
        row_nos: list[int] = []
        provided_rows: list = []
        found = 0
        for row_no, query in parsed:
            if query is None:
                continue
            status, reason, matched = "not_found", None, []
            if isinstance(query, str):
                status, reason = "invalid", query
            elif isinstance(query, BulkByBasicItems):
                try:
                    matched, protected = await find(session, self._identity, ByBasicItems(affair=grant.affair.id, **query.model_dump()), affair=grant.affair,
                                                    marker_model=ProtectionMarkerRow, municipalities=None)
                    shielded |= protected
                except TooManyResults:
                    status = "too_many_results"
                except ProvisionRefused as exc:
                    status, reason = "invalid", exc.detail
            else:
                if isinstance(query, BulkByResidentCode):
                    person = by_code.get(query.resident_code)
                elif isinstance(query, BulkByIndividualNumber):
                    person = by_number.get(query.individual_number)
                else:
                    code = resolved.get(query.pseudonym)
                    person = by_code.get(code) if code else None
                matched = [person] if person is not None else []
            persons = []
            if matched:
                status = "found"
                found += 1
                persons = [project(p, items_for(grant, protected=p.resident_code in shielded), pseudonym=subject_for(grant, p.resident_code, self._pseudonymizer)[1],
                                   protected=p.resident_code in shielded) for p in matched]
                provided_rows.extend(matched)
            row_nos.append(row_no)
            statuses.append(status)
            results.append(result_line(row_no, status, persons=persons, reason=reason))
        if row_nos:
            await session.execute(
                text(
                    "UPDATE bulk_rows AS b SET status = v.status, result = v.result"
                    " FROM unnest(CAST(:row_nos AS bigint[]), CAST(:statuses AS text[]), CAST(:results AS text[])) AS v(row_no, status, result)"
                    " WHERE b.job_id = :job_id AND b.row_no = v.row_no"
                ),
                {"row_nos": row_nos, "statuses": statuses, "results": results, "job_id": job.job_id},
            )
        record_provisions(
            session, self._outbox, provider=self._provider, grant=grant, rows=provided_rows, reason=job.reason, query_type="BulkJob",
            trace_id=trace_id, bulk_job_id=job.job_id, protected=shielded,
        )
        await session.flush()
        return found, len(provided_rows)

    async def _lookup(self, session, codes: set[str], numbers: set[str]) -> tuple[dict, dict]:
        """Every person of a sub-batch asked by code, pseudonym or number, in at most two statements (with their DV protection)."""
        model = self._identity
        columns = (model.resident_code, model.individual_number, model.municipality_code, model.payload, ProtectionMarkerRow.protected)
        by_code: dict = {}
        by_number: dict = {}
        joined = select(*columns).outerjoin(ProtectionMarkerRow, ProtectionMarkerRow.resident_code == model.resident_code)
        if codes:
            stmt = joined.where(model.resident_code == any_(bindparam("codes", list(codes), type_=ARRAY(String))))
            by_code = {r.resident_code: r for r in (await session.execute(stmt)).all()}
        if numbers:
            stmt = joined.where(model.individual_number == any_(bindparam("numbers", list(numbers), type_=ARRAY(String))))
            by_number = {r.individual_number: r for r in (await session.execute(stmt)).all()}
        return by_code, by_number

    async def _count_failure(self, job_id, exc: Exception) -> None:
        try:
            async with self._sessions() as session, session.begin():
                job = await session.get(BulkJobRow, job_id, with_for_update=True)
                if job is None or job.status not in ("queued", "running"):
                    return
                job.failures += 1
                job.last_chunk_at = datetime.now(UTC)  # let other jobs have their turn
                if job.failures >= MAX_CHUNK_FAILURES:
                    job.status, job.finished_at = "failed", datetime.now(UTC)
                    job.error = f"rows after {job.cursor} could not be answered: {type(exc).__name__}"
        except Exception:
            log.exception("could not record the failure of bulk job %s", job_id)


# --- the HTTP edge --------------------------------------------------------------------------------


def build_bulk(rt, *, pseudonymizer, topology) -> tuple[APIRouter, Callable[[], Awaitable[None]]]:
    """The agency API of bulk jobs, and the loop (for the app's lifespan) that keeps the bulk worker process running.

    Jobs are answered by a separate, lower-priority process
    (``python -m services.national_server.bulk``), so bulk work never holds
    the event loop that serves interactive lookups; uploads and downloads
    use their own small connection pool, so they never hold the
    interactive pool's connections. The worker process reads the same
    settings and the same identity table; the provision records it writes
    go to ``bulk_outbox``, which its own relay delivers (the server only
    reports that outbox's backlog in its metrics).
    """
    engine = make_engine(rt.settings.database_url, pool_size=2, max_overflow=2)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    metrics.watch_outbox(OutboxBacklog(sessions, BulkOutbox))
    supervisor = WorkerProcess()
    verify = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party.startswith(AGENCY_PARTY_PREFIX))
    router = APIRouter(prefix="/v1", tags=["bulk provision"])
    Token = Annotated[VerifiedToken, Depends(verify)]

    async def own_job(session, job_id: uuid.UUID, agency_id: str) -> BulkJobRow:
        job = await session.get(BulkJobRow, job_id)
        if job is None or job.agency_id != agency_id:  # another agency's job does not exist for this one
            raise ProblemError(404, "bulk-job-not-found", "No such bulk job", f"no bulk job {job_id} of this agency")
        return job

    @router.post(
        "/bulk-jobs", status_code=202, response_model=BulkJob,
        openapi_extra={"requestBody": {"required": True, "description": "One query a line (NDJSON), without affair, fields or reason.", "content": {NDJSON_MEDIA_TYPE: {"schema": {"type": "string"}}}}},
    )
    async def submit_job(
        request: Request, token: Token, affair: Annotated[ShortCode, Query()], reason: Annotated[ReasonText | None, Query()] = None,
        fields: Annotated[list[Item] | None, Query()] = None,
    ) -> BulkJob:
        """Submit a job of queries for one affair; it is answered in the background (poll its progress)."""
        agency_id = token.issuer.removeprefix(AGENCY_PARTY_PREFIX)
        try:
            grant = authorise(topology, agency_id=agency_id, affair_id=affair, fields=fields, level=Level.national, prefecture=None)
        except ProvisionRefused as exc:
            raise ProblemError(403, exc.slug, "Not authorised for this affair", exc.detail) from None
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in ACCEPTED_MEDIA_TYPES:
            raise ProblemError(415, "not-ndjson", "A job is an NDJSON file", f"send the rows as {NDJSON_MEDIA_TYPE}, one JSON object a line")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise ProblemError(413, "job-too-large", "The job is too large", f"a job may have at most {MAX_BODY_BYTES} bytes")
        job_id = uuid.uuid4()
        invalid_line = f"longer than {MAX_LINE_BYTES} bytes or not UTF-8"
        rows = 0
        refused = frozenset(refused_criteria(grant.affair))

        def checked(lines) -> Iterator[tuple]:
            nonlocal rows
            for row_no, line in lines:
                rows += 1
                if rows > MAX_ROWS:
                    raise ProblemError(413, "job-too-large", "The job is too large", f"a job may have at most {MAX_ROWS} rows")
                if rows == 1 and (line is None or not looks_like_ndjson(line)):
                    raise ProblemError(400, "not-ndjson", "The body is not NDJSON", "the first line is not a JSON object")
                outside = refused_criteria_in(line, refused) if line is not None else []
                if outside:  # as an interactive query would be: the whole job, before anything is stored or answered
                    raise ProblemError(403, "criterion-not-authorised", "Not authorised for this affair",
                                       f"row {row_no}: the affair {grant.affair.id} does not receive the items these criteria select by: {', '.join(outside)}")
                try:
                    value = line.decode("utf-8") if line is not None else None
                except UnicodeDecodeError:
                    value = None
                if value is None:
                    yield (job_id, row_no, None, "invalid", result_line(row_no, "invalid", reason=invalid_line))
                else:
                    yield (job_id, row_no, value, None, None)

        async def job_rows():
            """The body's lines as rows, read as they arrive: a job of millions of lines is never held in memory."""
            received = 0
            splitter = LineSplitter()
            async for data in request.stream():
                received += len(data)
                if received > MAX_BODY_BYTES:
                    raise ProblemError(413, "job-too-large", "The job is too large", f"a job may have at most {MAX_BODY_BYTES} bytes")
                for row in checked(splitter.feed(data)):
                    yield row
            for row in checked(splitter.close()):
                yield row

        async with engine.connect() as conn:
            async with conn.begin():
                await conn.execute(text("select 1"))  # the driver opens the transaction now, so the COPY below is part of it
                raw = (await conn.get_raw_connection()).driver_connection  # asyncpg: COPY straight from the request body
                await raw.copy_records_to_table("bulk_rows", records=job_rows(), columns=["job_id", "row_no", "query", "status", "result"])
                if rows == 0:
                    raise ProblemError(400, "empty-job", "The job has no rows")
                created_at = (
                    await conn.execute(
                        insert(BulkJobRow).values(
                            job_id=job_id, agency_id=agency_id, affair=grant.affair.id, items=json.dumps([i.value for i in grant.items]),
                            reason=reason, status="queued", total_rows=rows, done_rows=0, found_rows=0, cursor=0, failures=0,
                        ).returning(BulkJobRow.created_at)
                    )
                ).scalar_one()
        return BulkJob(
            job_id=job_id, affair=grant.affair.id, items=list(grant.items), reason=reason, status="queued", total_rows=rows, done_rows=0,
            found_rows=0, created_at=created_at,
        )

    @router.get("/bulk-jobs", response_model=BulkJobList)
    async def list_jobs(token: Token) -> BulkJobList:
        """This agency's jobs, newest first (at most 100)."""
        agency_id = token.issuer.removeprefix(AGENCY_PARTY_PREFIX)
        async with rt.sessions() as session:
            jobs = (await session.execute(select(BulkJobRow).where(BulkJobRow.agency_id == agency_id).order_by(BulkJobRow.created_at.desc()).limit(100))).scalars()
            return BulkJobList(jobs=[job_view(j) for j in jobs])

    @router.get("/bulk-jobs/{job_id}", response_model=BulkJob)
    async def get_job(job_id: uuid.UUID, token: Token) -> BulkJob:
        """A job's progress."""
        async with rt.sessions() as session:
            return job_view(await own_job(session, job_id, token.issuer.removeprefix(AGENCY_PARTY_PREFIX)))

    @router.get(
        "/bulk-jobs/{job_id}/result",
        responses={200: {"description": "One BulkResultRow a line, by row number.", "content": {NDJSON_MEDIA_TYPE: {"schema": {"type": "string"}}}}},
    )
    async def get_result(job_id: uuid.UUID, token: Token) -> StreamingResponse:
        """The result file of a completed job: one line per row, ordered by row number."""
        async with rt.sessions() as session:
            job = await own_job(session, job_id, token.issuer.removeprefix(AGENCY_PARTY_PREFIX))
        if job.status != "completed":
            detail = f"the job failed: {job.error}" if job.status == "failed" else f"{job.done_rows} of {job.total_rows} rows answered so far"
            raise ProblemError(409, "bulk-job-not-completed", "The job has no result yet", detail, jobStatus=job.status)

        async def lines():
            last = 0
            while True:
                async with sessions() as session:
                    page = (
                        await session.execute(
                            select(BulkRow.row_no, BulkRow.result).where(BulkRow.job_id == job_id, BulkRow.row_no > last).order_by(BulkRow.row_no).limit(RESULT_PAGE_ROWS)
                        )
                    ).all()
                if not page:
                    return
                last = page[-1].row_no
                yield ("\n".join(r.result for r in page) + "\n").encode()

        return StreamingResponse(lines(), media_type=NDJSON_MEDIA_TYPE, headers={"X-Bulk-Rows": str(job.total_rows)})

    async def run_worker() -> None:
        try:
            await supervisor.run_forever()
        finally:
            await engine.dispose()

    return router, run_worker


# --- the worker process -----------------------------------------------------------------------------

_PARENT_PID_ENV = "JUKINET_BULK_PARENT_PID"
_PR_SET_PDEATHSIG = 1


class WorkerProcess:
    """Starts the bulk worker process, restarts it if it dies, stops it with the server.

    The process (and, with an embedded database, its PostgreSQL backends)
    runs in the background (SCHED_IDLE, or nice 10 where that is missing), so
    on a busy machine the scheduler serves interactive lookups first.
    """

    def __init__(self, *, restart_seconds: float = 1.0):
        self._process: asyncio.subprocess.Process | None = None
        self._restart = restart_seconds

    async def run_forever(self) -> None:
        env = {**os.environ, _PARENT_PID_ENV: str(os.getpid())}
        try:
            while True:
                self._process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.national_server.bulk", env=env)
                code = await self._process.wait()
                log.warning("the bulk worker process exited with %s; starting it again", code)
                await asyncio.sleep(self._restart)
        finally:
            process = self._process
            if process is not None and process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), timeout=10)
                except TimeoutError:
                    process.kill()
                    await process.wait()


def _die_with_parent(parent_pid: int) -> None:
    """If the server is killed (even with SIGKILL), its worker goes too: no orphan keeps answering jobs."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        log.warning("cannot ask to be stopped with the server on this platform")
    if parent_pid and os.getppid() != parent_pid:  # the server died before prctl took effect
        raise SystemExit(0)


async def _work(settings) -> None:
    """The worker and the relay of its provision records, in this low-priority process until it is stopped."""
    from services.common.runtime import Runtime
    from services.national_server.models import Identity
    from services.national_server.pseudonyms import Pseudonymizer

    rt = Runtime(settings, pool_size=1, max_overflow=1)  # one connection for the chunks, one for the relay
    _lower_the_priority_of_own_database_sessions(rt.engine, settings.database_url)
    relay = rt.kafka_outbox_relay(BulkOutbox, poll_seconds=RELAY_IDLE_SECONDS)
    worker = BulkWorker(
        sessions=rt.sessions, provider=settings.node.party, topology=settings.topology_model, identity_model=Identity, outbox_model=BulkOutbox,
        pseudonymizer=Pseudonymizer(settings.pseudonym_key.read_bytes()), idle_seconds=IDLE_POLL_SECONDS, after_chunk=relay.wakeup.set,
    )
    async with rt.running(worker.run_forever, relay.run_forever):
        await asyncio.Event().wait()


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
BACKGROUND_NICENESS = 10


def _run_in_the_background(pid: int) -> str:
    """Give a process the CPU only when nothing else wants it; returns how.

    Linux's SCHED_IDLE policy does exactly that: any normal task that wakes
    up takes the CPU at once, so bulk work cannot delay an interactive
    lookup by a time slice. Where that policy is missing (not Linux), nice 10
    is the next best: the scheduler favours normal tasks about ten to one.
    """
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
            return "SCHED_IDLE"
        except OSError:
            pass
    os.setpriority(os.PRIO_PROCESS, pid, BACKGROUND_NICENESS)
    return f"nice {BACKGROUND_NICENESS}"


def _lower_the_priority_of_own_database_sessions(engine, url: str) -> None:
    """Run the PostgreSQL backends serving this process in the background too.

    A bulk job spends about half its CPU in the worker's PostgreSQL backend;
    at normal priority that backend competed with interactive lookups as an
    unprioritised worker would. Possible only when PostgreSQL runs on this
    host and this user may change the backend's priority (the embedded
    database); elsewhere (PostgreSQL in its own container or machine) the
    backends keep their priority, and that is logged.
    """
    if make_url(url).host not in LOCAL_HOSTS:
        log.info("PostgreSQL is not on this host: the bulk worker's database sessions keep their priority")
        return

    @event.listens_for(engine.sync_engine, "connect")
    def _backend_in_the_background(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("select pg_backend_pid()")
        backend = cursor.fetchone()[0]
        cursor.close()
        try:
            how = _run_in_the_background(backend)
        except OSError as exc:
            log.warning("cannot lower the priority of PostgreSQL backend %s for the bulk worker: %s", backend, exc)
        else:
            log.info("PostgreSQL backend %s of the bulk worker runs at %s", backend, how)


def main() -> None:
    """Entry point of the bulk worker process (started by the national server, never by hand)."""
    from services.common.settings import ServiceSettings
    from services.common.telemetry import setup_tracing

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s[bulk] %(levelname)s %(message)s")
    _die_with_parent(int(os.environ.get(_PARENT_PID_ENV, "0")))
    log.info("the bulk worker runs at %s", _run_in_the_background(0))
    settings = ServiceSettings()
    if settings.pseudonym_key is None:
        raise SystemExit("the bulk worker needs JUKINET_PSEUDONYM_KEY, as the national server does")
    trace_file = settings.trace_file.with_name(f"{settings.trace_file.stem}.bulk{settings.trace_file.suffix}") if settings.trace_file else None
    setup_tracing(f"{settings.node.id}.bulk", trace_file=trace_file, otlp_endpoint=settings.otlp_endpoint)
    asyncio.run(_work(settings))


if __name__ == "__main__":
    main()
