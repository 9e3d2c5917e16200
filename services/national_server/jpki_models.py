"""Tables of the JPKI certification authority and the identity-assurance ledger
(services/national_server/jpki_store.py), in the national database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from services.national_server.models import NationalBase


class JpkiAuthorityRow(NationalBase):
    """The CA certificate of each CA key (made once, at the first use of a key, then kept)."""

    __tablename__ = "jpki_authority"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex subject key identifier
    certificate: Mapped[str] = mapped_column(Text)  # PEM
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class JpkiCertificateRow(NationalBase):
    """Every certificate issued: who holds it, what it states, and whether it is still good."""

    __tablename__ = "jpki_certificates"
    serial: Mapped[str] = mapped_column(String(49), primary_key=True)  # decimal
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # signing | authentication
    subject_items: Mapped[str | None] = mapped_column(Text)  # JSON BasicItems as stated (signing only)
    public_key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    certificate: Mapped[str] = mapped_column(Text)  # PEM
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))  # good | revoked
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    issued_by: Mapped[str] = mapped_column(String(6))  # municipality whose counter asked
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    __table_args__ = (
        Index("jpki_certificates_good", "resident_code", "kind", postgresql_where="status = 'good'"),
        Index("jpki_certificates_revoked", "revoked_at", postgresql_where="status = 'revoked'"),
    )


class JpkiResolutionRow(NationalBase):
    """Each time a serial was resolved to a person: in whose procedure, for which party."""

    __tablename__ = "jpki_resolutions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(49), index=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    purpose: Mapped[str] = mapped_column(String(40))
    requested_by: Mapped[str] = mapped_column(String(200))
    resolved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AssuranceRow(NationalBase):
    """The identity-assurance ledger of one person (R-ONL-3, R-ONL-4)."""

    __tablename__ = "assurance"
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True)
    consecutive_online_procedures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_in_person_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    credential_uses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_credential_use_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AssuranceEventRow(NationalBase):
    """Every event that moved the ledger, with the party that reported it."""

    __tablename__ = "assurance_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # online_procedure | in_person_check (credential uses are the resolutions)
    purpose: Mapped[str | None] = mapped_column(String(40))
    recorded_by: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
