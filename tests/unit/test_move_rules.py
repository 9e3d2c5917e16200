"""Rules of moves, pure: the register's 転出/転入/転出取消 (services/municipal_rrs/domain.py), which
changes concern a tier's area (services/common/moves.py), the version rule for arrivals, and the
CS's online-filing rules (services/cs_gateway/online_rules.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest

from contracts.identifiers import new_resident_code
from contracts.identity import Address, ChangeReason, RegistrationStatus
from contracts.jpki import AssuranceState
from contracts.dv import SupportMeasureAck
from contracts.moves import CsNotice, MoveInNotice, MoveInReply, MoveOutCancellation, MoveOutCertificate, TransferredPerson
from contracts.online import OnlineMoveIn, OnlineMoveOut, ResidenceConfirmation
from contracts.register import Relationship
from services.common.moves import arriving_in, concerns_area, forwarded_by_cs
from services.common.topology import OnlinePolicy
from services.common.versioning import Decision, decide
from services.cs_gateway.online_rules import assurance_refusal, confirmation_refusal, window_refusal
from services.municipal_rrs.domain import RegistryRuleViolation, Resident, closable_together, proxy_refusal
from services.municipal_rrs.mapping import to_identity_change
from tests.unit.test_rrs_domain import HOUSEHOLD, MUNICIPALITY, OTHER_MUNICIPALITY, TODAY, address, register

PROCEDURE = uuid.UUID("0b8a1d7e-5c1f-4e0e-9f7b-3a6f1c2d4e5f")
TOYONAKA = "272035"


def moved_out(destination: str | None = OTHER_MUNICIPALITY, country: str | None = None):
    resident = register()[0]
    event = resident.move_out(procedure_id=PROCEDURE, destination_code=destination, destination_country=country, planned_date=TODAY, notified_date=TODAY, today=TODAY)
    return resident, event


def certificate_of(resident: Resident, event, destination: str = OTHER_MUNICIPALITY) -> MoveOutCertificate:
    return MoveOutCertificate(
        certificate_id=uuid.uuid4(), procedure_id=PROCEDURE, municipality_code=MUNICIPALITY, destination_municipality_code=destination,
        resident_code=resident.resident_code, planned_date=TODAY, persons_in_procedure=1, issued_at=datetime.now(UTC),
        person=TransferredPerson(change=to_identity_change(resident, event), relationship=resident.relationship, was_head=True, family_register=resident.family_register),
    )


def test_move_out_puts_the_person_in_transit_with_origin_and_destination():
    resident, event = moved_out()
    assert resident.status is RegistrationStatus.moving_out and resident.version == 2
    assert event.move.origin_municipality_code == MUNICIPALITY and event.move.destination_municipality_code == OTHER_MUNICIPALITY
    assert to_identity_change(resident, event).move == event.move


def test_move_out_abroad_closes_the_record():
    resident, event = moved_out(destination=None, country="フランス")
    assert resident.status is RegistrationStatus.removed and event.move.destination_country == "フランス"


@pytest.mark.parametrize("planned", [TODAY + timedelta(days=31), TODAY - timedelta(days=15)])
def test_move_out_outside_the_filing_window_refused(planned):
    resident = register()[0]
    with pytest.raises(RegistryRuleViolation, match="30 days before"):
        resident.move_out(procedure_id=PROCEDURE, destination_code=OTHER_MUNICIPALITY, destination_country=None, planned_date=planned, notified_date=None, today=TODAY)


def test_move_out_to_the_same_municipality_is_a_move_within():
    with pytest.raises(RegistryRuleViolation, match="転居"):
        moved_out(destination=MUNICIPALITY)


def test_arrival_continues_codes_and_versions_and_brings_the_family_register():
    resident, event = moved_out()
    arrived, changed = Resident.arrive(
        certificate_of(resident, event), municipality_code=OTHER_MUNICIPALITY, new_address=address("東京都渋谷区宇田川町1番", OTHER_MUNICIPALITY),
        household_id=HOUSEHOLD, relationship=Relationship.head, move_date=TODAY, notified_date=TODAY, procedure_id=uuid.uuid4(), today=TODAY,
    )
    assert (arrived.resident_code, arrived.individual_number, arrived.version) == (resident.resident_code, resident.individual_number, 3)
    assert arrived.family_register == resident.family_register and arrived.previous_address == resident.address.text
    assert changed.reason is ChangeReason.move_in and changed.move.origin_municipality_code == MUNICIPALITY


def test_arrival_at_another_municipality_than_the_certificates_refused():
    resident, event = moved_out()
    with pytest.raises(RegistryRuleViolation, match="destination"):
        Resident.arrive(certificate_of(resident, event, destination=TOYONAKA), municipality_code=OTHER_MUNICIPALITY,
                        new_address=address("渋谷", OTHER_MUNICIPALITY), household_id=HOUSEHOLD, relationship=Relationship.head,
                        move_date=TODAY, notified_date=None, procedure_id=uuid.uuid4(), today=TODAY)


def test_cancelling_restores_the_record_once():
    resident, _ = moved_out()
    event = resident.cancel_move_out(MoveOutCancellation(cancellation_date=TODAY, explanation="取りやめ"))
    assert resident.status is RegistrationStatus.active and resident.pending_move is None and event.move.procedure_id == PROCEDURE
    with pytest.raises(RegistryRuleViolation, match="no pending move-out"):
        resident.cancel_move_out(MoveOutCancellation(cancellation_date=TODAY, explanation="二度目"))


def test_the_move_in_notice_closes_the_record_and_reports_discrepancies():
    resident, event = moved_out()
    arrived, changed = Resident.arrive(
        certificate_of(resident, event), municipality_code=OTHER_MUNICIPALITY, new_address=address("渋谷", OTHER_MUNICIPALITY),
        household_id=HOUSEHOLD, relationship=Relationship.head, move_date=TODAY, notified_date=None, procedure_id=uuid.uuid4(), today=TODAY,
    )
    arrival = to_identity_change(arrived, changed)
    before = resident.version
    closed, discrepancies = resident.copy().close_after_move_in(arrival)
    assert discrepancies == [] and closed.identity_changed is False
    wrong = arrival.model_copy(update={"identity": arrival.identity.model_copy(update={"birth_date": date(2000, 1, 1)})})
    copy = resident.copy()
    _, found = copy.close_after_move_in(wrong)
    assert [d.item for d in found] == ["birth_date"] and copy.status is RegistrationStatus.removed and copy.version == before


def test_a_move_in_notice_from_elsewhere_than_the_destination_refused():
    resident, _ = moved_out()
    stranger = to_identity_change(register()[0], register()[1]).model_copy(update={"municipality_code": TOYONAKA, "version": 3})
    with pytest.raises(RegistryRuleViolation, match="does not match"):
        resident.close_after_move_in(stranger)


def _move_in_notice(sequence: int) -> CsNotice:
    resident, event = register()
    message = MoveInNotice(municipality_code=OTHER_MUNICIPALITY, origin_municipality_code=MUNICIPALITY, resident_code=new_resident_code(),
                           change=to_identity_change(resident, event), sent_at=datetime.now(UTC))
    return CsNotice(sequence=sequence, received_at=datetime.now(UTC), message=message)


def test_the_move_in_notices_of_a_pull_close_together_only_when_nothing_else_in_it_touches_a_record():
    first, second = _move_in_notice(1), _move_in_notice(3)
    reply = CsNotice(sequence=2, received_at=datetime.now(UTC), message=MoveInReply(
        municipality_code=OTHER_MUNICIPALITY, destination_municipality_code=MUNICIPALITY, resident_code=new_resident_code(),
        closed=True, replied_at=datetime.now(UTC)))
    assert [n.sequence for n in closable_together([first, reply, second])] == [1, 3]
    assert closable_together([first, reply]) == [], "one 転入通知 alone is taken as any notice is"
    twice = second.model_copy(update={"message": second.message.model_copy(update={"resident_code": first.message.resident_code})})
    assert closable_together([first, twice]) == [], "two for one person are taken in order"
    measure = CsNotice.model_construct(sequence=4, received_at=datetime.now(UTC), message=SupportMeasureAck.model_construct(resident_code=new_resident_code()))
    assert closable_together([first, second, measure]) == [], "a DV measure may concern a record: the pull is taken in order"


def test_proxy_only_by_the_head_for_own_household():
    head, member = register()[0], register()[0]
    member.relationship = Relationship.child
    assert proxy_refusal(head, [member]) is None
    assert "head of household" in proxy_refusal(member, [head])
    member.household_id = uuid.uuid4()
    assert "not members" in proxy_refusal(head, [member])


# --- which tiers keep a moving person's changes -------------------------------------------------------------


def test_a_move_concerns_both_areas_and_arrivals_may_skip_versions():
    resident, event = moved_out()
    change = to_identity_change(resident, event)
    assert concerns_area(change, {OTHER_MUNICIPALITY}) and concerns_area(change, {MUNICIPALITY}) and not concerns_area(change, {TOYONAKA})
    arriving = arriving_in({OTHER_MUNICIPALITY})
    assert arriving(None, change) and not arriving_in({TOYONAKA})(None, change)
    assert not arriving(SimpleNamespace(municipality_code=OTHER_MUNICIPALITY, status="active"), change), "someone registered here does not arrive"
    assert decide(held_version=None, held_event_id_for_version=None, incoming_version=2, incoming_event_id="e", arriving=True) is Decision.apply
    assert decide(held_version=None, held_event_id_for_version=None, incoming_version=2, incoming_event_id="e") is Decision.gap
    assert decide(held_version=3, held_event_id_for_version="x", incoming_version=3, incoming_event_id="e", arriving=True) is Decision.conflict


def test_a_cs_forwards_a_change_made_elsewhere_only_when_its_maker_has_another_upstream_node():
    change = to_identity_change(*moved_out())  # the 転出 made at MUNICIPALITY, towards OTHER_MUNICIPALITY
    by_prefecture = {MUNICIPALITY: "prefecture_server.13", OTHER_MUNICIPALITY: "prefecture_server.13", TOYONAKA: "prefecture_server.27"}.get
    assert forwarded_by_cs(change, municipality_code=MUNICIPALITY, upstream_of=by_prefecture), "the maker's own CS forwards it"
    assert not forwarded_by_cs(change, municipality_code=OTHER_MUNICIPALITY, upstream_of=by_prefecture), "the same prefecture server has it already"
    assert forwarded_by_cs(change, municipality_code=TOYONAKA, upstream_of=by_prefecture), "another prefecture server hears of it only from this CS"
    everyone_to_national = {MUNICIPALITY: "national_server.national", TOYONAKA: "national_server.national"}.get
    assert not forwarded_by_cs(change, municipality_code=TOYONAKA, upstream_of=everyone_to_national), "without prefectures, only the maker's CS"
    unknown_maker = {TOYONAKA: "prefecture_server.27"}.get
    assert forwarded_by_cs(change, municipality_code=TOYONAKA, upstream_of=unknown_maker), "a maker off the network: forwarded, never lost"


# --- the CS's rules for online filings -------------------------------------------------------------------


NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def online_out(planned: date, filed_at: datetime = NOW) -> OnlineMoveOut:
    return OnlineMoveOut(filed_at=filed_at, nonce=uuid.uuid4(), destination=Address(municipality_code=TOYONAKA, text="大阪府豊中市中桜塚3丁目1-1"), planned_date=planned)


@pytest.mark.parametrize("days, refused", [(-11, True), (-10, False), (0, False), (30, False), (31, True)])
def test_online_move_out_window_30_days_before_to_10_after(days, refused):
    assert (window_refusal(online_out(NOW.date() + timedelta(days=days)), today=NOW.date(), now=NOW) is not None) is refused


def test_a_stale_signed_filing_is_a_replay():
    assert "10 minutes" in window_refusal(online_out(NOW.date(), filed_at=NOW - timedelta(minutes=11)), today=NOW.date(), now=NOW)


def test_move_in_is_filed_after_moving_within_14_days():
    def move_in(day: date) -> OnlineMoveIn:
        return OnlineMoveIn(filed_at=NOW, nonce=uuid.uuid4(), new_address=Address(municipality_code=TOYONAKA, text="豊中"), move_date=day, confirmation=ResidenceConfirmation.mailed_code)
    assert window_refusal(move_in(NOW.date() + timedelta(days=1)), today=NOW.date(), now=NOW)
    assert window_refusal(move_in(NOW.date() - timedelta(days=15)), today=NOW.date(), now=NOW)
    assert window_refusal(move_in(NOW.date() - timedelta(days=14)), today=NOW.date(), now=NOW) is None
    assert "mailed_code" in confirmation_refusal(move_in(NOW.date()), OnlinePolicy(residence_confirmation=(ResidenceConfirmation.landlord,)))


@pytest.mark.parametrize("count, last_check, refused", [
    (0, NOW - timedelta(days=30), False),
    (1, NOW - timedelta(days=30), False),
    (2, NOW - timedelta(days=30), True),  # the default limit: 2 consecutive online procedures
    (0, NOW - timedelta(days=365 * 5 + 1), True),  # 5 years since the last in-person check
    (0, None, True),
])
def test_identity_assurance_limits(count, last_check, refused):
    state = AssuranceState(resident_code="12345678903", consecutive_online_procedures=count, last_in_person_check_at=last_check, credential_uses=count)
    reason = assurance_refusal(state, OnlinePolicy(), now=NOW)
    assert (reason is not None) is refused
    if refused:
        assert "in-person identity check" in reason
