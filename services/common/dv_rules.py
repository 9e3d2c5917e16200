"""Rules of DV等支援措置, pure (no I/O): lifecycle, who may receive what, propagation and provision.

Used by the register (lifecycle, certificate requests, online proxies), the
CS (広域交付 answers, the online pre-fill, protection markers) and the
prefecture and national servers (what an agency receives about a protected
person). Each rule states its reason in its docstring; docs/dv.md has the
whole picture.
"""

from __future__ import annotations

import calendar
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from contracts.affairs import Item
from contracts.dv import (
    IN_FORCE, DeliveryRole, MeasureAction, MeasureBasis, MeasureStatus, MeasureStep, PersonIdentification, Perpetrator,
    RequestState, Requester, RequesterRelation, SupportMeasure,
)


class MeasureRuleViolation(Exception):
    """A lifecycle step is not allowed now; nothing is written."""


#: staff are reminded this long before a measure expires, so the victim can file an extension in time
REMINDER_DAYS = 30
#: an unacknowledged delivery is sent again after this long, then after twice as long, … up to RETRY_MAX
RETRY_FIRST = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=1)


# --- dates -----------------------------------------------------------------------------------------------


def _add_months(day: date, months: int) -> date:
    """The same day ``months`` later (or earlier), clamped to the month's last day (1/31 + 1 month = 2/28)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def period_end(valid_from: date) -> date:
    """The last day of a one-year period starting on ``valid_from`` (4/1 → next 3/31)."""
    return _add_months(valid_from, 12) - timedelta(days=1)


def extension_opens_on(valid_until: date) -> date:
    """An extension may be filed from one month before the measure ends (事務処理要領: 期間終了の1か月前から)."""
    return _add_months(valid_until, -1)


def extended_until(valid_until: date) -> date:
    """An extension continues the measure for one more year, without a gap or an overlap."""
    return period_end(valid_until + timedelta(days=1))


def is_due_to_expire(measure: SupportMeasure, today: date) -> bool:
    """An active measure whose last day has passed ends now (the home's housekeeping expires it)."""
    return measure.status is MeasureStatus.active and measure.valid_until is not None and measure.valid_until < today


def needs_reminder(measure: SupportMeasure, today: date, *, days: int = REMINDER_DAYS) -> bool:
    """Staff are reminded ahead of expiry, so that the victim is asked whether to extend (Denmark CPR does the same)."""
    return measure.status is MeasureStatus.active and measure.valid_until is not None and today <= measure.valid_until <= today + timedelta(days=days)


def in_force(measure: SupportMeasure) -> bool:
    """Applied or active: the counter protects the person from the application on, since leaks happen in the gap."""
    return measure.status in IN_FORCE


# --- lifecycle (each step returns the next revision; the caller stores it) ---------------------------------


def _step(measure: SupportMeasure, action: MeasureAction, *, by: str, at: datetime, municipality_code: str, note: str | None = None, **changes) -> SupportMeasure:
    step = MeasureStep(action=action, by=by, at=at, municipality_code=municipality_code, note=note)
    return SupportMeasure.model_validate({
        **measure.model_dump(), **changes, "revision": measure.revision + 1, "history": [*measure.model_dump()["history"], step.model_dump()],
    })


def _must_be_home(measure: SupportMeasure, municipality_code: str) -> None:
    if measure.home_municipality_code != municipality_code:
        raise MeasureRuleViolation(f"the measure is carried by {measure.home_municipality_code}; only that municipality changes it")


def approve(measure: SupportMeasure, *, valid_from: date, today: date, by: str, at: datetime, municipality_code: str, note: str | None = None) -> SupportMeasure:
    """支援措置の実施: one year from ``valid_from``, which is neither before the application nor in the future."""
    _must_be_home(measure, municipality_code)
    if measure.status is not MeasureStatus.applied:
        raise MeasureRuleViolation(f"the measure is {measure.status.value}; only an application is decided")
    if valid_from > today:
        raise MeasureRuleViolation("a measure is decided when it starts, not ahead of time")
    if valid_from < measure.applied_on:
        raise MeasureRuleViolation("a measure cannot start before it was applied for")
    return _step(measure, MeasureAction.approved, by=by, at=at, municipality_code=municipality_code, note=note,
                 status=MeasureStatus.active, valid_from=valid_from, valid_until=period_end(valid_from))


def refuse(measure: SupportMeasure, *, by: str, at: datetime, municipality_code: str, note: str) -> SupportMeasure:
    _must_be_home(measure, municipality_code)
    if measure.status is not MeasureStatus.applied:
        raise MeasureRuleViolation(f"the measure is {measure.status.value}; only an application is decided")
    return _step(measure, MeasureAction.refused, by=by, at=at, municipality_code=municipality_code, note=note, status=MeasureStatus.refused)


def extension_refusal(measure: SupportMeasure, filed_on: date) -> str | None:
    """Why an extension cannot be filed now, or None."""
    if measure.status is not MeasureStatus.active or measure.valid_until is None:
        return f"only an active measure is extended (this one is {measure.status.value}); apply anew"
    opens = extension_opens_on(measure.valid_until)
    if filed_on < opens:
        return f"an extension can be filed from {opens.isoformat()} (one month before the measure ends on {measure.valid_until.isoformat()})"
    if filed_on > measure.valid_until:
        return "the measure has ended; apply anew"
    return None


def extend(measure: SupportMeasure, *, filed_on: date, basis: MeasureBasis, basis_issuer: str, basis_reference: str | None, by: str, at: datetime,
           municipality_code: str, note: str | None = None) -> SupportMeasure:
    _must_be_home(measure, municipality_code)
    if refusal := extension_refusal(measure, filed_on):
        raise MeasureRuleViolation(refusal)
    until = extended_until(measure.valid_until)
    return _step(measure, MeasureAction.extended, by=by, at=at, municipality_code=municipality_code,
                 note=note or f"extended until {until.isoformat()}", valid_until=until, basis=basis, basis_issuer=basis_issuer, basis_reference=basis_reference)


def expire(measure: SupportMeasure, *, at: datetime, municipality_code: str) -> SupportMeasure:
    _must_be_home(measure, municipality_code)
    if measure.status is not MeasureStatus.active:
        raise MeasureRuleViolation(f"the measure is {measure.status.value}")
    return _step(measure, MeasureAction.expired, by="system", at=at, municipality_code=municipality_code,
                 note=f"the period ended on {measure.valid_until.isoformat()}", status=MeasureStatus.expired)


def cancel(measure: SupportMeasure, *, requested_by: str, by: str, at: datetime, municipality_code: str, note: str) -> SupportMeasure:
    """Only the victim ends the measure (a family member or anyone else cannot)."""
    _must_be_home(measure, municipality_code)
    if requested_by != measure.victim_code:
        raise MeasureRuleViolation("only the victim can ask to end the measure")
    if not in_force(measure):
        raise MeasureRuleViolation(f"the measure is {measure.status.value}; there is nothing to end")
    return _step(measure, MeasureAction.cancelled, by=by, at=at, municipality_code=municipality_code, note=note, status=MeasureStatus.cancelled)


def take_over(measure: SupportMeasure, *, by: str, at: datetime, municipality_code: str) -> SupportMeasure:
    """The victim moved in here: this municipality carries the measure on (the old home becomes the previous address)."""
    if not in_force(measure):
        raise MeasureRuleViolation(f"the measure is {measure.status.value}")
    if measure.home_municipality_code == municipality_code:
        raise MeasureRuleViolation("the measure is already carried here")
    old_home = measure.home_municipality_code
    notified = [c for c in dict.fromkeys([*measure.notified_municipality_codes, old_home]) if c != municipality_code]
    return _step(measure, MeasureAction.taken_over, by=by, at=at, municipality_code=municipality_code,
                 note=f"the person moved in from {old_home}", home_municipality_code=municipality_code, notified_municipality_codes=notified)


def with_notified(measure: SupportMeasure, codes: Iterable[str]) -> SupportMeasure:
    """The same revision, naming every municipality it goes to (each receives every later revision)."""
    merged = list(dict.fromkeys([*measure.notified_municipality_codes, *codes]))
    if merged == measure.notified_municipality_codes:
        return measure
    return measure.model_copy(update={"notified_municipality_codes": merged})


# --- propagation ------------------------------------------------------------------------------------------


def delivery_targets(measure: SupportMeasure, *, previous_municipality_code: str | None, destination_municipality_code: str | None) -> dict[str, DeliveryRole]:
    """Every municipality that holds records of the person, and why; never the home itself.

    The 本籍地 keeps the 戸籍の附票, the previous address keeps the 除票, a
    destination is where the person is going; any municipality that received
    an earlier revision gets the later ones too, so an end or an extension
    reaches everyone who enforces the measure.
    """
    home = measure.home_municipality_code
    targets: dict[str, DeliveryRole] = {}
    for code, role in (
        (measure.honseki_municipality_code, DeliveryRole.honseki),
        (previous_municipality_code, DeliveryRole.previous_address),
        (destination_municipality_code, DeliveryRole.destination),
    ):
        if code is not None and code != home and code not in targets:
            targets[code] = role
    for code in measure.notified_municipality_codes:
        if code != home and code not in targets:
            targets[code] = DeliveryRole.notified
    return targets


def next_attempt_after(attempts: int) -> timedelta:
    """Backoff of resends: 30 s, 60 s, 2 min, … at most an hour (the broker may lose what it held, an ack is proof)."""
    return min(RETRY_FIRST * (2 ** max(attempts - 1, 0)), RETRY_MAX)


def is_newer(held_revision: int | None, incoming_revision: int) -> bool:
    """A municipality keeps the highest revision it received; late or repeated messages change nothing."""
    return held_revision is None or incoming_revision > held_revision


def marker_of(measures: Iterable[SupportMeasure], resident_code: str) -> tuple[bool, date | None]:
    """(protected, until) of one person from the measures of their home: any measure in force protects."""
    holding = [m for m in measures if in_force(m) and resident_code in m.resident_codes]
    ends = [m.valid_until for m in holding if m.valid_until is not None]
    return bool(holding), max(ends) if ends else None


def marker_supersedes(held_as_of: datetime | None, incoming_as_of: datetime) -> bool:
    return held_as_of is None or incoming_as_of > held_as_of


def restored_protection_in_force(*, valid_until: date | None, superseded: bool, today: date) -> bool:
    """A protection the disaster-recovery drill restored from the network's marker protects the person until
    staff re-enter the measure (the decided measure supersedes it) or the marker's last day has passed (the
    lost measure would have ended then as well; only its home could have extended it). Without a last day
    (the measure was applied for, not yet decided) it protects until superseded.
    """
    return not superseded and (valid_until is None or today <= valid_until)


# --- who asks: matching a requester with the perpetrators ------------------------------------------------


def normalise_name(name: str) -> str:
    """Names compare without spaces and width differences (山田 太郎 = 山田太郎 = 山田　太郎)."""
    folded = unicodedata.normalize("NFKC", name)
    return "".join(ch for ch in folded if not ch.isspace() and ch != "・")


def is_perpetrator(person: PersonIdentification, perpetrator: Perpetrator) -> bool:
    """The same name (or reading) and no contradicting birth date: a near miss is treated as a match.

    Failing towards refusal is the safe side: a wrongly refused requester can
    ask staff, a wrongly served perpetrator learns the victim's address.
    """
    same_name = normalise_name(person.name) == normalise_name(perpetrator.name)
    same_kana = person.name_kana is not None and perpetrator.name_kana is not None and normalise_name(person.name_kana) == normalise_name(perpetrator.name_kana)
    if not (same_name or same_kana):
        return False
    return person.birth_date is None or perpetrator.birth_date is None or person.birth_date == perpetrator.birth_date


def perpetrator_measures(measures: Iterable[SupportMeasure], requester: Requester) -> list[SupportMeasure]:
    """Measures in force that name the requester, or the principal an agent acts for, as a perpetrator."""
    people = [requester, *([requester.principal] if requester.principal is not None else [])]
    return [m for m in measures if in_force(m) and any(is_perpetrator(p, perp) for p in people for perp in m.perpetrators)]


def protects_subject(measure: SupportMeasure, *, resident_code: str | None, name: str | None, birth_date: date | None) -> bool:
    """The measure protects the person asked about, by resident code or by name and birth date."""
    for person in measure.protected:
        if resident_code is not None and person.resident_code == resident_code:
            return True
        if name is not None and birth_date is not None and person.birth_date == birth_date:
            full = f"{person.name.family_name}{person.name.given_name or ''}"
            if normalise_name(full) == normalise_name(name):
                return True
    return False


# --- certificate requests ---------------------------------------------------------------------------------


class Verdict(StrEnum):
    issue = "issue"
    refuse = "refuse"  # refused out of band: the requester hears "under review" like anyone; the reviewer sees why and closes it
    review = "review"  # staff decide; the requester hears "under review"
    not_found = "not_found"  # nothing here: asked of the home (広域交付) or reviewed; the requester hears "under review"


@dataclass(frozen=True)
class RequestDecision:
    verdict: Verdict
    reason: str
    measure_ids: tuple[str, ...] = ()


def decide_request(*, requester: Requester, measures: list[SupportMeasure], subject_found: bool, requester_is_subject: bool,
                   requester_in_household: bool, principal_is_subject_or_household: bool, restored_protection: bool = False) -> RequestDecision:
    """What happens to a certificate request, in this order:

    1. a perpetrator named by a measure in force protecting the subject — or an
       agent acting for one — is refused, whatever relation they claim; the
       refusal is out of band (:func:`requester_answer`): the requester hears
       "under review" like every request not served, the reviewer sees the
       refusal and why, and can only confirm it;
    2. a third party is always reviewed by staff, whether the subject exists or
       is protected or not;
    3. no record: not found (asked of the home municipality, or reviewed);
    4. a protection restored from the network's marker after a disaster
       (``restored_protection``: the measure's 相手方 are unknown until staff
       re-enter them) serves the person themself only: anyone else — a
       household member, an agent — is reviewed, since nobody can tell
       whether they are a perpetrator;
    5. the person themself and members of their household are served;
    6. an agent for the person or their household is served, unless a measure
       protects the subject: then staff review it (no proxy requests for victims);
    7. anything that does not add up (a "self" that is someone else) is reviewed.

    Whatever the verdict other than ``issue``, the requester hears the same
    thing: :func:`requester_answer`.
    """
    in_force_measures = [m for m in measures if in_force(m)]
    ids = tuple(str(m.measure_id) for m in in_force_measures)
    named = perpetrator_measures(in_force_measures, requester)
    if named:
        return RequestDecision(Verdict.refuse, "the requester (or the principal) is named as a perpetrator (相手方) of a support measure protecting the subject",
                               tuple(str(m.measure_id) for m in named))
    if requester.relation is RequesterRelation.third_party:
        return RequestDecision(Verdict.review, "third-party requests are reviewed" + (" strictly: a support measure protects the subject" if ids or restored_protection else ""), ids)
    if not subject_found:
        return RequestDecision(Verdict.not_found, "no record matches", ids)
    if restored_protection and not (requester.relation is RequesterRelation.self_ and requester_is_subject):
        return RequestDecision(Verdict.review, "a protection restored from the network's marker protects the subject: the measure's 相手方 are not known "
                                               "until staff re-enter it, so only the person themself is served without review", ids)
    if requester.relation is RequesterRelation.self_:
        if requester_is_subject:
            return RequestDecision(Verdict.issue, "the person themself", ids)
        return RequestDecision(Verdict.review, "the requester says it is the person, but the codes differ", ids)
    if requester.relation is RequesterRelation.household_member:
        if requester_in_household:
            return RequestDecision(Verdict.issue, "a member of the subject's household", ids)
        return RequestDecision(Verdict.review, "the requester is not in the subject's household", ids)
    # an agent
    if not principal_is_subject_or_household:
        return RequestDecision(Verdict.review, "the principal is neither the person nor a member of the household", ids)
    if ids:
        return RequestDecision(Verdict.review, "a support measure protects the subject: no proxy requests without review", ids)
    return RequestDecision(Verdict.issue, "an agent of the person or the household", ids)


class Answer(StrEnum):
    """What a requester can be told about a request: nothing else, ever (see :func:`requester_answer`)."""

    issued = "issued"  # the document
    under_review = "under_review"  # the request id; the outcome comes later
    not_issued = "not_issued"  # closed without a document


#: where a request waits while the requester hears "under review"
WAITING = (RequestState.under_review, RequestState.refusal_pending, RequestState.asking_home)
#: the states a reviewer closes (the review queue)
REVIEWABLE = (RequestState.refusal_pending, RequestState.under_review)


def state_after_request(decision: RequestDecision, *, wide_area: bool) -> RequestState:
    """Where a new request stands once the counter's register has looked at it.

    Only an issue is answered at once. A request about nobody here that another
    municipality may answer (広域交付) is asked of the home in the background;
    everything else waits for a reviewer — a perpetrator's request too, already
    marked refused by the rules, so that it leaves the queue the same way, by a
    person's hand, as every other request (an automatic close would show in the
    outcome sooner than a review does).
    """
    if decision.verdict is Verdict.issue:
        return RequestState.issued
    if decision.verdict is Verdict.refuse:
        return RequestState.refusal_pending
    if decision.verdict is Verdict.not_found and wide_area:
        return RequestState.asking_home
    return RequestState.under_review


def state_after_home_answer(outcome: str | None) -> RequestState:
    """広域交付: the home's answer (None: it could not be asked). Only a document ends the request; the home's refusal of a
    perpetrator waits for the reviewer as a refusal, anything else as an ordinary review, so the outcome moves alike."""
    if outcome == "issued":
        return RequestState.issued
    if outcome == "refused":
        return RequestState.refusal_pending
    return RequestState.under_review


def requester_answer(state: RequestState) -> Answer:
    """What the requester hears, now or at the outcome: a document, "under review", or "not issued" — never why.

    Whether the person exists, whether a measure protects them, where they live
    and whether the requester is a perpetrator make no difference to anything
    but the staff's records: the rules' refusal waits in the review queue like
    any other request, and every request closed without a document reads the
    same (a reviewer's reasons go to the requester in writing, not through
    this answer).
    """
    if state is RequestState.issued:
        return Answer.issued
    if state in WAITING:
        return Answer.under_review
    return Answer.not_issued


def review_issue_refusal(*, protected: bool, subject_found: bool, refused_by_rule: bool = False) -> str | None:
    """A reviewer may refuse anything, but issue only for an existing, unprotected person (no override at the counter)."""
    if refused_by_rule:
        return "the DV rules refuse this request (the requester is named as a perpetrator): it can only be refused"
    if not subject_found:
        return "there is no record to issue"
    if protected:
        return "a support measure protects the person: a third party's request is refused, whoever reviews it"
    return None


# --- online procedures ------------------------------------------------------------------------------------


def online_proxy_refusal(*, filer_protected: bool, protected_members: Collection[str], members: Collection[str]) -> str | None:
    """No proxy filings where a measure is involved: a protected person is filed for by nobody else,
    and a protected filer files for themself only (their household moves at the counter, where staff see the measure)."""
    if not members:
        return None
    if protected_members:
        return "a person under a support measure cannot be filed for by someone else; they file themselves or visit the counter"
    if filer_protected:
        return "a person under a support measure files online for themself only; household members file themselves or visit the counter"
    return None


def prefill_hides(*, filer: str, member: str, measures: Iterable[SupportMeasure]) -> bool:
    """A relative is left off the filer's pre-filled move form when a measure in force protects them and not the filer."""
    return any(in_force(m) and member in m.resident_codes and filer not in m.resident_codes for m in measures)


# --- provision to agencies --------------------------------------------------------------------------------


def provided_items(items: tuple[Item, ...], *, requires_address: bool, protected: bool) -> tuple[Item, ...]:
    """A protected person's address goes only to affairs that require it; the others get the record without it."""
    if protected and not requires_address:
        return tuple(i for i in items if i is not Item.address)
    return items
