"""Tables of one municipality's resident register."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, String, Text, Uuid, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.idempotency import IdempotencyKeyMixin
from services.common.outbox import OutboxMixin
from services.common.runtime import RefusalMixin


class RrsBase(DeclarativeBase):
    """This service's own metadata: its tables live only in its own database."""


class Household(RrsBase):
    __tablename__ = "households"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ResidentRow(RrsBase):
    __tablename__ = "residents"
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True)
    individual_number: Mapped[str] = mapped_column(String(12), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    sequence: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    municipality_code: Mapped[str] = mapped_column(String(6))
    family_name: Mapped[str] = mapped_column(String(60), index=True)
    given_name: Mapped[str | None] = mapped_column(String(60), index=True)
    family_name_kana: Mapped[str | None] = mapped_column(String(120), index=True)
    given_name_kana: Mapped[str | None] = mapped_column(String(120))
    former_surname: Mapped[str | None] = mapped_column(String(60))
    former_surname_kana: Mapped[str | None] = mapped_column(String(120))
    alias: Mapped[str | None] = mapped_column(String(60))
    birth_date: Mapped[date] = mapped_column(Date, index=True)
    sex: Mapped[str] = mapped_column(String(8))
    postal_code: Mapped[str | None] = mapped_column(String(7))
    address_text: Mapped[str] = mapped_column(String(200))
    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), index=True)
    relationship: Mapped[str] = mapped_column(String(16))
    became_resident_on: Mapped[date] = mapped_column(Date)
    previous_address: Mapped[str | None] = mapped_column(String(200))
    honseki: Mapped[str | None] = mapped_column(String(200))
    hittousha: Mapped[str | None] = mapped_column(String(60))
    nationality: Mapped[str | None] = mapped_column(String(60))
    residence_status: Mapped[str | None] = mapped_column(String(60))
    period_of_stay: Mapped[str | None] = mapped_column(String(60))
    period_of_stay_ends: Mapped[date | None] = mapped_column(Date)
    residence_card_number: Mapped[str | None] = mapped_column(String(12))
    special_permanent_resident: Mapped[bool] = mapped_column(Boolean, default=False)
    last_change: Mapped[str] = mapped_column(String(32))
    last_change_date: Mapped[date] = mapped_column(Date)
    pending_move: Mapped[str | None] = mapped_column(Text)  # MoveDetails JSON while 転出予定
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class ResidentHistoryRow(RrsBase):
    """Every change of every record, never overwritten: the record as it stood after the change."""

    __tablename__ = "resident_history"
    resident_code: Mapped[str] = mapped_column(ForeignKey("residents.resident_code"), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    change_date: Mapped[date] = mapped_column(Date)
    notified_date: Mapped[date | None] = mapped_column(Date)
    explanation: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    recorded_by: Mapped[str] = mapped_column(String(100))
    record: Mapped[str] = mapped_column(Text)  # ResidentRecord JSON after the change


class Outbox(RrsBase, OutboxMixin):
    __tablename__ = "outbox"


class Refusal(RrsBase, RefusalMixin):
    __tablename__ = "refusals"


class IdempotencyKey(RrsBase, IdempotencyKeyMixin):
    """Idempotency-Key of a POST and its first answer (services/common/idempotency.py)."""


class MoveReservationRow(RrsBase):
    """転入予約: 転出証明書情報 another municipality sent for a person moving here."""

    __tablename__ = "move_reservations"
    certificate_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    procedure_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    origin_municipality_code: Mapped[str] = mapped_column(String(6))
    planned_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))  # pending | used | withdrawn
    payload: Mapped[str] = mapped_column(Text)  # MoveOutCertificate JSON
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IncomingNoticeRow(RrsBase):
    """What another municipality sent through the CS, pulled in the CS's order; staff acknowledge them."""

    __tablename__ = "incoming_notices"
    cs_sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(40))
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    summary: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MoveInReviewRow(RrsBase):
    """A 転入届 without matching 転出証明書情報, kept for staff instead of being registered."""

    __tablename__ = "move_in_reviews"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    resident_codes: Mapped[str] = mapped_column(Text)  # JSON list
    reason: Mapped[str] = mapped_column(Text)
    filing: Mapped[str] = mapped_column(Text)
    filed_by: Mapped[str] = mapped_column(String(100))
    filed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    state: Mapped[str] = mapped_column(String(16), default="open")


