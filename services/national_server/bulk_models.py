"""Tables of bulk provision: the jobs and their rows (services/national_server/bulk.py)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from services.common.outbox import OutboxMixin
from services.national_server.models import NationalBase


class BulkJobRow(NationalBase):
    """One job. ``cursor`` is the last row number processed: a chunk moves it in the same transaction as its results."""

    __tablename__ = "bulk_jobs"
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    agency_id: Mapped[str] = mapped_column(String(40))
    affair: Mapped[str] = mapped_column(String(40))
    items: Mapped[str] = mapped_column(Text)  # JSON list of the granted items (the affair's, narrowed by ``fields``)
    reason: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # queued | running | completed | failed
    total_rows: Mapped[int] = mapped_column(Integer)
    done_rows: Mapped[int] = mapped_column(Integer, default=0)
    found_rows: Mapped[int] = mapped_column(Integer, default=0)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive failed chunks at the cursor
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_chunk_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("bulk_jobs_by_agency", "agency_id", "created_at"),
        Index("bulk_jobs_open", "status", postgresql_where="status IN ('queued', 'running')"),
    )


class BulkRow(NationalBase):
    """One line of a job file: the query as sent, then its status and the result row (JSON of a BulkResultRow)."""

    __tablename__ = "bulk_rows"
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    row_no: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    query: Mapped[str | None] = mapped_column(Text)  # null when the line was refused at upload (too long, not UTF-8)
    status: Mapped[str | None] = mapped_column(String(20))
    result: Mapped[str | None] = mapped_column(Text)


class BulkOutbox(OutboxMixin, NationalBase):
    """The provision records of bulk jobs, delivered by the bulk worker process's own relay.

    Kept apart from the server's ``outbox`` so that a million-row job neither
    queues in front of the records of interactive lookups nor spends the
    server's CPU on delivering them: the worker runs at a lower priority."""

    __tablename__ = "bulk_outbox"
