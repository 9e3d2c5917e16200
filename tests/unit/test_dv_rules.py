"""The rules of DV等支援措置, pure: period and extension window, lifecycle steps, perpetrator matching,
what a certificate request gets, propagation targets and backoff, online proxies, provision items."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from contracts.affairs import AFFAIRS, Item
from contracts.dv import (
    DeliveryRole, MeasureAction, MeasureBasis, MeasureKind, MeasureStatus, MeasureStep, Perpetrator, PersonIdentification, ProtectedPerson,
    ProtectedRole, RequestState, Requester, RequesterRelation, SupportMeasure,
)
from contracts.identity import PersonName
from services.common import dv_rules as rules
from services.common.dv_rules import MeasureRuleViolation, Verdict

HOME, HONSEKI, PREVIOUS, DESTINATION = "131016", "272035", "131130", "011011"
VICTIM, CHILD = "12345678903", "10000000006"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TODAY = NOW.date()


def measure(**changes) -> SupportMeasure:
    values = dict(
        measure_id=uuid.uuid4(), revision=1, kind=MeasureKind.dv, basis=MeasureBasis.police_opinion, basis_issuer="丸の内警察署",
        protected=[
            ProtectedPerson(resident_code=VICTIM, role=ProtectedRole.victim, name=PersonName(family_name="山田", given_name="花子"), birth_date=date(1990, 4, 1)),
            ProtectedPerson(resident_code=CHILD, role=ProtectedRole.family, name=PersonName(family_name="山田", given_name="太一"), birth_date=date(2018, 5, 5)),
        ],
        perpetrators=[Perpetrator(name="山田 一郎", name_kana="ヤマダ イチロウ", birth_date=date(1985, 1, 2))],
        status=MeasureStatus.applied, applied_on=TODAY, home_municipality_code=HOME, honseki_municipality_code=HONSEKI,
        history=[MeasureStep(action=MeasureAction.applied, by="clerk-1", at=NOW, municipality_code=HOME)],
    )
    values.update(changes)
    return SupportMeasure(**values)


def active(valid_from: date = TODAY) -> SupportMeasure:
    return rules.approve(measure(applied_on=valid_from), valid_from=valid_from, today=TODAY, by="chief", at=NOW, municipality_code=HOME)


def requester(relation=RequesterRelation.third_party, name="佐藤 次郎", birth=None, code=None, principal=None) -> Requester:
    return Requester(relation=relation, name=name, birth_date=birth, resident_code=code, principal=principal,
                     purpose="債権回収のため" if relation is RequesterRelation.third_party else None)


# --- period, extension, expiry ----------------------------------------------------------------------------


def test_a_measure_runs_one_year_and_extends_without_a_gap():
    assert rules.period_end(date(2026, 4, 1)) == date(2027, 3, 31)
    assert rules.period_end(date(2028, 2, 29)) == date(2029, 2, 27)  # no 2/29 next year: the day before 2/28… clamped, then the day before
    assert rules.extended_until(date(2027, 3, 31)) == date(2028, 3, 31)
    assert rules.extension_opens_on(date(2027, 3, 31)) == date(2027, 2, 28)
    assert rules.extension_opens_on(date(2027, 6, 30)) == date(2027, 5, 30)


def test_approval_sets_the_period_and_records_who():
    m = active()
    assert (m.status, m.valid_from, m.valid_until, m.revision) == (MeasureStatus.active, TODAY, rules.period_end(TODAY), 2)
    assert [(s.action, s.by) for s in m.history] == [(MeasureAction.applied, "clerk-1"), (MeasureAction.approved, "chief")]
    with pytest.raises(MeasureRuleViolation):  # decided twice
        rules.approve(m, valid_from=TODAY, today=TODAY, by="x", at=NOW, municipality_code=HOME)
    with pytest.raises(MeasureRuleViolation, match="ahead of time"):
        rules.approve(measure(), valid_from=TODAY + timedelta(days=1), today=TODAY, by="x", at=NOW, municipality_code=HOME)
    with pytest.raises(MeasureRuleViolation, match="before it was applied"):
        rules.approve(measure(), valid_from=TODAY - timedelta(days=1), today=TODAY, by="x", at=NOW, municipality_code=HOME)
    with pytest.raises(MeasureRuleViolation, match="carried by"):
        rules.approve(measure(), valid_from=TODAY, today=TODAY, by="x", at=NOW, municipality_code=PREVIOUS)


def test_an_extension_is_filed_from_one_month_before_the_end():
    m = active()
    early = m.valid_until - timedelta(days=40)
    assert "can be filed from" in rules.extension_refusal(m, early)
    with pytest.raises(MeasureRuleViolation):
        rules.extend(m, filed_on=early, basis=MeasureBasis.support_centre_opinion, basis_issuer="センター", basis_reference=None, by="c", at=NOW, municipality_code=HOME)
    filed = rules.extension_opens_on(m.valid_until)
    longer = rules.extend(m, filed_on=filed, basis=MeasureBasis.support_centre_opinion, basis_issuer="センター", basis_reference="第1号", by="c", at=NOW, municipality_code=HOME)
    assert longer.valid_until == m.valid_until + (rules.period_end(m.valid_until + timedelta(days=1)) - m.valid_until)
    assert longer.basis is MeasureBasis.support_centre_opinion and longer.history[-1].action is MeasureAction.extended
    assert "apply anew" in rules.extension_refusal(m, m.valid_until + timedelta(days=1))


def test_expiry_and_the_reminder_before_it():
    m = active(valid_from=TODAY - timedelta(days=350))
    assert not rules.is_due_to_expire(m, TODAY) and rules.needs_reminder(m, TODAY)
    assert not rules.needs_reminder(active(), TODAY)
    assert rules.is_due_to_expire(m, m.valid_until + timedelta(days=1))
    ended = rules.expire(m, at=NOW, municipality_code=HOME)
    assert ended.status is MeasureStatus.expired and ended.history[-1].by == "system" and not rules.in_force(ended)


def test_only_the_victim_cancels():
    m = active()
    with pytest.raises(MeasureRuleViolation, match="only the victim"):
        rules.cancel(m, requested_by=CHILD, by="c", at=NOW, municipality_code=HOME, note="本人の申出")
    done = rules.cancel(m, requested_by=VICTIM, by="c", at=NOW, municipality_code=HOME, note="本人の申出")
    assert done.status is MeasureStatus.cancelled
    with pytest.raises(MeasureRuleViolation):
        rules.cancel(done, requested_by=VICTIM, by="c", at=NOW, municipality_code=HOME, note="again")


def test_a_move_hands_the_measure_to_the_new_home():
    m = rules.with_notified(active(), [HONSEKI, DESTINATION])
    moved = rules.take_over(m, by="clerk-b", at=NOW, municipality_code=DESTINATION)
    assert moved.home_municipality_code == DESTINATION and moved.history[-1].action is MeasureAction.taken_over
    assert set(moved.notified_municipality_codes) == {HONSEKI, HOME}
    with pytest.raises(MeasureRuleViolation, match="carried by"):  # the old home no longer changes it
        rules.cancel(moved, requested_by=VICTIM, by="c", at=NOW, municipality_code=HOME, note="x")


# --- propagation ------------------------------------------------------------------------------------------


def test_targets_are_every_municipality_with_records_never_the_home():
    m = active()
    assert rules.delivery_targets(m, previous_municipality_code=PREVIOUS, destination_municipality_code=None) == {
        HONSEKI: DeliveryRole.honseki, PREVIOUS: DeliveryRole.previous_address}
    assert rules.delivery_targets(m, previous_municipality_code=HOME, destination_municipality_code=DESTINATION) == {
        HONSEKI: DeliveryRole.honseki, DESTINATION: DeliveryRole.destination}
    later = rules.with_notified(m, ["472018"])
    assert rules.delivery_targets(later, previous_municipality_code=None, destination_municipality_code=None)["472018"] is DeliveryRole.notified
    assert rules.delivery_targets(measure(honseki_municipality_code=HOME), previous_municipality_code=None, destination_municipality_code=None) == {}


def test_resends_back_off_and_revisions_only_move_forward():
    assert [rules.next_attempt_after(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert rules.next_attempt_after(30) == rules.RETRY_MAX
    assert rules.is_newer(None, 1) and rules.is_newer(2, 3) and not rules.is_newer(3, 3) and not rules.is_newer(3, 2)
    assert rules.marker_supersedes(None, NOW) and not rules.marker_supersedes(NOW, NOW)


def test_the_marker_covers_everyone_the_measure_protects():
    m = active()
    assert rules.marker_of([m], CHILD) == (True, m.valid_until)
    assert rules.marker_of([m], "20000000001")[0] is False
    assert rules.marker_of([rules.expire(active(TODAY - timedelta(days=400)), at=NOW, municipality_code=HOME)], VICTIM) == (False, None)
    assert rules.marker_of([measure()], VICTIM) == (True, None)  # applied: protected while the decision is pending


# --- requests ---------------------------------------------------------------------------------------------


def test_perpetrators_match_despite_spaces_width_and_missing_birth_dates():
    perp = Perpetrator(name="山田 一郎", name_kana="ヤマダ イチロウ", birth_date=date(1985, 1, 2))
    assert rules.is_perpetrator(PersonIdentification(name="山田一郎"), perp)
    assert rules.is_perpetrator(PersonIdentification(name="山田　一郎", birth_date=date(1985, 1, 2)), perp)
    assert rules.is_perpetrator(PersonIdentification(name="山田 市郎", name_kana="ヤマダ　イチロウ"), perp)  # same reading, other kanji
    assert not rules.is_perpetrator(PersonIdentification(name="山田一郎", birth_date=date(1999, 9, 9)), perp)
    assert not rules.is_perpetrator(PersonIdentification(name="佐藤一郎"), perp)


def decide(m, who, **facts):
    values = dict(subject_found=True, requester_is_subject=False, requester_in_household=False, principal_is_subject_or_household=False)
    values.update(facts)
    return rules.decide_request(requester=who, measures=[m] if m else [], **values)


def test_a_perpetrator_or_their_agent_is_refused_whatever_relation_they_claim():
    m = active()
    assert decide(m, requester(RequesterRelation.household_member, name="山田一郎", birth=date(1985, 1, 2)), requester_in_household=True).verdict is Verdict.refuse
    assert decide(m, requester(RequesterRelation.household_member, name="山田一郎", birth=date(1970, 1, 1)), requester_in_household=True).verdict is Verdict.issue
    agent = requester(RequesterRelation.agent, name="鈴木 弁護", principal=PersonIdentification(name="山田 一郎"))
    assert decide(m, agent, principal_is_subject_or_household=True).verdict is Verdict.refuse
    assert decide(m, requester(RequesterRelation.third_party, name="山田 一郎")).verdict is Verdict.refuse
    # the same person asking about someone no measure protects is just a requester
    assert decide(None, requester(RequesterRelation.self_, name="山田 一郎", code=VICTIM), requester_is_subject=True).verdict is Verdict.issue
    # an ended measure protects no more
    assert decide(rules.cancel(m, requested_by=VICTIM, by="c", at=NOW, municipality_code=HOME, note="x"),
                  requester(RequesterRelation.household_member, name="山田一郎"), requester_in_household=True).verdict is Verdict.issue


def test_third_parties_are_always_reviewed_so_under_review_reveals_nothing():
    third = requester()
    assert decide(active(), third).verdict is Verdict.review
    assert decide(None, third).verdict is Verdict.review
    assert decide(None, third, subject_found=False).verdict is Verdict.review
    assert "strictly" in decide(active(), third).reason and "strictly" not in decide(None, third).reason


def test_the_person_household_and_agents():
    m = active()
    assert decide(m, requester(RequesterRelation.self_, name="山田 花子", code=VICTIM), requester_is_subject=True).verdict is Verdict.issue
    assert decide(m, requester(RequesterRelation.self_, name="山田 花子", code=CHILD)).verdict is Verdict.review
    assert decide(None, requester(RequesterRelation.household_member), requester_in_household=True).verdict is Verdict.issue
    assert decide(None, requester(RequesterRelation.household_member)).verdict is Verdict.review
    agent = requester(RequesterRelation.agent, principal=PersonIdentification(name="山田 花子", resident_code=VICTIM))
    assert decide(None, agent, principal_is_subject_or_household=True).verdict is Verdict.issue
    assert decide(m, agent, principal_is_subject_or_household=True).verdict is Verdict.review  # no proxies for a protected person
    assert decide(None, requester(RequesterRelation.self_), subject_found=False).verdict is Verdict.not_found


def test_a_protection_restored_from_the_marker_serves_only_the_person_themself():
    """After the disaster-recovery drill the measure's 相手方 are unknown: nobody but the person is served without review."""
    restored = dict(restored_protection=True)
    me = requester(RequesterRelation.self_, name="山田 花子", code=VICTIM)
    assert decide(None, me, requester_is_subject=True, **restored).verdict is Verdict.issue
    assert decide(None, requester(RequesterRelation.self_, name="山田 花子", code=CHILD), **restored).verdict is Verdict.review
    # a household member or an agent who would be served without a measure: reviewed (they may be the perpetrator)
    member = requester(RequesterRelation.household_member, name="山田 一郎", code=CHILD)
    assert decide(None, member, requester_in_household=True).verdict is Verdict.issue
    assert decide(None, member, requester_in_household=True, **restored).verdict is Verdict.review
    agent = requester(RequesterRelation.agent, principal=PersonIdentification(name="山田 花子", resident_code=VICTIM))
    assert decide(None, agent, principal_is_subject_or_household=True, **restored).verdict is Verdict.review
    third = decide(None, requester(), **restored)
    assert third.verdict is Verdict.review and "strictly" in third.reason
    assert decide(None, member, subject_found=False, **restored).verdict is Verdict.not_found
    # a measure re-entered alongside names its perpetrators again: they are refused as before
    perpetrator = requester(RequesterRelation.household_member, name="山田一郎", birth=date(1985, 1, 2))
    assert decide(active(), perpetrator, requester_in_household=True, **restored).verdict is Verdict.refuse
    # it protects until superseded by a decided measure, or until the marker's last day has passed
    assert rules.restored_protection_in_force(valid_until=None, superseded=False, today=TODAY)
    assert rules.restored_protection_in_force(valid_until=TODAY, superseded=False, today=TODAY)
    assert not rules.restored_protection_in_force(valid_until=TODAY - timedelta(days=1), superseded=False, today=TODAY)
    assert not rules.restored_protection_in_force(valid_until=None, superseded=True, today=TODAY)


