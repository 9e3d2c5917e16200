"""DV等支援措置 at the CS: hold the measures of the own register, pass them on, mark the person upward,
answer 広域交付 for the home municipality, and pre-fill the online move form without protected relatives.

- From its register the CS takes every revision of a measure the
  municipality carries (``destination`` = this CS: hold it; another
  municipality: hold it and forward it to that CS's inbox topic) and the
  register's acknowledgements of measures other municipalities sent.
- Holding a revision recomputes each protected person's
  :class:`ProtectionMarker` and sends it on the identity topic above, so the
  prefecture and national servers mark the person (docs/dv.md says why the
  marker rides that topic).
- 広域交付: a register asks its own CS for a copy of a person registered
  elsewhere; that CS asks the national server where the person is registered
  and calls the home CS (``POST /internal/v1/wide-area-copies``, signed CS
  token), which answers from the 本人確認情報 it holds and the measures its
  register sent, with the same rules as the counter, and tells its register
  of the attempt.
"""


import base64
import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import topics
from contracts.dv import (
    CertificateAttemptNotice, CertificateDocument, CertificateEntry, CertificateType, OnlinePrefill, OnlinePrefillMember, OnlinePrefillRequest,
    ProtectionMarker, RequesterRelation, SupportMeasure, SupportMeasureAck, SupportMeasureNotice, WideAreaAnswer, WideAreaRequest,
)
from contracts.household import HouseholdComposition
from contracts.identity import IdentityChange, IdentityChangeBatch, PersonName, RegistrationStatus
from contracts.jpki import CertificateKind, FilingVerification, SignedFiling
from contracts.online import OnlineSubmission
from services.common import dv_rules as rules
from services.common.auth import bearer_verifier
from services.common.kafka import Refuse
from services.common.outbox import enqueue
from services.common.problems import ProblemError
from services.common.tokens import VerifiedToken
from services.cs_gateway.models import TABLES, HouseholdMemberRow, HouseholdRow, Outbox, SupportMeasurePersonRow, SupportMeasureRow
from services.cs_gateway.online_rules import FRESHNESS

log = logging.getLogger(__name__)
NATIONAL_NODE = "national_server.national"
PREFILL_PURPOSE = "online-prefill"


