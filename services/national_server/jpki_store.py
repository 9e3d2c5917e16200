"""JPKI at the national server, with a session: the CA key and certificate,
issuance, automatic revocation, status, serial resolution and the assurance
ledger. The rules themselves are in ``jpki.py``."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import String, any_, bindparam, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.identity import IdentityChange
from contracts.jpki import (
    AssuranceEvent, AssuranceEventKind, AssuranceState, BasicItems, CertificateIssuanceRequest, CertificateKind, CertificateState,
    CertificateStatus, FilingVerification, IssuedCertificate, RevocationReason,
)
from services.national_server import jpki
from services.national_server.jpki_models import AssuranceEventRow, AssuranceRow, JpkiAuthorityRow, JpkiCertificateRow, JpkiResolutionRow
from services.national_server.models import Identity

GOOD, REVOKED = CertificateState.good.value, CertificateState.revoked.value
ISSUANCE_PURPOSE = "jpki-issuance"


# --- the CA key ----------------------------------------------------------------------------


def generate_ca_key_file(path: Path) -> Path:
    """A fresh ECDSA P-256 CA key (PKCS#8 PEM, 0600) unless the file exists: made once, then kept."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def load_ca_key(path: Path) -> jpki.CaKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if isinstance(key, Ed25519PrivateKey) or (isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
        return key
    raise SystemExit(f"{path}: the JPKI CA key must be ECDSA P-256 or Ed25519")


class CertificationAuthority:
    """The CA key and its self-signed certificate, made at the first use of the key and kept in the database."""

    def __init__(self, key: jpki.CaKey, sessions):
        self.key = key
        self.sessions = sessions
        self.key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()
        self._certificate: x509.Certificate | None = None

    async def certificate(self) -> x509.Certificate:
        if self._certificate is None:
            async with self.sessions() as session, session.begin():
                stored = await session.scalar(select(JpkiAuthorityRow.certificate).where(JpkiAuthorityRow.key_id == self.key_id))
                if stored is None:
                    made = jpki.pem(jpki.build_ca_certificate(self.key, datetime.now(UTC)))
                    await session.execute(insert(JpkiAuthorityRow).values(key_id=self.key_id, certificate=made).on_conflict_do_nothing())
                    stored = await session.scalar(select(JpkiAuthorityRow.certificate).where(JpkiAuthorityRow.key_id == self.key_id))
            self._certificate = x509.load_pem_x509_certificate(stored.encode("ascii"))
        return self._certificate


# --- issuance --------------------------------------------------------------------------------


async def issue(session: AsyncSession, ca: CertificationAuthority, ca_certificate: x509.Certificate, request: CertificateIssuanceRequest, *, municipality_code: str, caller: str, now: datetime) -> IssuedCertificate:
    """One certificate for a person registered in the asking municipality; the items come from the national store.

    The person's row is locked, so a change applied meanwhile either comes
    first (and the certificate states it) or after (and revokes it).
    """
    person = (await session.execute(select(Identity).where(Identity.resident_code == request.resident_code).with_for_update())).scalar_one_or_none()
    # first: a birth or a 転入 the asking municipality already holds may not have arrived here yet
    if request.known_version is not None and (person is None or person.version < request.known_version):
        raise jpki.IssuanceRefused("change-in-flight", f"the national server holds version {person.version if person else 'none'} of {request.resident_code}, "
                                   f"the municipality version {request.known_version}: the latest change is still on its way")
    if person is None or person.municipality_code != municipality_code:
        raise jpki.IssuanceRefused("not-registered-here", f"{request.resident_code} is not registered in {municipality_code}")
    if person.status != "active":
        raise jpki.IssuanceRefused("person-not-active", f"{request.resident_code} is {person.status}")
    identity = IdentityChange.model_validate_json(person.payload).identity
    jpki.check_issuable(request.kind, identity, now.astimezone(jpki.JST).date())
    public_key = jpki.load_card_public_key(request.public_key_pem)
    fingerprint = jpki.public_key_fingerprint(public_key)
    if await session.scalar(select(JpkiCertificateRow.serial).where(JpkiCertificateRow.public_key_sha256 == fingerprint)) is not None:
        raise jpki.IssuanceRefused("public-key-reused", "a certificate was already issued for this public key; the card makes a new key pair")
    plan = jpki.plan_certificate(request.kind, identity, now, ca_certificate.not_valid_after_utc)
    certificate = jpki.build_certificate(plan, public_key, ca.key, ca_certificate)
    # one good certificate of each kind per person: the new card's replaces the old one
    await session.execute(
        update(JpkiCertificateRow)
        .where(JpkiCertificateRow.resident_code == request.resident_code, JpkiCertificateRow.kind == request.kind.value, JpkiCertificateRow.status == GOOD)
        .values(status=REVOKED, revoked_at=now, revocation_reason=RevocationReason.superseded.value)
    )
    certificate_pem = jpki.pem(certificate)
    session.add(JpkiCertificateRow(
        serial=str(plan.serial), resident_code=request.resident_code, kind=request.kind.value,
        subject_items=plan.items.model_dump_json() if plan.items is not None else None, public_key_sha256=fingerprint,
        certificate=certificate_pem, not_before=plan.not_before, not_after=plan.not_after, status=GOOD, issued_by=municipality_code, issued_at=now,
    ))
    if request.in_person:  # handing over a card at the counter is an in-person identity check; an online renewal is not
        await record_event(session, request.resident_code, AssuranceEvent(kind=AssuranceEventKind.in_person_check, purpose=ISSUANCE_PURPOSE), recorded_by=caller, now=now)
    return IssuedCertificate(serial=str(plan.serial), kind=request.kind, certificate_pem=certificate_pem, not_before=plan.not_before, not_after=plan.not_after)


# --- revocation and status --------------------------------------------------------------------


#: Asked for every change the national server applies: built once, its cache key with it.
_GOOD_CERTIFICATES_AMONG = (
    select(JpkiCertificateRow).where(JpkiCertificateRow.resident_code == any_(bindparam("codes", type_=ARRAY(String))), JpkiCertificateRow.status == GOOD)
    .order_by(JpkiCertificateRow.serial).with_for_update()
)


async def revoke_on_changes(session: AsyncSession, changes: list[IdentityChange], now: datetime) -> list[tuple[str, RevocationReason]]:
    """In the transaction that applied the changes (one, or a consumer's fetch), in their order: revoke what each makes
    untrue (``jpki.revocation_for``). One read of the good certificates of all their persons."""
    held: dict[str, list[JpkiCertificateRow]] = {}
    for row in (await session.execute(_GOOD_CERTIFICATES_AMONG, {"codes": list({c.resident_code for c in changes})})).scalars():
        held.setdefault(row.resident_code, []).append(row)
    revoked = []
    for change in changes:
        for row in held.get(change.resident_code, ()):
            if row.status != GOOD:  # revoked by an earlier change of the same fetch
                continue
            items = BasicItems.model_validate_json(row.subject_items) if row.subject_items else None
            reason = jpki.revocation_for(CertificateKind(row.kind), items, change)
            if reason is not None:
                row.status, row.revoked_at, row.revocation_reason = REVOKED, now, reason.value
                revoked.append((row.serial, reason))
    return revoked


def status_view(serial: str, row: JpkiCertificateRow | None) -> CertificateStatus:
    if row is None:
        return CertificateStatus(serial=serial, status=CertificateState.unknown)
    if row.status == REVOKED:
        return CertificateStatus(serial=serial, status=CertificateState.revoked, revoked_at=row.revoked_at, reason=RevocationReason(row.revocation_reason))
    return CertificateStatus(serial=serial, status=CertificateState.good)


async def certificate_row(session: AsyncSession, serial: int) -> JpkiCertificateRow | None:
    return await session.get(JpkiCertificateRow, str(serial))


async def revoked_within_validity(session: AsyncSession, now: datetime) -> list[jpki.Revoked]:
    rows = (await session.execute(
        select(JpkiCertificateRow.serial, JpkiCertificateRow.revoked_at, JpkiCertificateRow.revocation_reason)
        .where(JpkiCertificateRow.status == REVOKED, JpkiCertificateRow.not_after > now).order_by(JpkiCertificateRow.revoked_at)
    )).all()
    return [jpki.Revoked(serial=int(serial), revoked_at=at, reason=RevocationReason(reason)) for serial, at, reason in rows]


# --- serial resolution --------------------------------------------------------------------------


async def resolve(session: AsyncSession, certificate: x509.Certificate, *, purpose: str, caller: str, now: datetime) -> FilingVerification:
    """After the signature checked out: refuse a revoked certificate, else resolve its serial to the
    holder, record the resolution and count a use of the credential (R-ONL-4)."""
    serial = str(certificate.serial_number)
    row = await session.get(JpkiCertificateRow, serial)
    if row is None:
        raise jpki.FilingRefused(422, "unknown-certificate", "The certificate is not on record", f"certificate {serial} was not issued by this authority")
    if row.status == REVOKED:
        raise jpki.FilingRefused(422, "certificate-revoked", "The certificate has been revoked", f"certificate {serial} was revoked at {row.revoked_at.isoformat()} ({row.revocation_reason})")
    session.add(JpkiResolutionRow(serial=serial, resident_code=row.resident_code, purpose=purpose, requested_by=caller, resolved_at=now))
    state = await _upsert(session, row.resident_code, now, credential_uses=AssuranceRow.credential_uses + 1, last_credential_use_at=now)
    return FilingVerification(
        serial=serial, kind=CertificateKind(row.kind), resident_code=row.resident_code, basic_items=jpki.read_basic_items(certificate),
        certificate_status=status_view(serial, row), assurance=state, purpose=purpose, resolved_at=now,
    )


# --- assurance ledger -----------------------------------------------------------------------------

_STATE_COLUMNS = (
    AssuranceRow.resident_code, AssuranceRow.consecutive_online_procedures, AssuranceRow.last_in_person_check_at,
    AssuranceRow.credential_uses, AssuranceRow.last_credential_use_at,
)


def _state(values) -> AssuranceState:
    return AssuranceState(**{c.key: v for c, v in zip(_STATE_COLUMNS, values, strict=True)})


async def _upsert(session: AsyncSession, resident_code: str, now: datetime, **changes) -> AssuranceState:
    """Create the person's ledger row if needed and apply ``changes`` (column → SQL expression or value)."""
    await session.execute(insert(AssuranceRow).values(resident_code=resident_code, consecutive_online_procedures=0, credential_uses=0, updated_at=now).on_conflict_do_nothing())
    values = (await session.execute(
        update(AssuranceRow).where(AssuranceRow.resident_code == resident_code).values(updated_at=now, **changes).returning(*_STATE_COLUMNS)
    )).one()
    return _state(values)


async def assurance_state(session: AsyncSession, resident_code: str) -> AssuranceState:
    values = (await session.execute(select(*_STATE_COLUMNS).where(AssuranceRow.resident_code == resident_code))).one_or_none()
    return _state(values) if values is not None else AssuranceState(resident_code=resident_code, consecutive_online_procedures=0, credential_uses=0)


async def record_event(session: AsyncSession, resident_code: str, event: AssuranceEvent, *, recorded_by: str, now: datetime) -> AssuranceState:
    """An online procedure counts one more; an in-person check resets the count (R-ONL-3)."""
    session.add(AssuranceEventRow(resident_code=resident_code, kind=event.kind.value, purpose=event.purpose, recorded_by=recorded_by, recorded_at=now))
    if event.kind is AssuranceEventKind.online_procedure:
        return await _upsert(session, resident_code, now, consecutive_online_procedures=AssuranceRow.consecutive_online_procedures + 1)
    return await _upsert(session, resident_code, now, consecutive_online_procedures=0, last_in_person_check_at=now)


async def person_known(session: AsyncSession, resident_code: str) -> bool:
    return await session.scalar(select(Identity.resident_code).where(Identity.resident_code == resident_code)) is not None
