"""bulk provision: jobs and their rows

Revision ID: 0003
Revises: 0002
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "bulk_jobs",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("agency_id", sa.String(length=40), nullable=False),
        sa.Column("affair", sa.String(length=40), nullable=False),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total_rows", sa.Integer(), nullable=False),
        sa.Column("done_rows", sa.Integer(), nullable=False),
        sa.Column("found_rows", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_chunk_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("bulk_jobs_by_agency", "bulk_jobs", ["agency_id", "created_at"])
    op.create_index("bulk_jobs_open", "bulk_jobs", ["status"], postgresql_where=sa.text("status IN ('queued', 'running')"))
    op.create_table(
        "bulk_rows",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("row_no", sa.BigInteger(), nullable=False),
        sa.Column("query", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "row_no"),
    )


def downgrade() -> None:
    op.drop_table("bulk_rows")
    op.drop_table("bulk_jobs")
