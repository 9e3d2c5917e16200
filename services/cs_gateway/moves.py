"""The CS's part in moves between municipalities (特例転入).

- From its own RRS it takes the 転出証明書情報, withdrawals and replies and
  forwards each to the other municipality's CS inbox topic.
- From its inbox topic it takes what other CSs send: certificates (kept until
  a 転入 uses them), withdrawals, 転入通知 (whose 転入 version this CS's copy
  applies, so the copy says where the person went) and replies; every message
  is also kept, in arrival order, for its RRS to pull.
- When its RRS registers a 転入, the CS first applies the certificate's 転出
  version, so this side of the network holds the person's sequence without a
  gap, then sends the 転入通知 back to the origin.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from aiokafka import ConsumerRecord
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Uuid, bindparam, event, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import topics
from contracts.identity import ChangeReason, IdentityChange
from contracts.moves import (
    CsInboxMessage, CsNotice, CsNoticeMessage, MoveInNotice, MoveInReply, MoveOutCertificate, MoveOutWithdrawal, TransferredPerson, destination_of,
)
from contracts.dv import CertificateAttemptNotice, SupportMeasureAck, SupportMeasureNotice
from contracts.online import OnlineConfirmationNotice, OnlineFilingNotice
from contracts.register import Relationship
from services.common.kafka import Refuse
from services.common.outbox import enqueue
from services.common.runtime import STOPPING, wait_until
from services.common.telemetry import current_traceparent
from services.common.tier import Tier
from services.common.topology import Topology
from services.cs_gateway.models import MoveCertificateRow, NoticeRow, Outbox

_inbox_message = TypeAdapter(CsInboxMessage)  # what other CSs may send
_notice_message = TypeAdapter(CsNoticeMessage)  # what the register may be handed


def message_key(message) -> str:
    """What makes a message the same message when it is delivered twice."""
    if isinstance(message, MoveOutCertificate | MoveOutWithdrawal):
        return f"{message.kind}:{message.certificate_id}"
    if isinstance(message, MoveInNotice):
        return f"{message.kind}:{message.change.event_id}"
    if isinstance(message, OnlineFilingNotice):
        return f"{message.kind}:{message.filing_id}"
    if isinstance(message, OnlineConfirmationNotice):
        return f"{message.kind}:{message.attempt_id}"
    if isinstance(message, SupportMeasureNotice):  # a resend is kept again: the register acknowledges each (an ack may be lost)
        return f"{message.kind}:{message.measure.measure_id}:{message.measure.revision}:{message.attempt}"
    if isinstance(message, SupportMeasureAck):
        return f"{message.kind}:{message.ack_id}"
    if isinstance(message, CertificateAttemptNotice):
        return f"{message.kind}:{message.attempt_id}"
    return f"{message.kind}:{message.resident_code}:{message.replied_at.isoformat()}"


#: Keeps an inbound message once (None back for a redelivery). Written once as text: the PostgreSQL
#: dialect's INSERT … ON CONFLICT construct is never cached by SQLAlchemy, so built per call it was
#: compiled again for every message.
_KEEP_NOTICE = text(
    f"INSERT INTO {NoticeRow.__tablename__} (kind, message_key, resident_code, payload, traceparent)"
    " VALUES (:kind, :message_key, :resident_code, :payload, :traceparent)"
    " ON CONFLICT (message_key) DO NOTHING RETURNING sequence"
)

# The other statements of every move, built once (docs/architecture.md, "Database access on the hot path").
_CERTIFICATES = MoveCertificateRow.__table__  # table columns: a plain statement, no ORM work around it
_CERTIFICATE_CONTINUED = (  # the 転出 a 転入 continues from
    select(_CERTIFICATES.c.payload).where(_CERTIFICATES.c.resident_code == bindparam("code"), _CERTIFICATES.c.version == bindparam("version"))
    .order_by(_CERTIFICATES.c.received_at.desc()).limit(1)
)
_CERTIFICATES_USED = (
    update(_CERTIFICATES).where(_CERTIFICATES.c.resident_code == bindparam("code"), _CERTIFICATES.c.status == "pending").values(status="used")
)
_KEEP_CERTIFICATE = text(
    f"INSERT INTO {MoveCertificateRow.__tablename__} (certificate_id, resident_code, origin_municipality_code, version, status, payload)"
    " VALUES (:certificate_id, :code, :origin, :version, 'pending', :payload) ON CONFLICT (certificate_id) DO NOTHING"
).bindparams(bindparam("certificate_id", type_=Uuid))


class CsMoves:
    def __init__(self, *, tier: Tier, municipality_code: str, topology: Topology):
        self.tier = tier
        self.code = municipality_code
        self.topology = topology
        self._arrival = asyncio.Event()  # replaced by a fresh one at every arrival: a waiter holds the one of its last look

    # --- from the own RRS ----------------------------------------------------------------------------------
    async def forward_from_rrs(self, session: AsyncSession, message: MoveOutCertificate | MoveOutWithdrawal | MoveInReply) -> None:
        """Send one message of the RRS to the other municipality's CS (via the outbox, in this transaction)."""
        target = destination_of(message)
        if self.topology.municipality(target) is None:
            raise Refuse(f"municipality {target} is not on the network")
        if target == self.code:
            raise Refuse("a move within the municipality is a 転居, not a 転出")
        enqueue(session, Outbox, destination=topics.cs_inbox(target), key=message.resident_code, kind=message.kind, payload=message.model_dump_json())

    async def before_own_change(self, session: AsyncSession, change: IdentityChange) -> None:
        """Before a 転入 of the own RRS: apply the certificate's 転出 version it continues from."""
        if change.reason is not ChangeReason.move_in or change.move is None or change.move.origin_municipality_code is None:
            return
        payload = (await session.execute(_CERTIFICATE_CONTINUED, {"code": change.resident_code, "version": change.version - 1})).scalar_one_or_none()
        if payload is not None:
            await self.tier.receive(session, MoveOutCertificate.model_validate_json(payload).person.change)

    async def on_applied(self, session: AsyncSession, changes: list[IdentityChange]) -> None:
        """After changes are applied (the tier's hook): for each 転入 of the own RRS, see :meth:`_on_move_in`."""
        for change in changes:
            await self._on_move_in(session, change)

    async def _on_move_in(self, session: AsyncSession, change: IdentityChange) -> None:
        """After the own RRS's 転入 is applied: the certificate is used, and the origin hears of it (転入通知)."""
        if change.reason is not ChangeReason.move_in or change.municipality_code != self.code or change.move is None:
            return
        origin = change.move.origin_municipality_code
        await session.execute(_CERTIFICATES_USED, {"code": change.resident_code})
        if origin is None or origin == self.code or self.topology.municipality(origin) is None:
            return
        notice = MoveInNotice(municipality_code=self.code, origin_municipality_code=origin, resident_code=change.resident_code, change=change, sent_at=datetime.now(UTC))
        enqueue(session, Outbox, destination=topics.cs_inbox(origin), key=change.resident_code, kind=notice.kind, payload=notice.model_dump_json())

    # --- from other CSs (the inbox topic) ------------------------------------------------------------------
    def inbox_handler(self):
        async def handle(session: AsyncSession, record: ConsumerRecord) -> None:
            try:
                message = _inbox_message.validate_json(record.value or b"")
            except ValidationError as exc:
                raise Refuse(f"not a CS inbox message: {exc.errors(include_url=False)[:3]}") from None
            if record.key is not None and record.key.decode() != message.resident_code:
                raise Refuse("record key is not the resident code of the message")
            if destination_of(message) != self.code:
                raise Refuse(f"the message is for {destination_of(message)}, this CS serves {self.code}")
            if self.topology.municipality(message.municipality_code) is None:
                raise Refuse(f"sender municipality {message.municipality_code} is not on the network")
            await self.take(session, message)

        return handle

    async def take(self, session: AsyncSession, message) -> bool:
        """Keep one inbound message (once) and do what it means here; False when it was a redelivery."""
        stored = await session.execute(
            _KEEP_NOTICE, {"kind": message.kind, "message_key": message_key(message), "resident_code": message.resident_code, "payload": message.model_dump_json(),
                           "traceparent": current_traceparent()},
        )
        if stored.scalar_one_or_none() is None:
            return False
        event.listen(session.sync_session, "after_commit", self._announce_arrival, once=True)
        if isinstance(message, MoveOutCertificate):
            await session.execute(_KEEP_CERTIFICATE, {
                "certificate_id": message.certificate_id, "code": message.resident_code, "origin": message.municipality_code,
                "version": message.person.change.version, "payload": message.model_dump_json(),
            })
        elif isinstance(message, MoveOutWithdrawal):
            await session.execute(update(MoveCertificateRow).where(
                MoveCertificateRow.certificate_id == message.certificate_id, MoveCertificateRow.status == "pending").values(status="withdrawn"))
        elif isinstance(message, MoveInNotice):
            await self.tier.receive(session, message.change)
        return True

    # --- for the own RRS -----------------------------------------------------------------------------------
    def _announce_arrival(self, _session) -> None:
        arrived, self._arrival = self._arrival, asyncio.Event()
        arrived.set()

    async def wait_for_notices(self, sessions, after: int, limit: int, *, wait_seconds: float) -> list[CsNotice]:
        """Notices after ``after``; when there are none, wait up to ``wait_seconds`` for one to be committed (a long poll).

        The register keeps one such request open, so a notice reaches it as soon as
        it is stored, and an idle CS and register exchange a request every
        ``wait_seconds`` instead of several a second.
        """
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while True:
            arrival = self._arrival  # taken before looking: an arrival after the look has set it
            async with sessions() as session:
                found = await self.notices_after(session, after, limit)
            remaining = deadline - asyncio.get_running_loop().time()
            if found or remaining <= 0 or STOPPING.is_set():
                return found
            await wait_until(arrival, remaining)

    async def notices_after(self, session: AsyncSession, after: int, limit: int) -> list[CsNotice]:
        rows = (await session.execute(select(NoticeRow).where(NoticeRow.sequence > after).order_by(NoticeRow.sequence).limit(limit))).scalars().all()
        return [CsNotice(sequence=r.sequence, received_at=r.received_at, traceparent=r.traceparent, message=_notice_message.validate_json(r.payload)) for r in rows]

    async def returning_from_abroad(self, session: AsyncSession, last_change: IdentityChange) -> MoveOutCertificate:
        """A person who left abroad comes back here: the national record's 国外転出 version is their certificate."""
        move = last_change.move
        if last_change.status.value != "removed" or last_change.reason is not ChangeReason.move_out or move is None or move.destination_country is None:
            raise LookupError(f"{last_change.resident_code} did not leave abroad (the network's latest change is {last_change.reason.value}, {last_change.status.value})")
        certificate = MoveOutCertificate(
            certificate_id=uuid.uuid5(uuid.NAMESPACE_URL, f"jukinet:return:{last_change.event_id}:{self.code}"), procedure_id=move.procedure_id,
            municipality_code=last_change.municipality_code, destination_municipality_code=self.code, resident_code=last_change.resident_code,
            planned_date=move.planned_date or last_change.change_date, persons_in_procedure=1, issued_at=datetime.now(UTC), from_abroad=True,
            person=TransferredPerson(change=last_change, relationship=Relationship.head, was_head=True),
        )
        await self.take(session, certificate)
        return certificate
