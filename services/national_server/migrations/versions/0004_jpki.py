"""JPKI: the CA certificate, issued certificates, serial resolutions, the assurance ledger

Revision ID: 0004
Revises: 0003
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "jpki_authority",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "jpki_certificates",
        sa.Column("serial", sa.String(length=49), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject_items", sa.Text(), nullable=True),
        sa.Column("public_key_sha256", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.String(length=32), nullable=True),
        sa.Column("issued_by", sa.String(length=6), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("serial"),
        sa.UniqueConstraint("public_key_sha256"),
    )
    op.create_index("ix_jpki_certificates_resident_code", "jpki_certificates", ["resident_code"])
    op.create_index("jpki_certificates_good", "jpki_certificates", ["resident_code", "kind"], postgresql_where=sa.text("status = 'good'"))
    op.create_index("jpki_certificates_revoked", "jpki_certificates", ["revoked_at"], postgresql_where=sa.text("status = 'revoked'"))
    op.create_table(
        "jpki_resolutions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("serial", sa.String(length=49), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jpki_resolutions_serial", "jpki_resolutions", ["serial"])
    op.create_index("ix_jpki_resolutions_resident_code", "jpki_resolutions", ["resident_code"])
    op.create_table(
        "assurance",
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("consecutive_online_procedures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_in_person_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("credential_uses", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_credential_use_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("resident_code"),
    )
    op.create_table(
        "assurance_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=True),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_assurance_events_resident_code", "assurance_events", ["resident_code"])


def downgrade() -> None:
    op.drop_table("assurance_events")
    op.drop_table("assurance")
    op.drop_table("jpki_resolutions")
    op.drop_table("jpki_certificates")
    op.drop_table("jpki_authority")
