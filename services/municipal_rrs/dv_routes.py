"""HTTP edge of DV等支援措置 at the register (counter staff and back office), and its housekeeping loop.

Each step of a measure and each certificate request records the member of
staff who handled it, as authenticated by ``access.authorize``; deciding,
extending and ending a measure are a supervisor's (``access.ACCESS``). A
certificate request is answered with the document, or "under review" (202)
— byte for byte the same, apart from the request id, for a perpetrator's
request, a request about nobody, about a protected person or about someone
living elsewhere; the difference is only in the register's own records and
review queue. A 広域交付 asks the home municipality after the answer went out.
"""


import asyncio
import logging
import uuid
from datetime import UTC, date, datetime
from typing import Annotated

import httpx
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from contracts.identifiers import ResidentCode
from contracts.dv import (
    CertificateRequest, CertificateRequestOutcome, CertificateRequestView, MeasureDelivery, MeasureStatus,
    ReviewDecision, SupportMeasure, SupportMeasureAlert, SupportMeasureApplication, SupportMeasureCancellation, SupportMeasureDecision,
    SupportMeasureExtension, WideAreaAnswer, WideAreaRequest,
)
from services.common.dv_rules import Answer, MeasureRuleViolation
from services.common.outbox import poll_forever
from services.common.problems import ProblemError
from services.municipal_rrs import dv, service
from services.municipal_rrs.request_deps import StaffDep

log = logging.getLogger(__name__)


def not_issued() -> ProblemError:
    """The one answer for a request closed without a document, whatever the reason (no record, a reviewer's refusal,
    the DV rules' refusal); the reasons go to the requester in writing, never through this answer."""
    return ProblemError(404, "not-issued", "No document is issued", "the request did not lead to a document")


def under_review(request_id: uuid.UUID) -> JSONResponse:
    """The one answer for a request not issued at once, whatever the reason."""
    body = CertificateRequestOutcome(request_id=request_id, state="under_review")
    return JSONResponse(status_code=202, content=body.model_dump(mode="json"))


#: 広域交付 asks running in the background (held so that they are not collected before they finish)
_ASKING: set[asyncio.Task] = set()
#: the ask starts after this pause, so the requester's answer leaves first
ASK_AFTER_SECONDS = 0.01


def in_background(work) -> None:
    """Run ``work()`` detached from the request: not a response background task, which would hold a kept-alive
    connection — and the requester's next request on it — until the home answered."""
    async def later():
        await asyncio.sleep(ASK_AFTER_SECONDS)
        await work()

    task = asyncio.get_running_loop().create_task(later())
    _ASKING.add(task)
    task.add_done_callback(_ASKING.discard)


def _rule(exc: MeasureRuleViolation) -> ProblemError:
    return ProblemError(409, "support-measure-rule", "The step breaks a rule of the support measure", str(exc))


def home_asker(rt, municipality_code: str):
    """``ask_home(request, request_id)`` for :func:`services.municipal_rrs.dv.request_certificate`: 広域交付 through the own CS."""
    cs_node, cs_party = f"cs_gateway.{municipality_code}", f"cs-{municipality_code}"

    async def ask_home(request: CertificateRequest, request_id: uuid.UUID) -> WideAreaAnswer | None:
        """広域交付: the own CS finds the home municipality and asks its CS, which applies the same rules."""
        body = WideAreaRequest(request_id=request_id, requesting_municipality_code=municipality_code, type=request.type, subject=request.subject,
                               requester=request.requester, requested_at=datetime.now(UTC))
        try:
            response = await rt.http.post(
                f"{rt.settings.peer(cs_node)}/v1/rrs/wide-area-copies", content=body.model_dump_json(),
                headers={"content-type": "application/json", "authorization": f"Bearer {rt.token_for(cs_party)}"},
            )
            if response.status_code != 200:
                log.warning("広域交付 %s: the own CS answered %s: %s", request_id, response.status_code, response.text[:500])
                return None
            return WideAreaAnswer.model_validate_json(response.content)
        except (httpx.HTTPError, ValidationError) as exc:
            log.warning("広域交付 %s: the home municipality could not be asked: %s", request_id, exc)
            return None

    return ask_home


