"""Bulk provision (一括提供): one job of many queries, answered row by row.

An agency that needs thousands or millions of persons (a yearly pension
check, say) submits them as one file instead of as many interactive calls.
The affair, the items (``fields``) and the stated reason are properties of
the job, so each row carries only what identifies a person. Rows have the
same shapes as the interactive queries in :mod:`contracts.provision`, minus
those per-job members; a row that does not fit its shape is answered
``invalid`` instead of failing the job, so one typo does not cost the other
999,999 rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from contracts.affairs import Item
from contracts.base import Contract
from contracts.provision import BasicItemsCriteria, IndividualNumberCriteria, ProvidedPerson, PseudonymCriteria, ResidentCodeCriteria

#: Limits of one job (docs/bulk.md): beyond them the submission is refused as a whole.
MAX_ROWS = 5_000_000
MAX_BODY_BYTES = 1 << 30  # 1 GiB
MAX_LINE_BYTES = 2048  # a longer line is answered ``invalid`` without being stored

NDJSON_MEDIA_TYPE = "application/x-ndjson"


#: The row shapes are the person criteria of the interactive queries.
BulkByResidentCode = ResidentCodeCriteria
BulkByIndividualNumber = IndividualNumberCriteria
BulkByPseudonym = PseudonymCriteria
BulkByBasicItems = BasicItemsCriteria

#: One line of a job file.
BulkQuery = Annotated[BulkByResidentCode | BulkByIndividualNumber | BulkByPseudonym | BulkByBasicItems, Field(discriminator="type")]

JobStatus = Literal["queued", "running", "completed", "failed"]
RowStatus = Literal["found", "not_found", "invalid", "too_many_results"]


class BulkJob(Contract):
    """A submitted job and its progress; ``done_rows`` only grows, one committed chunk at a time."""

    job_id: UUID
    affair: str
    items: list[Item]  # what every found row carries (the affair's items, narrowed by ``fields``)
    reason: str | None = None
    status: JobStatus
    total_rows: int
    done_rows: int
    found_rows: int  # rows with at least one person provided
    created_at: datetime
    finished_at: datetime | None = None
    error: str | None = None  # why a job failed


class BulkJobList(Contract):
    jobs: list[BulkJob]


class BulkResultRow(Contract):
    """The answer to one line of the job file, by its line number (1 = first line)."""

    row: int
    status: RowStatus
    reason: str | None = None  # why a row is invalid
    persons: list[ProvidedPerson] = Field(default_factory=list)