def test_a_reviewer_cannot_override_a_measure():
    assert rules.review_issue_refusal(protected=True, subject_found=True)
    assert rules.review_issue_refusal(protected=False, subject_found=False)
    assert rules.review_issue_refusal(protected=False, subject_found=True) is None
    assert rules.review_issue_refusal(protected=False, subject_found=True, refused_by_rule=True), "a perpetrator's request can only be refused"


def test_the_requester_hears_the_document_or_under_review_and_never_why():
    """Every verdict but an issue reads "under review", the rules' refusal of a perpetrator too; closed without a document: one answer."""
    m = active()
    perpetrator = requester(RequesterRelation.third_party, name="山田 一郎")
    cases = [
        decide(m, perpetrator),  # refused by the rules
        decide(None, perpetrator),  # the same person about someone unprotected: reviewed
        decide(None, requester(), subject_found=False),  # a third party about nobody
        decide(None, requester(RequesterRelation.self_), subject_found=False),  # "self" about nobody
        decide(m, requester(RequesterRelation.household_member, name="山田一郎", birth=date(1985, 1, 2)), requester_in_household=True),
        decide(None, requester(RequesterRelation.household_member)),  # not in the household
    ]
    for wide_area in (False, True):
        answers = {rules.requester_answer(rules.state_after_request(d, wide_area=wide_area)) for d in cases}
        assert answers == {rules.Answer.under_review}
    assert rules.state_after_request(decide(m, perpetrator), wide_area=True) is RequestState.refusal_pending, "refused, waiting for a reviewer"
    assert rules.state_after_request(decide(None, requester(RequesterRelation.self_), subject_found=False), wide_area=True) is RequestState.asking_home
    me = decide(m, requester(RequesterRelation.self_, name="山田 花子", code=VICTIM), requester_is_subject=True)
    assert rules.requester_answer(rules.state_after_request(me, wide_area=False)) is rules.Answer.issued
    # the home's answer to a 広域交付: only a document ends the request; everything else waits for a reviewer alike
    assert rules.state_after_home_answer("issued") is RequestState.issued
    assert {rules.requester_answer(rules.state_after_home_answer(o)) for o in ("refused", "not_found", None)} == {rules.Answer.under_review}
    # closed without a document, whatever the reason: one answer
    assert {rules.requester_answer(s) for s in (RequestState.refused, RequestState.not_found, RequestState.failed)} == {rules.Answer.not_issued}