class CsDv:
    def __init__(self, rt, *, municipality_code: str, topology, upward_topic: str, moves, online):
        self.rt = rt
        self.code = municipality_code
        self.topology = topology
        self.upward_topic = upward_topic
        self.moves = moves  # keeps notices for the register
        self.online = online  # verifies signed requests with the national CA

    # --- from the own register ------------------------------------------------------------------------------
    async def take_from_rrs(self, session: AsyncSession, message: SupportMeasureNotice | SupportMeasureAck) -> bool:
        """Hold (and mark) a measure of this municipality, and pass it or an acknowledgement on to another CS."""
        if isinstance(message, SupportMeasureNotice):
            if message.measure.home_municipality_code != self.code:
                raise Refuse(f"the register sent a measure carried by {message.measure.home_municipality_code}")
            fresh = await self.hold(session, message.measure)
            if message.destination_municipality_code == self.code:
                return fresh
        self._forward(session, message)
        return True

    def _forward(self, session: AsyncSession, message: SupportMeasureNotice | SupportMeasureAck) -> None:
        target = message.destination_municipality_code
        if target == self.code:
            raise Refuse("an acknowledgement goes to the municipality that carries the measure, not to this one")
        if self.topology.municipality(target) is None:
            raise Refuse(f"municipality {target} is not on the network")
        enqueue(session, Outbox, destination=topics.cs_inbox(target), key=message.resident_code, kind=message.kind, payload=message.model_dump_json())

    async def hold(self, session: AsyncSession, measure: SupportMeasure) -> bool:
        """Keep the highest revision; each protected person's marker goes up when it changed."""
        held = await session.get(SupportMeasureRow, measure.measure_id, with_for_update=True)
        if not rules.is_newer(held.revision if held is not None else None, measure.revision):
            return False
        if held is None:
            session.add(SupportMeasureRow(measure_id=measure.measure_id, revision=measure.revision, status=measure.status.value, payload=measure.model_dump_json()))
        else:
            held.revision, held.status, held.payload = measure.revision, measure.status.value, measure.model_dump_json()
        for code in measure.resident_codes:
            await session.execute(insert(SupportMeasurePersonRow).values(measure_id=measure.measure_id, resident_code=code).on_conflict_do_nothing())
        await session.flush()
        for code in measure.resident_codes:
            protected, until = rules.marker_of(await self.measures_of(session, code), code)
            marker = ProtectionMarker(resident_code=code, municipality_code=self.code, protected=protected, valid_until=until, as_of=datetime.now(UTC))
            enqueue(session, Outbox, destination=self.upward_topic, key=code, kind=marker.kind, payload=marker.model_dump_json())
        return True

    async def measures_of(self, session: AsyncSession, resident_code: str) -> list[SupportMeasure]:
        rows = (await session.execute(select(SupportMeasureRow.payload).join(SupportMeasurePersonRow, SupportMeasurePersonRow.measure_id == SupportMeasureRow.measure_id)
                                      .where(SupportMeasurePersonRow.resident_code == resident_code))).scalars()
        return [SupportMeasure.model_validate_json(p) for p in rows]

    # --- 広域交付: the requesting side ------------------------------------------------------------------------
    async def _home_of(self, request: WideAreaRequest) -> str | None:
        """Where the person is registered now: the national server knows (a network node may ask it)."""
        if request.subject.resident_code is None:
            return request.subject.registered_in
        response = await self.rt.http.get(
            f"{self.rt.settings.peer(NATIONAL_NODE)}/internal/v1/identity/{request.subject.resident_code}/changes", params={"after": 0},
            headers={"authorization": f"Bearer {self.rt.token_for('national')}"},
        )
        response.raise_for_status()
        changes = IdentityChangeBatch.model_validate_json(response.content).changes
        if not changes or changes[-1].status.value not in ("active", "moving_out"):
            return None
        return changes[-1].municipality_code

    async def ask_home(self, request: WideAreaRequest) -> WideAreaAnswer:
        if request.requesting_municipality_code != self.code:
            raise ProblemError(422, "wrong-municipality", "The request is not of this municipality")
        try:
            home = await self._home_of(request)
        except (httpx.HTTPError, ValidationError) as exc:
            raise ProblemError(502, "national-unavailable", "The national server did not answer", str(exc)[:500]) from None
        if home is None or home == self.code or self.topology.municipality(home) is None:
            return WideAreaAnswer(request_id=request.request_id, outcome="not_found")
        try:
            response = await self.rt.http.post(
                f"{self.rt.settings.peer(f'cs_gateway.{home}')}/internal/v1/wide-area-copies", content=request.model_dump_json(),
                headers={"content-type": "application/json", "authorization": f"Bearer {self.rt.token_for(f'cs-{home}')}"},
            )
            response.raise_for_status()
            return WideAreaAnswer.model_validate_json(response.content)
        except (httpx.HTTPError, ValidationError) as exc:
            raise ProblemError(502, "home-municipality-unavailable", "The municipality holding the record did not answer", f"{home}: {str(exc)[:500]}") from None

    # --- 広域交付: the home side -------------------------------------------------------------------------------
    async def answer(self, request: WideAreaRequest, caller: str) -> WideAreaAnswer:
        """Answer another municipality's request from the 本人確認情報 held here, under the same rules as the counter."""
        if caller != f"cs-{request.requesting_municipality_code}" or request.requesting_municipality_code == self.code:
            raise ProblemError(403, "wrong-requesting-municipality", "The request names another requesting municipality than its signer")
        not_found = WideAreaAnswer(request_id=request.request_id, outcome="not_found", home_municipality_code=self.code)
        if request.requester.relation not in (RequesterRelation.self_, RequesterRelation.household_member):
            return not_found  # 広域交付 is for the person and their household only
        async with self.rt.sessions() as session, session.begin():
            person = await self._person(session, request)
            if person is None:
                return not_found
            code = person.resident_code
            measures = await self.measures_of(session, code)
            requester_code = request.requester.resident_code
            same_household = False
            if requester_code is not None:
                households = dict((await session.execute(select(HouseholdMemberRow.resident_code, HouseholdMemberRow.household_id).where(
                    HouseholdMemberRow.resident_code.in_([code, requester_code])))).all())
                same_household = code in households and households.get(requester_code) == households[code]
            decision = rules.decide_request(
                requester=request.requester, measures=measures, subject_found=True, requester_is_subject=requester_code == code,
                requester_in_household=same_household, principal_is_subject_or_household=False,
            )
            if decision.verdict is rules.Verdict.issue:
                outcome, document = "issued", await self._document(session, person, request.type)
            elif decision.verdict is rules.Verdict.refuse:
                outcome, document = "refused", None
            else:
                return not_found  # nothing to review at a distance: the requester asks at the home counter
            await self.moves.take(session, CertificateAttemptNotice(
                attempt_id=request.request_id, municipality_code=self.code, requesting_municipality_code=request.requesting_municipality_code,
                resident_code=code, type=request.type, requester=request.requester, outcome=outcome,
                measure_ids=[uuid.UUID(m) for m in decision.measure_ids], at=datetime.now(UTC),
            ))
        return WideAreaAnswer(request_id=request.request_id, outcome=outcome, document=document, home_municipality_code=self.code)

    async def _person(self, session: AsyncSession, request: WideAreaRequest):
        current = TABLES.current
        stmt = select(current).where(current.municipality_code == self.code, current.status.in_(("active", "moving_out")))
        subject = request.subject
        if subject.resident_code is not None:
            row = (await session.execute(stmt.where(current.resident_code == subject.resident_code))).scalar_one_or_none()
            if row is not None and subject.birth_date is not None and row.birth_date != subject.birth_date:
                return None
            return row
        rows = (await session.execute(stmt.where(current.birth_date == subject.birth_date))).scalars().all()
        matches = [r for r in rows if rules.normalise_name(f"{r.family_name}{r.given_name or ''}") == rules.normalise_name(subject.name)]
        return matches[0] if len(matches) == 1 else None

    async def _document(self, session: AsyncSession, person, certificate_type: CertificateType) -> CertificateDocument:
        """From the 本人確認情報 held here: the items a 広域交付 document carries (no 本籍, no household)."""
        ident = IdentityChange.model_validate_json(person.payload).identity
        entry = dict(name=ident.name, birth_date=ident.birth_date, sex=ident.sex, status=RegistrationStatus(person.status), address=ident.address.text)
        if certificate_type is CertificateType.koseki_fuhyo:
            payloads = (await session.execute(select(TABLES.history.payload).where(TABLES.history.resident_code == person.resident_code)
                                              .order_by(TABLES.history.version))).scalars()
            entry["address_history"] = list(dict.fromkeys(IdentityChange.model_validate_json(p).identity.address.text for p in payloads))
        return CertificateDocument(type=certificate_type, issued_by=self.code, issued_at=datetime.now(UTC), entries=[CertificateEntry(**entry)])

    # --- the online move form ------------------------------------------------------------------------------
    async def prefill(self, submission: OnlineSubmission) -> OnlinePrefill:
        """The filer's household for the move form, verified like a filing; a protected relative is left off."""
        try:
            content = OnlinePrefillRequest.model_validate_json(base64.b64decode(submission.payload))
        except (ValidationError, ValueError) as exc:
            raise ProblemError(422, "invalid-filing", "The signed content is not a pre-fill request", str(exc)[:1000]) from None
        verification: FilingVerification = await self.online._national(
            "POST", "/internal/v1/jpki/verify", FilingVerification,
            SignedFiling(certificate_pem=submission.certificate_pem, payload=submission.payload, signature=submission.signature, purpose=PREFILL_PURPOSE),
        )
        if verification.kind is not CertificateKind.signing:
            raise ProblemError(403, "signing-certificate-required", "The request is signed with the signing certificate (署名用電子証明書)")
        if abs(datetime.now(UTC) - content.filed_at) > FRESHNESS:
            raise ProblemError(422, "outside-online-rules", "The request cannot be accepted online", "the request was signed more than 10 minutes ago; sign it again")
        filer = verification.resident_code
        async with self.rt.sessions() as session:
            me = (await session.execute(select(TABLES.current).where(
                TABLES.current.resident_code == filer, TABLES.current.municipality_code == self.code, TABLES.current.status == "active"))).scalar_one_or_none()
            if me is None:
                raise ProblemError(409, "not-registered-here", "You are not registered in this municipality", "ask the municipality where you are registered")
            household_id = (await session.execute(select(HouseholdMemberRow.household_id).where(HouseholdMemberRow.resident_code == filer))).scalar_one_or_none()
            entries = []
            if household_id is not None:
                entries = HouseholdComposition.model_validate_json((await session.get(HouseholdRow, household_id)).members).members
            codes = [e.resident_code for e in entries]
            people = {r.resident_code: r for r in (await session.execute(select(TABLES.current).where(TABLES.current.resident_code.in_(codes)))).scalars()}
            members = []
            for entry in entries:
                person = people.get(entry.resident_code)
                if person is None or entry.resident_code == filer:
                    continue
                if rules.prefill_hides(filer=filer, member=entry.resident_code, measures=await self.measures_of(session, entry.resident_code)):
                    log.info("pre-fill for %s: a household member under a support measure was left off", filer)
                    continue
                members.append(OnlinePrefillMember(
                    resident_code=person.resident_code, relationship=entry.relationship,
                    name=PersonName(family_name=person.family_name, given_name=person.given_name, family_name_kana=person.family_name_kana, given_name_kana=person.given_name_kana),
                ))
        address = IdentityChange.model_validate_json(me.payload).identity.address
        return OnlinePrefill(filer=filer, address=address, members=members)

    # --- HTTP --------------------------------------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter(tags=["dv"])
        from_own_rrs = bearer_verifier(self.rt.keys, audience=self.rt.party, allowed_issuers=lambda party: party == f"rrs-{self.code}")
        from_other_cs = bearer_verifier(self.rt.keys, audience=self.rt.party,
                                        allowed_issuers=lambda party: party.startswith("cs-") and party != f"cs-{self.code}" and self.topology.municipality(party[3:]) is not None)

        @router.post("/v1/rrs/wide-area-copies", response_model=WideAreaAnswer, dependencies=[Depends(from_own_rrs)])
        async def wide_area_for_rrs(request: WideAreaRequest) -> WideAreaAnswer:
            """広域交付 asked at this municipality's counter: the home municipality's CS answers."""
            return await self.ask_home(request)

        @router.post("/internal/v1/wide-area-copies", response_model=WideAreaAnswer)
        async def wide_area(request: WideAreaRequest, token: Annotated[VerifiedToken, Depends(from_other_cs)]) -> WideAreaAnswer:
            """Another municipality asks for a copy of a person registered here (本人・同一世帯); the same rules as the counter apply."""
            return await self.answer(request, token.issuer)

        @router.post("/v1/online/household-prefill", response_model=OnlinePrefill, tags=["online"])
        async def prefill(submission: OnlineSubmission, request: Request) -> OnlinePrefill:
            """Your household for the online move form, signed with your card like a filing (protected relatives are left off)."""
            request.state.caller = "resident-online"
            return await self.prefill(submission)

        return router
