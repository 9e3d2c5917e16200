"""non-resident persons (住登外者), seal registrations (印鑑登録), alert acknowledgements of the staff UI

Revision ID: 0005
Revises: 0004
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "non_residents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.BigInteger(), sa.Identity(start=1), nullable=False),
        sa.Column("family_name", sa.String(length=60), nullable=False),
        sa.Column("given_name", sa.String(length=60), nullable=True),
        sa.Column("family_name_kana", sa.String(length=120), nullable=True),
        sa.Column("given_name_kana", sa.String(length=120), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("sex", sa.String(length=8), nullable=True),
        sa.Column("individual_number", sa.String(length=12), nullable=True),
        sa.Column("address_text", sa.String(length=200), nullable=False),
        sa.Column("address_municipality_code", sa.String(length=6), nullable=True),
        sa.Column("postal_code", sa.String(length=7), nullable=True),
        sa.Column("reason", sa.String(length=24), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("linked_resident_code", sa.String(length=11), sa.ForeignKey("residents.resident_code"), nullable=True),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("linked_by", sa.String(length=100), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("registered_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number"),
    )
    op.create_index("ix_non_residents_family_name", "non_residents", ["family_name"])
    op.create_index("ix_non_residents_family_name_kana", "non_residents", ["family_name_kana"])
    op.create_index("ix_non_residents_birth_date", "non_residents", ["birth_date"])
    op.create_index("ix_non_residents_individual_number", "non_residents", ["individual_number"])
    op.create_index("ix_non_residents_status", "non_residents", ["status"])
    op.create_index("ix_non_residents_linked_resident_code", "non_residents", ["linked_resident_code"])

    op.create_table(
        "seal_registrations",
        sa.Column("registration_number", sa.BigInteger(), sa.Identity(start=1), nullable=False),
        sa.Column("holder_resident_code", sa.String(length=11), sa.ForeignKey("residents.resident_code"), nullable=False),
        sa.Column("impression", sa.String(length=60), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("registered_on", sa.Date(), nullable=False),
        sa.Column("registered_by", sa.String(length=100), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ended_on", sa.Date(), nullable=True),
        sa.Column("end_reason", sa.String(length=16), nullable=True),
        sa.Column("ended_by", sa.String(length=100), nullable=True),
        sa.Column("explanation", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("registration_number"),
    )
    op.create_index("ix_seal_registrations_holder_resident_code", "seal_registrations", ["holder_resident_code"])
    # one registered seal per holder; ended ones are kept as history
    op.create_index("uq_seal_registrations_one_per_holder", "seal_registrations", ["holder_resident_code"], unique=True,
                    postgresql_where=sa.text("status = 'registered'"))

    op.create_table(
        "staff_alert_acknowledgements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("staff_id", sa.String(length=100), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("resident_code", sa.String(length=11), nullable=False),
        sa.Column("measure_id", sa.String(length=64), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_staff_alert_ack_lookup", "staff_alert_acknowledgements", ["staff_id", "resident_code", "session_id"])
    op.create_index("ix_staff_alert_acknowledgements_resident_code", "staff_alert_acknowledgements", ["resident_code"])
    op.create_index("ix_staff_alert_acknowledgements_measure_id", "staff_alert_acknowledgements", ["measure_id"])


def downgrade() -> None:
    op.drop_table("staff_alert_acknowledgements")
    op.drop_table("seal_registrations")
    op.drop_table("non_residents")