class OnlineFilingRow(RrsBase):
    """An online filing handed over by the CS (verified signature), and how far it got."""

    __tablename__ = "online_filings"
    filing_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    filer: Mapped[str] = mapped_column(String(11), index=True)
    serial: Mapped[str] = mapped_column(String(49))
    content: Mapped[str] = mapped_column(Text)  # the signed OnlineFilingContent JSON
    state: Mapped[str] = mapped_column(String(24), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    code_hash: Mapped[str | None] = mapped_column(String(64))  # of the one-time code mailed to the new address
    code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed_by: Mapped[str | None] = mapped_column(String(100))


class LetterRow(RrsBase):
    """Post the municipality sends (e.g. a residence-confirmation code to a new address), for the mail room."""

    __tablename__ = "letters"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    address_text: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- DV等支援措置 (services/municipal_rrs/dv.py) --------------------------------------------------------------


class SupportMeasureRow(RrsBase):
    """A DV support measure held here: one this municipality carries (own), or one another municipality sent."""

    __tablename__ = "support_measures"
    measure_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    victim_code: Mapped[str] = mapped_column(String(11), index=True)
    own: Mapped[bool] = mapped_column(Boolean, index=True)  # this municipality is the home
    home_municipality_code: Mapped[str] = mapped_column(String(6))
    valid_until: Mapped[date | None] = mapped_column(Date)
    previous_municipality_code: Mapped[str | None] = mapped_column(String(6))  # own: where the victim lived before
    received_from: Mapped[str | None] = mapped_column(String(6))
    payload: Mapped[str] = mapped_column(Text)  # the SupportMeasure JSON
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class SupportMeasurePersonRow(RrsBase):
    """Who a measure protects, for the lookups of the counter."""

    __tablename__ = "support_measure_persons"
    measure_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("support_measures.measure_id"), primary_key=True)
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True, index=True)


class RestoredProtectionRow(RrsBase):
    """A person the network's protection marker said a measure protected, restored by the disaster-recovery drill.

    The measure itself (kind, basis, 相手方) was lost with the register: until staff re-enter it (an approved
    measure covering the person supersedes this row), every request about the person but their own is reviewed.
    """

    __tablename__ = "restored_protections"
    resident_code: Mapped[str] = mapped_column(String(11), primary_key=True)
    valid_until: Mapped[date | None] = mapped_column(Date)  # the marker's last day of protection
    marker_as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    restored_from: Mapped[str] = mapped_column(String(100))  # the node that held the marker
    restored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    superseded_by: Mapped[str | None] = mapped_column(String(100))  # the staff member who decided the re-entered measure
    superseded_by_measure: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class MeasureDeliveryRow(RrsBase):
    """One revision of an own measure sent to one municipality: retried until that register acknowledges it."""

    __tablename__ = "support_measure_deliveries"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    measure_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    revision: Mapped[int] = mapped_column(Integer)
    target_municipality_code: Mapped[str] = mapped_column(String(6))
    role: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    first_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    staff_acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    staff_acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


class MeasureAlertRow(RrsBase):
    """What staff must not miss (R-DV-2): received measures, failed deliveries, expiry reminders, refused requests."""

    __tablename__ = "support_measure_alerts"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(120), unique=True)  # one alert per event, however often it is seen
    kind: Mapped[str] = mapped_column(String(24), index=True)
    measure_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    summary: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CertificateRequestRow(RrsBase):
    """Every request for 住民票の写し, 除票, 附票 or 閲覧, whatever its outcome (refusals included)."""

    __tablename__ = "certificate_requests"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    type: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(24))
    subject: Mapped[str] = mapped_column(Text)  # CertificateSubject JSON
    subject_code: Mapped[str | None] = mapped_column(String(11), index=True)
    requester: Mapped[str] = mapped_column(Text)  # Requester JSON
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    measure_ids: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    requesting_municipality_code: Mapped[str | None] = mapped_column(String(6))
    handled_by: Mapped[str] = mapped_column(String(100))
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    document: Mapped[str | None] = mapped_column(Text)  # the CertificateDocument issued, as issued


# --- staff: accounts, screen sessions, who read which record, identity checks (docs/security-staff.md) ----------


class StaffAccountRow(RrsBase):
    """A member of staff of this municipality: argon2id password hash, TOTP secret, role.

    ``last_totp_step`` is the last 30-second step whose code was accepted: a code
    is taken once, so one seen over a shoulder or replayed from a log is refused.
    """

    __tablename__ = "staff_accounts"
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    totp_secret: Mapped[str] = mapped_column(String(64))  # base32, as in the otpauth URI
    last_totp_step: Mapped[int] = mapped_column(BigInteger, default=0)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deactivated_by: Mapped[str | None] = mapped_column(String(100))
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StaffSessionRow(RrsBase):
    """A login on the staff screens. The cookie holds a random value whose SHA-256 is ``token_hash``;
    ``csrf`` is the token every form of the session carries. A logout ends the row for good."""

    __tablename__ = "staff_sessions"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(ForeignKey("staff_accounts.username"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RecordReadRow(RrsBase):
    """Who read which resident's record, when and through which route (the access log)."""

    __tablename__ = "record_reads"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    read_by: Mapped[str] = mapped_column(String(64), index=True)
    read_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    route: Mapped[str] = mapped_column(String(200))


class PortalCredentialIssueRow(RrsBase):
    """A portal credential handed over at the counter: who issued it, when, and how the resident's identity was checked."""

    __tablename__ = "portal_credential_issues"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    resident_code: Mapped[str] = mapped_column(String(11), index=True)
    issued_by: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    check_method: Mapped[str] = mapped_column(String(32))
    document_number_last4: Mapped[str | None] = mapped_column(String(4))
    note: Mapped[str | None] = mapped_column(String(400))
