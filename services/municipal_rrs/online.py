"""Online filings at the register: carried out from the notices the CS hands over.

The CS has already verified the signature, the window and the identity
assurance. The register checks what only it knows — the household for a
proxy filing, the 転入予約 for a 転入 — and confirms actual residence at a
new address the way the resident chose among those the municipality
accepts: a one-time code mailed to the new address, or staff recording a
landlord's confirmation or a counter visit. Each step answers the CS with an
:class:`OnlineFilingOutcome`, so the resident can follow the filing.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, date, datetime

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.moves import MoveInFiling, MoveInPerson, MoveOutCertificate, MoveOutFiling
from contracts.online import (
    OnlineConfirmationNotice, OnlineFilingContent, OnlineFilingNotice, OnlineFilingOutcome, OnlineFilingState, OnlineMoveIn, OnlineMoveOut,
    OnlineMoveWithin, ResidenceConfirmation,
)
from contracts.register import MoveWithin
from services.common.outbox import enqueue
from services.municipal_rrs import dv, moves, service
from services.municipal_rrs.domain import RegistryRuleViolation, proxy_refusal
from services.municipal_rrs.models import LetterRow, OnlineFilingRow, Outbox

_content = TypeAdapter(OnlineFilingContent)
MAX_CODE_ATTEMPTS = 5
NEXT_STEP = {
    ResidenceConfirmation.mailed_code: "enter the code mailed to your new address",
    ResidenceConfirmation.landlord: "the municipality confirms your residence with the landlord or owner",
    ResidenceConfirmation.in_person: "visit the counter once to confirm your residence",
}


def _code_hash(filing_id: uuid.UUID, code: str) -> str:
    return hashlib.sha256(f"{filing_id}:{code}".encode()).hexdigest()


def _answer(session: AsyncSession, row: OnlineFilingRow, municipality_code: str, state: OnlineFilingState, *, reason: str | None = None, next_step: str | None = None) -> str:
    row.state, row.reason = state.value, reason
    if state is OnlineFilingState.completed:
        row.completed_at = datetime.now(UTC)
    outcome = OnlineFilingOutcome(filing_id=row.filing_id, municipality_code=municipality_code, resident_code=row.filer, state=state,
                                  reason=reason, next_step=next_step, decided_at=datetime.now(UTC))
    enqueue(session, Outbox, destination=service.cs_destination(municipality_code), key=row.filer, kind=outcome.kind, payload=outcome.model_dump_json())
    return f"online {row.kind.removesuffix('/v1')} of {row.filer}: {state.value}" + (f" — {reason}" if reason else "")


async def take_filing(session: AsyncSession, notice: OnlineFilingNotice, *, municipality_code: str, known_municipality, today: date) -> str:
    content = notice.content
    row = OnlineFilingRow(filing_id=notice.filing_id, kind=content.kind, filer=notice.resident_code, serial=notice.serial,
                          content=content.model_dump_json(), state=OnlineFilingState.received.value, code_attempts=0)
    session.add(row)
    await session.flush()
    persons = [notice.resident_code, *content.members]
    try:
        async with session.begin_nested():
            if refusal := await dv.online_proxy_refusal(session, notice.resident_code, content.members):  # stricter where a measure protects
                raise RegistryRuleViolation(refusal)
            if isinstance(content, OnlineMoveIn):
                await _check_move_in_proxy(session, notice.resident_code, content.members)
            else:
                filer, members = await service.load(session, notice.resident_code), [await service.load(session, m) for m in content.members]
                if refusal := proxy_refusal(filer, members):
                    raise RegistryRuleViolation(refusal)
            if isinstance(content, OnlineMoveOut):
                await moves.file_move_out(
                    session, MoveOutFiling(resident_codes=persons, destination=content.destination, destination_country=content.destination_country,
                                           planned_date=content.planned_date, notified_date=today),
                    municipality_code=municipality_code, known_municipality=known_municipality, staff=f"online:{notice.serial}"[:100], today=today,
                )
                next_step = (f"your 転入予約 is with {content.destination.municipality_code}; file the 転入届 there after moving"
                             if content.destination else None)
                return _answer(session, row, municipality_code, OnlineFilingState.completed, next_step=next_step)
    except (RegistryRuleViolation, service.NotFound) as exc:
        return _answer(session, row, municipality_code, OnlineFilingState.refused, reason=str(exc))
    # 転入 and 転居 wait for the residence confirmation the resident chose
    if content.confirmation is ResidenceConfirmation.mailed_code:
        code = f"{secrets.randbelow(10**6):06d}"
        row.code_hash = _code_hash(row.filing_id, code)
        session.add(LetterRow(
            id=uuid.uuid4(), resident_code=notice.resident_code, address_text=content.new_address.text, subject="住所確認コードのお知らせ",
            body=f"届出 {row.filing_id} の住所確認コード: {code}\nオンラインで入力してください。",
        ))
    return _answer(session, row, municipality_code, OnlineFilingState.awaiting_confirmation, next_step=NEXT_STEP[content.confirmation])


async def _check_move_in_proxy(session: AsyncSession, filer: str, members: list[str]) -> None:
    """A head files the 転入 for the members who left with them, in the same 転出 procedure."""
    own = await moves.pending_certificate(session, filer)
    if own is None:
        raise RegistryRuleViolation(f"no 転出証明書情報 is pending here for {filer}")
    certificate = MoveOutCertificate.model_validate_json(own.payload)
    if members and not certificate.person.was_head:
        raise RegistryRuleViolation("only the head of household may file for other members")
    for member in members:
        theirs = await moves.pending_certificate(session, member)
        if theirs is None or theirs.procedure_id != own.procedure_id:
            raise RegistryRuleViolation(f"{member} did not leave with the filer in the same 転出届")


async def take_confirmation(session: AsyncSession, notice: OnlineConfirmationNotice, *, municipality_code: str, known_municipality, today: date) -> str:
    row = await session.get(OnlineFilingRow, notice.filing_id, with_for_update=True)
    if row is None or row.state != OnlineFilingState.awaiting_confirmation.value or row.code_hash is None:
        return f"a confirmation code for filing {notice.filing_id}, which is not waiting for one"
    row.code_attempts += 1
    if _code_hash(row.filing_id, notice.code) != row.code_hash:
        if row.code_attempts >= MAX_CODE_ATTEMPTS:
            return _answer(session, row, municipality_code, OnlineFilingState.refused, reason="too many wrong codes; please visit the counter")
        return _answer(session, row, municipality_code, OnlineFilingState.awaiting_confirmation, reason="the code does not match",
                       next_step=NEXT_STEP[ResidenceConfirmation.mailed_code])
    return await complete(session, row, municipality_code=municipality_code, confirmed_by="mailed-code", today=today)


async def complete(session: AsyncSession, row: OnlineFilingRow, *, municipality_code: str, confirmed_by: str, today: date) -> str:
    """Residence is confirmed: carry out the 転入 or 転居 for the filer and the members."""
    content = _content.validate_json(row.content)
    row.confirmed_by = confirmed_by
    persons = [row.filer, *content.members]
    staff = f"online:{row.serial}"[:100]
    try:
        async with session.begin_nested():
            if isinstance(content, OnlineMoveIn):
                await moves.file_move_in(session, MoveInFiling(
                    persons=[MoveInPerson(resident_code=c) for c in persons], new_address=content.new_address, move_date=content.move_date, notified_date=today,
                ), municipality_code=municipality_code, staff=staff, today=today)
            elif isinstance(content, OnlineMoveWithin):
                cmd = MoveWithin(new_address=content.new_address, move_date=content.move_date, notified_date=today)
                for code in persons:
                    await service.change(session, code, lambda r: r.move_within(cmd), staff=staff)
    except (RegistryRuleViolation, service.NotFound, moves.NoMatchingMoveOut) as exc:
        return _answer(session, row, municipality_code, OnlineFilingState.refused, reason=str(exc))
    return _answer(session, row, municipality_code, OnlineFilingState.completed)