def test_a_subject_is_recognised_by_code_or_by_name_and_birth_date():
    m = active()
    assert rules.protects_subject(m, resident_code=CHILD, name=None, birth_date=None)
    assert rules.protects_subject(m, resident_code=None, name="山田　花子", birth_date=date(1990, 4, 1))
    assert not rules.protects_subject(m, resident_code=None, name="山田 花子", birth_date=date(1991, 4, 1))


# --- online and provision ---------------------------------------------------------------------------------


def test_no_proxy_filings_where_a_measure_protects():
    assert rules.online_proxy_refusal(filer_protected=False, protected_members=[], members=[CHILD]) is None
    assert "cannot be filed for" in rules.online_proxy_refusal(filer_protected=False, protected_members=[CHILD], members=[CHILD])
    assert "for themself only" in rules.online_proxy_refusal(filer_protected=True, protected_members=[], members=["10000000014"])
    assert rules.online_proxy_refusal(filer_protected=True, protected_members=[], members=[]) is None


def test_the_prefilled_form_drops_protected_relatives_not_protected_together():
    m = active()
    assert rules.prefill_hides(filer="10000000014", member=CHILD, measures=[m])
    assert not rules.prefill_hides(filer=VICTIM, member=CHILD, measures=[m])  # the victim's own covered child
    assert not rules.prefill_hides(filer="10000000014", member=CHILD, measures=[rules.expire(active(TODAY - timedelta(days=400)), at=NOW, municipality_code=HOME)])


def test_agencies_get_a_protected_persons_address_only_when_their_affair_requires_it():
    employment, pension = AFFAIRS["employment-insurance"], AFFAIRS["pension-benefits"]
    assert Item.address in employment.items and not employment.requires_address
    assert Item.address not in rules.provided_items(employment.items, requires_address=employment.requires_address, protected=True)
    assert rules.provided_items(employment.items, requires_address=False, protected=False) == employment.items
    assert rules.provided_items(pension.items, requires_address=pension.requires_address, protected=True) == pension.items


def test_the_measure_contract_keeps_the_victim_first():
    m = measure()
    assert m.resident_codes == [VICTIM, CHILD] and m.victim_code == VICTIM
    with pytest.raises(ValueError):
        measure(protected=list(reversed(m.protected)))
    with pytest.raises(ValueError):
        measure(status=MeasureStatus.active)  # no period