def dv_router(rt, *, municipality_code: str, relay, known_municipality) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["dv"])


    async def change(work) -> SupportMeasure:
        """One lifecycle step in one transaction; its messages leave after the commit."""
        try:
            async with rt.sessions() as session, session.begin():
                measure = await work(session)
        except MeasureRuleViolation as exc:
            raise _rule(exc) from None
        except dv.MeasureNotFound:
            raise ProblemError(404, "not-found", "No such support measure") from None
        except service.NotFound as exc:
            raise ProblemError(404, "not-found", "No such record", f"no resident {exc} in this municipality") from None
        relay.wakeup.set()
        dv.WAKEUP.set()
        return measure

    # --- the measure's lifecycle ------------------------------------------------------------------------------
    @router.post("/support-measures", status_code=201, response_model=SupportMeasure)
    async def apply(body: SupportMeasureApplication, staff: StaffDep) -> SupportMeasure:
        """支援措置申出: the victim (and co-resident family) are protected at every counter from now on."""
        return await change(lambda s: dv.apply(s, body, municipality_code=municipality_code, staff=staff, today=date.today()))

    @router.post("/support-measures/{measure_id}/decision", response_model=SupportMeasure)
    async def decide(measure_id: uuid.UUID, body: SupportMeasureDecision, staff: StaffDep) -> SupportMeasure:
        """Approve (one year from valid_from) or refuse an application."""
        return await change(lambda s: dv.decide(s, measure_id, body, municipality_code=municipality_code, staff=staff, today=date.today()))

    @router.post("/support-measures/{measure_id}/extension", response_model=SupportMeasure)
    async def extend(measure_id: uuid.UUID, body: SupportMeasureExtension, staff: StaffDep) -> SupportMeasure:
        """延長: from one month before the measure ends, one more year."""
        return await change(lambda s: dv.extend(s, measure_id, body, municipality_code=municipality_code, staff=staff, today=date.today()))

    @router.post("/support-measures/{measure_id}/cancellation", response_model=SupportMeasure)
    async def cancel(measure_id: uuid.UUID, body: SupportMeasureCancellation, staff: StaffDep) -> SupportMeasure:
        """終了: at the victim's request only."""
        return await change(lambda s: dv.cancel(s, measure_id, body, municipality_code=municipality_code, staff=staff))

    @router.get("/support-measures", response_model=list[SupportMeasure])
    async def list_measures(status: MeasureStatus | None = None, expiring_within_days: Annotated[int | None, Query(ge=0, le=366)] = None) -> list[SupportMeasure]:
        """Measures held here (carried here or received); ``expiring_within_days`` lists active ones ending soon (reminders)."""
        async with rt.sessions() as session:
            return await dv.list_measures(session, status=status, expiring_within_days=expiring_within_days, today=date.today())

    @router.get("/support-measures/{measure_id}", response_model=SupportMeasure)
    async def get_measure(measure_id: uuid.UUID) -> SupportMeasure:
        async with rt.sessions() as session:
            try:
                return await dv.get_measure(session, measure_id)
            except dv.MeasureNotFound:
                raise ProblemError(404, "not-found", "No such support measure") from None

    @router.get("/support-measures/{measure_id}/deliveries", response_model=list[MeasureDelivery])
    async def deliveries(measure_id: uuid.UUID) -> list[MeasureDelivery]:
        """Where each revision went, whether it was acknowledged and seen by staff there."""
        async with rt.sessions() as session:
            try:
                return await dv.deliveries(session, measure_id)
            except dv.MeasureNotFound:
                raise ProblemError(404, "not-found", "No such support measure") from None

    @router.get("/residents/{resident_code}/support-measures", response_model=list[SupportMeasure])
    async def resident_measures(resident_code: ResidentCode) -> list[SupportMeasure]:
        """Every measure protecting this person held here, including ones other municipalities sent (the 本籍地 has no record of them)."""
        async with rt.sessions() as session:
            return await dv.measures_of(session, resident_code)

    # --- alerts (R-DV-2) ----------------------------------------------------------------------------------------
    @router.get("/support-measure-alerts", response_model=list[SupportMeasureAlert])
    async def alerts(include_closed: bool = False, resident_code: ResidentCode | None = None) -> list[SupportMeasureAlert]:
        """Open alerts, newest first: measures received, deliveries not acknowledged, expiry reminders, refused requests."""
        async with rt.sessions() as session:
            return await dv.alerts(session, include_closed=include_closed, resident_code=resident_code)

    @router.post("/support-measure-alerts/{alert_id}/acknowledgement", response_model=SupportMeasureAlert)
    async def acknowledge(alert_id: uuid.UUID, staff: StaffDep) -> SupportMeasureAlert:
        """Staff saw it (the home of a received measure hears who); a failed delivery stays open until it is delivered."""
        try:
            async with rt.sessions() as session, session.begin():
                view = await dv.acknowledge_alert(session, alert_id, staff=staff, municipality_code=municipality_code, known_municipality=known_municipality)
        except dv.AlertNotFound:
            raise ProblemError(404, "not-found", "No such alert") from None
        relay.wakeup.set()
        return view

    # --- certificate requests -----------------------------------------------------------------------------------
    ask_home = home_asker(rt, municipality_code)

    @router.post("/certificate-requests", status_code=201, response_model=CertificateRequestOutcome, responses={202: {"model": CertificateRequestOutcome}})
    async def request_certificate(body: CertificateRequest, staff: StaffDep) -> CertificateRequestOutcome:
        """住民票の写し, 除票, 戸籍の附票の写し or 閲覧: issued (201) to the person or their household when the record is here,
        otherwise "under review" (202) — for every third party, a perpetrator (refused out of band, in the review queue),
        a request about nobody, and a 広域交付 (asked of the home after this answer; its outcome at
        ``/certificate-requests/{id}/outcome``). Every attempt is recorded."""
        result = await dv.request_certificate(rt.sessions, body, staff=staff, municipality_code=municipality_code)
        relay.wakeup.set()
        if result.answer is Answer.issued:
            return CertificateRequestOutcome(request_id=result.request_id, state="issued", document=result.document)
        if result.asks_home:  # after the answer went out: how far the question travels never shows in its time
            in_background(lambda: complete_wide_area(result.request_id, body))
        return under_review(result.request_id)

    async def complete_wide_area(request_id: uuid.UUID, body: CertificateRequest) -> None:
        try:
            await dv.complete_wide_area(rt.sessions, request_id, body, ask_home=ask_home)
        except Exception:  # the row stays asking_home; housekeeping asks again
            log.exception("広域交付 %s: completing in the background failed", request_id)
        relay.wakeup.set()

    @router.get("/certificate-requests/{request_id}", response_model=CertificateRequestView)
    async def certificate_request(request_id: uuid.UUID) -> CertificateRequestView:
        """Staff view of one request: what was asked, by whom, what was decided and why."""
        from services.municipal_rrs.models import CertificateRequestRow

        async with rt.sessions() as session:
            row = await session.get(CertificateRequestRow, request_id)
        if row is None:
            raise ProblemError(404, "not-found", "No such request")
        return dv.request_view(row)

    @router.get("/certificate-requests/{request_id}/outcome", response_model=CertificateRequestOutcome, responses={202: {"model": CertificateRequestOutcome}})
    async def outcome(request_id: uuid.UUID) -> CertificateRequestOutcome:
        """What the requester is told now: the document, still under review (202), or one "not issued" problem (404) for
        every request closed without a document — and for an unknown request id."""
        from contracts.dv import CertificateDocument
        from services.municipal_rrs.models import CertificateRequestRow

        async with rt.sessions() as session:
            row = await session.get(CertificateRequestRow, request_id)
        answer = dv.requester_answer(row) if row is not None else Answer.not_issued
        if answer is Answer.issued:
            return CertificateRequestOutcome(request_id=row.id, state="issued", document=CertificateDocument.model_validate_json(row.document))
        if answer is Answer.under_review:
            return under_review(row.id)
        raise not_issued()

    @router.get("/certificate-review-queue", response_model=list[CertificateRequestView])
    async def review_queue() -> list[CertificateRequestView]:
        """Requests waiting for a reviewer: those about protected persons first (strict review)."""
        async with rt.sessions() as session:
            return await dv.review_queue(session)

    @router.post("/certificate-review-queue/{request_id}/decision", response_model=CertificateRequestView)
    async def review(request_id: uuid.UUID, body: ReviewDecision, staff: StaffDep) -> CertificateRequestView:
        """Issue or refuse a reviewed request; a protected person's record is never issued to a third party."""
        try:
            async with rt.sessions() as session, session.begin():
                row = await dv.decide_review(session, request_id, decision=body.decision, reason=body.reason, staff=staff, municipality_code=municipality_code)
                return dv.request_view(row)
        except dv.RequestNotFound:
            raise ProblemError(404, "not-found", "No such request") from None
        except MeasureRuleViolation as exc:
            raise ProblemError(409, "review-refused", "The decision is not allowed", str(exc)) from None

    @router.get("/residents/{resident_code}/certificate-requests", response_model=list[CertificateRequestView])
    async def requests_about(resident_code: ResidentCode) -> list[CertificateRequestView]:
        """Every request about this person, here and (広域交付) at other municipalities, refusals included, newest first."""
        async with rt.sessions() as session:
            return await dv.requests_about(session, resident_code)

    return router


def dv_housekeeping(rt, *, municipality_code: str, relay, known_municipality):
    """The loop that expires measures, reminds staff of expiries, sends (again) what was not acknowledged and asks the home
    again for a 広域交付 whose background ask was interrupted."""

    ask_home = home_asker(rt, municipality_code)

    async def once() -> int:
        today, now = date.today(), datetime.now(UTC)
        async with rt.sessions() as session, session.begin():
            expired = await dv.expire_due(session, municipality_code=municipality_code, today=today)
            await dv.remind_due(session, today=today)
            sent = await dv.send_due(session, municipality_code=municipality_code, known_municipality=known_municipality, now=now)
            interrupted = await dv.stale_wide_area(session, now=now)
            await dv.raise_refusal_alerts(session)  # a perpetrator's request: raised here, outside the request's own work
        for request_id, request in interrupted:  # a 広域交付 whose background ask did not finish (e.g. a restart)
            await dv.complete_wide_area(rt.sessions, request_id, request, ask_home=ask_home)
        if expired or sent or interrupted:
            relay.wakeup.set()
        return expired + sent + len(interrupted)

    async def forever() -> None:
        await poll_forever(once, wakeup=dv.WAKEUP, idle_seconds=1.0, what="support-measure housekeeping")

    return forever

