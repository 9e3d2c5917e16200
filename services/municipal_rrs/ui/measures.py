"""The staff screens' side of DV等支援措置 (R-DV-2): views of measures and alerts, and the calls into
:mod:`services.municipal_rrs.dv` the screens make — the same functions the register's JSON API uses.

A certificate at the counter follows the JSON route's counter path
(evaluate → issue, or record it for review — a perpetrator's request too,
marked refused by the rules — every attempt recorded); the counter screen
shows one sentence for everything not issued, so the clerk's screen tells the
requester nothing either: the refusal is in the review queue and raised as an
alert.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.dv import (
    AlertKind, CertificateDocument, CertificateRequest, CertificateSubject, CertificateType, DecisionOutcome, MeasureStatus, Perpetrator,
    PersonIdentification, RequestChannel, RequestState, Requester, ReviewDecision, SupportMeasure, SupportMeasureApplication,
    SupportMeasureCancellation, SupportMeasureDecision, SupportMeasureExtension,
)
from contracts.register import ResidentRecord
from services.common import dv_rules as rules
from services.common.dv_rules import MeasureRuleViolation
from services.municipal_rrs import dv, service
from services.municipal_rrs.models import CertificateRequestRow, ResidentRow
from services.municipal_rrs.ui import labels
from services.municipal_rrs.ui.forms import Form, japanese_errors

REQUESTERS = list(labels.REQUESTER_RELATION.items())
ACTIONS = ("decision", "extension", "cancellation")
#: alerts that flash at the top of every screen until a clerk acknowledges them
BANNER_KINDS = (AlertKind.measure_received, AlertKind.request_refused)
MAX_PERPETRATOR_ROWS = 3


@dataclass
class MeasureView:
    id: str
    kind_label: str
    status_label: str
    valid_from: date | None
    valid_until: date | None
    origin: str | None  # "…から受信" for a measure another municipality carries
    perpetrators: str
    protected: str
    victim_code: str
    measure: SupportMeasure | None  # None: a protection restored from the network's marker (details lost)
    restored: bool = False


@dataclass
class AlertView:
    id: str
    kind: str
    kind_label: str
    measure_id: str | None
    resident_code: str
    summary: str
    raised_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    on_register: bool  # False at the 本籍地 or a previous address: there is no 住民票 here to open


@dataclass
class Outcome:
    issued: bool
    status: int = 200
    errors: list[str] = field(default_factory=list)
    document: CertificateDocument | None = None
    request_id: uuid.UUID | None = None
    requester: Requester | None = None


def _names(measure: SupportMeasure) -> str:
    return "、".join(f"{p.name.family_name} {p.name.given_name or ''}".strip() for p in measure.protected)


def view(measure: SupportMeasure, *, municipality_code: str | None = None, municipality_label=None) -> MeasureView:
    home = measure.home_municipality_code
    origin = None
    if municipality_code is not None and home != municipality_code:
        origin = f"{municipality_label(home) if municipality_label else home}から受信"
    return MeasureView(
        id=str(measure.measure_id), kind_label=labels.label(labels.MEASURE_KIND, measure.kind), status_label=labels.label(labels.MEASURE_STATUS, measure.status),
        valid_from=measure.valid_from, valid_until=measure.valid_until, origin=origin,
        perpetrators="、".join(p.name for p in measure.perpetrators), protected=_names(measure), victim_code=measure.victim_code, measure=measure,
    )


def restored_view(row) -> MeasureView:
    """A protection the disaster-recovery drill restored from the network's marker: staff see it like a measure in force,
    and are told that its details (kind, 相手方) must be re-entered."""
    return MeasureView(
        id=f"restored:{row.resident_code}", kind_label="ネットワークの保護マーカーから復元（措置の内容は再入力が必要）", status_label="復元",
        valid_from=None, valid_until=row.valid_until, origin=None, perpetrators="", protected=row.resident_code, victim_code=row.resident_code,
        measure=None, restored=True,
    )


class Measures:
    """Bound to one municipality (for the labels of where a measure comes from)."""

    def __init__(self, *, municipality_code: str, municipality_label, known_municipality):
        self.municipality_code = municipality_code
        self.municipality_label = municipality_label
        self.known_municipality = known_municipality

    def view(self, measure: SupportMeasure) -> MeasureView:
        return view(measure, municipality_code=self.municipality_code, municipality_label=self.municipality_label)

    # --- reading ------------------------------------------------------------------------------------------

    async def in_force(self, session: AsyncSession, resident_code: str) -> list[MeasureView]:
        """What the record's alert shows: measures applied for or decided, own or received, and a protection restored
        from the network's marker after a disaster."""
        views = [self.view(m) for m in await dv.active_measures(session, resident_code)]
        if (restored := await dv.restored_protection(session, resident_code)) is not None:
            views.append(restored_view(restored))
        return views

    async def of_resident(self, session: AsyncSession, resident_code: str) -> list[MeasureView]:
        return [self.view(m) for m in await dv.measures_of(session, resident_code)]

    async def protected_codes(self, session: AsyncSession, codes: list[str]) -> set[str]:
        return {code for code in codes if await dv.active_measures(session, code)} | set(await dv.restored_protections(session, codes))

    def _alert_summary(self, alert, measure: SupportMeasure | None) -> str:
        """The alert in Japanese, from the measure itself (the stored summary is for the JSON API)."""
        if alert.kind is AlertKind.measure_received and measure is not None:
            until = f"、{labels.wareki(measure.valid_until)}まで" if measure.valid_until else ""
            return (f"{self.municipality_label(measure.home_municipality_code)}から支援措置「{labels.label(labels.MEASURE_KIND, measure.kind)}」を受信しました："
                    f"{_names(measure)}（{labels.label(labels.MEASURE_STATUS, measure.status)}{until}）。"
                    f"最終手続：{labels.label(labels.MEASURE_ACTION, measure.history[-1].action)}")
        if alert.kind is AlertKind.request_refused:
            return f"支援措置対象者（住民票コード {alert.resident_code}）について、加害者として申出のあった者からの交付請求がありました（拒否済み）。"
        if alert.kind is AlertKind.expiring and measure is not None and measure.valid_until:
            return f"{_names(measure)}の支援措置は{labels.wareki(measure.valid_until)}に期間満了となります。延長の意向を確認してください。"
        if alert.kind is AlertKind.delivery_failed:
            return f"支援措置の送付先が受信を確認していません（{alert.summary}）。"
        return alert.summary

    async def _alert_views(self, session: AsyncSession, alerts) -> list[AlertView]:
        out = []
        for a in alerts:
            measure = None
            if a.measure_id is not None:
                try:
                    measure = await dv.get_measure(session, a.measure_id)
                except dv.MeasureNotFound:
                    measure = None
            out.append(AlertView(id=str(a.alert_id), kind=a.kind.value, kind_label=labels.label(labels.ALERT_KIND, a.kind),
                                 measure_id=str(a.measure_id) if a.measure_id else None, resident_code=a.resident_code,
                                 summary=self._alert_summary(a, measure), raised_at=a.raised_at, acknowledged_by=a.acknowledged_by, acknowledged_at=a.acknowledged_at,
                                 on_register=await session.get(ResidentRow, a.resident_code) is not None))
        return out

    async def unacknowledged_alerts(self, session: AsyncSession) -> list[AlertView]:
        """Measures received from other municipalities (and refused perpetrator requests) nobody acknowledged yet: on every screen."""
        alerts, shown = [], set()
        for a in await dv.alerts(session, include_closed=False):  # newest first
            if a.kind not in BANNER_KINDS or a.acknowledged_at is not None:
                continue
            if a.kind is AlertKind.measure_received:  # one banner per measure: its newest revision
                if a.measure_id in shown:
                    continue
                shown.add(a.measure_id)
            alerts.append(a)
        return await self._alert_views(session, alerts)

    async def received_alerts(self, session: AsyncSession) -> list[AlertView]:
        alerts = [a for a in await dv.alerts(session, include_closed=True) if a.kind is AlertKind.measure_received]
        return await self._alert_views(session, alerts[:100])

    async def acknowledge_alert(self, session: AsyncSession, alert_id: str, *, staff: str) -> bool:
        """The clerk saw the banner: for a received measure that covers every revision still unacknowledged (it showed the newest)."""
        try:
            seen = await dv.acknowledge_alert(session, uuid.UUID(alert_id), staff=staff, municipality_code=self.municipality_code,
                                              known_municipality=self.known_municipality)
        except (ValueError, dv.AlertNotFound):
            return False
        if seen.kind is AlertKind.measure_received and seen.measure_id is not None:
            for other in await dv.alerts(session, include_closed=False, resident_code=seen.resident_code):
                if other.kind is AlertKind.measure_received and other.measure_id == seen.measure_id and other.acknowledged_at is None:
                    await dv.acknowledge_alert(session, other.alert_id, staff=staff, municipality_code=self.municipality_code,
                                               known_municipality=self.known_municipality)
        return True

    async def list_page(self, session: AsyncSession, *, status: str | None, expiring_within_days: str | None, today: date) -> dict:
        chosen = MeasureStatus(status) if status in MeasureStatus._value2member_map_ else None
        days = int(expiring_within_days) if (expiring_within_days or "").isdigit() and int(expiring_within_days) <= 366 else None
        found = await dv.list_measures(session, status=chosen, expiring_within_days=days, today=today)
        reminders = [a for a in await dv.alerts(session, include_closed=False) if a.kind in (AlertKind.expiring, AlertKind.delivery_failed)]
        return {"measures": [self.view(m) for m in found], "status_filter": status or "", "expiring_within_days": days,
                "reminders": await self._alert_views(session, reminders),
                "statuses": labels.MEASURE_STATUS, "kinds": labels.MEASURE_KIND, "bases": labels.MEASURE_BASIS}

    # --- the lifecycle --------------------------------------------------------------------------------------

    async def _step(self, session: AsyncSession, work) -> list[str]:
        """One step in one transaction; errors come back as lines for the clerk."""
        try:
            async with session.begin():
                await work()
        except ValidationError as exc:
            return japanese_errors(exc)
        except MeasureRuleViolation as exc:
            return [f"支援措置の規則により受け付けられません: {exc}"]
        except dv.MeasureNotFound:
            return ["その支援措置はありません。"]
        except service.NotFound as exc:
            return [f"住民票コード {exc} の住民票はありません。"]
        dv.WAKEUP.set()
        return []

    async def apply(self, session: AsyncSession, form: Form, *, staff: str) -> list[str]:
        def application() -> SupportMeasureApplication:
            perpetrators = []
            for i in range(1, MAX_PERPETRATOR_ROWS + 1):
                if form.get(f"perpetrator_name_{i}"):
                    perpetrators.append(Perpetrator(name=form.get(f"perpetrator_name_{i}"), name_kana=form.get(f"perpetrator_kana_{i}"),
                                                    birth_date=form.get(f"perpetrator_birth_date_{i}"), address=form.get(f"perpetrator_address_{i}")))
            family = [c for c in (form.get("family") or "").replace("、", ",").replace(" ", ",").split(",") if c]
            return SupportMeasureApplication(
                victim=form.get("victim"), family=family, kind=form.get("kind"), basis=form.get("basis"), basis_issuer=form.get("basis_issuer"),
                basis_reference=form.get("basis_reference"), perpetrators=perpetrators, honseki_municipality_code=form.get("honseki_municipality_code"),
                applied_on=form.get("applied_on"), note=form.get("note"),
            )

        async def work():
            await dv.apply(session, application(), municipality_code=self.municipality_code, staff=staff, today=date.today())

        return await self._step(session, work)

    async def act(self, session: AsyncSession, measure_id: str, action: str, form: Form, *, staff: str) -> list[str]:
        try:
            mid = uuid.UUID(measure_id)
        except ValueError:
            return ["その支援措置はありません。"]

        async def work():
            if action == "decision":
                body = SupportMeasureDecision(outcome=form.get("outcome") or DecisionOutcome.approve, valid_from=form.get("valid_from"), explanation=form.get("explanation"))
                await dv.decide(session, mid, body, municipality_code=self.municipality_code, staff=staff, today=date.today())
            elif action == "extension":
                body = SupportMeasureExtension(basis=form.get("basis"), basis_issuer=form.get("basis_issuer"), basis_reference=form.get("basis_reference"),
                                               note=form.get("note"))
                await dv.extend(session, mid, body, municipality_code=self.municipality_code, staff=staff, today=date.today())
            else:
                measure = await dv.get_measure(session, mid)
                body = SupportMeasureCancellation(requested_by=measure.victim_code, explanation=form.get("explanation"))
                await dv.cancel(session, mid, body, municipality_code=self.municipality_code, staff=staff)

        return await self._step(session, work)

    # --- 住民票の写し at the counter --------------------------------------------------------------------------

    @staticmethod
    def requester_from(form: Form, record: ResidentRecord) -> Requester:
        """The requester as the clerk checked them against an identity document; 本人 is the record itself."""
        relation = form.get("relation") or "self"
        if relation == "self":
            return Requester(relation="self", name=f"{record.name.family_name}{record.name.given_name or ''}", birth_date=record.birth_date,
                             resident_code=record.resident_code)
        principal = None
        if relation == "agent":
            principal = PersonIdentification(name=f"{record.name.family_name}{record.name.given_name or ''}", birth_date=record.birth_date,
                                             resident_code=record.resident_code)
        return Requester(
            relation=relation, name=form.get("requester_name"), name_kana=form.get("requester_kana"), birth_date=form.get("requester_birth_date"),
            address=form.get("requester_address"), resident_code=form.get("requester_resident_code") if relation == "household_member" else None,
            principal=principal, organisation=form.get("organisation") if relation == "third_party" else None, purpose=form.get("purpose"),
        )

    async def request_certificate(self, session: AsyncSession, *, record: ResidentRecord, form: Form, staff: str) -> Outcome:
        """The counter path of POST /v1/certificate-requests, for a record of this register."""
        try:
            requester = self.requester_from(form, record)
            request = CertificateRequest(type=CertificateType.juminhyo_copy, subject=CertificateSubject(resident_code=record.resident_code), requester=requester)
        except ValidationError as exc:
            return Outcome(issued=False, status=422, errors=japanese_errors(exc))
        evaluation = await dv.evaluate(session, request)
        request_id = uuid.uuid4()
        state = rules.state_after_request(evaluation.decision, wide_area=False)  # a record of this register: never 広域交付
        if state is RequestState.issued:
            document = await dv.document_for(session, evaluation.subject, request.type, municipality_code=self.municipality_code)
            await dv.record_request(session, evaluation, state=state, channel=RequestChannel.counter, staff=staff,
                                    reason=evaluation.decision.reason, document=document, request_id=request_id)
            return Outcome(issued=True, document=document, request_id=request_id, requester=requester)
        await dv.record_request(session, evaluation, state=state, channel=RequestChannel.counter, staff=staff,
                                reason=evaluation.decision.reason, request_id=request_id)
        if state is RequestState.refusal_pending:
            await dv.raise_refusal_alerts(session)  # the banner at once (staff only; the screen says the same as for any review)
        return Outcome(issued=False, status=202, request_id=request_id, errors=[f"この請求は審査が必要です（受付番号 {request_id}）。結果は審査の後にお知らせします。"])

    async def issued(self, session: AsyncSession, request_id: str, *, staff: str) -> tuple[Outcome, str] | None:
        """A document this clerk issued (to print it again after the redirect), with its subject; None for anything else."""
        try:
            row = await session.get(CertificateRequestRow, uuid.UUID(request_id))
        except ValueError:
            return None
        if row is None or row.state != RequestState.issued.value or row.document is None or staff not in (row.handled_by, row.decided_by) or row.subject_code is None:
            return None
        outcome = Outcome(issued=True, document=CertificateDocument.model_validate_json(row.document), request_id=row.id,
                          requester=Requester.model_validate_json(row.requester))
        return outcome, row.subject_code

    async def review_queue(self, session: AsyncSession):
        return await dv.review_queue(session)

    async def decide_review(self, session: AsyncSession, request_id: str, form: Form, *, staff: str) -> tuple[list[str], str | None]:
        """A reviewer issues or refuses; the rules refuse issuing a protected person's record, whoever reviews it."""
        try:
            body = ReviewDecision(decision=form.get("decision"), reason=form.get("reason"))
            async with session.begin():
                row = await dv.decide_review(session, uuid.UUID(request_id), decision=body.decision, reason=body.reason, staff=staff,
                                             municipality_code=self.municipality_code)
                state = row.state
        except ValidationError as exc:
            return japanese_errors(exc), None
        except (ValueError, dv.RequestNotFound):
            return ["その請求はありません。"], None
        except MeasureRuleViolation as exc:
            return [f"交付できません: {exc}"], None
        return [], state

    async def requests_about(self, session: AsyncSession, resident_code: str):
        return await dv.requests_about(session, resident_code)
