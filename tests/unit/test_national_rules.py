"""The national server's one-registration-at-a-time rule (services/national_server/domain.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from contracts.identity import ChangeReason, IdentityChange, RegistrationStatus
from services.national_server.domain import RegistrationConflict, check_single_registration

CHIYODA = "131016"
SHIBUYA = "131130"
TOYONAKA = "272035"
RESIDENT_CODE = "12345678903"


@dataclass
class CurrentRow:
    """The columns of the national server's current-identity row the rule reads."""

    municipality_code: str
    status: str
    version: int
    last_reason: str = "birth"
    payload: str = ""

    def __post_init__(self):
        if not self.payload:
            self.payload = change(ChangeReason(self.last_reason), municipality=self.municipality_code, version=self.version).model_dump_json()


def change(reason: ChangeReason, *, municipality: str = CHIYODA, version: int = 1, status: RegistrationStatus = RegistrationStatus.active, move: dict | None = None) -> IdentityChange:
    return IdentityChange.model_validate({
        "move": move,
        "event_id": str(uuid.uuid4()),
        "resident_code": RESIDENT_CODE,
        "version": version,
        "municipality_code": municipality,
        "reason": reason.value,
        "change_date": "2024-04-01",
        "status": status.value,
        "identity": {
            "resident_code": RESIDENT_CODE,
            "individual_number": "621498320257",
            "name": {"family_name": "山田", "family_name_kana": "ヤマダ"},
            "birth_date": "1980-01-02",
            "sex": "female",
            "address": {"municipality_code": municipality, "text": "東京都千代田区千代田1番1号"},
        },
        "recorded_at": datetime(2024, 4, 1, tzinfo=timezone.utc).isoformat(),
    })


@pytest.mark.parametrize("reason", [ChangeReason.birth, ChangeReason.ex_officio_record, ChangeReason.move_in])
def test_first_change_may_register_the_person(reason):
    check_single_registration(None, change(reason))


@pytest.mark.parametrize(
    "reason",
    [r for r in ChangeReason if r not in {ChangeReason.birth, ChangeReason.ex_officio_record, ChangeReason.move_in}],
)
def test_first_change_must_be_a_registering_reason(reason):
    with pytest.raises(RegistrationConflict, match="first change must register"):
        check_single_registration(None, change(reason))


@pytest.mark.parametrize("reason", [ChangeReason.move_within, ChangeReason.death, ChangeReason.name_change, ChangeReason.move_out, ChangeReason.ex_officio_correction])
def test_change_from_another_municipality_without_move_in_refused(reason):
    current = CurrentRow(municipality_code=CHIYODA, status="active", version=3)
    with pytest.raises(RegistrationConflict, match="without a move-in"):
        check_single_registration(current, change(reason, municipality=SHIBUYA, version=4))


def _in_transit(destination: str | None = TOYONAKA, country: str | None = None, status: str = "moving_out") -> CurrentRow:
    move = {"procedure_id": str(uuid.uuid4()), "origin_municipality_code": CHIYODA, "destination_municipality_code": destination, "destination_country": country}
    moved = change(ChangeReason.move_out, version=3, status=RegistrationStatus(status), move=move)
    return CurrentRow(municipality_code=CHIYODA, status=status, version=3, last_reason="move_out", payload=moved.model_dump_json())


def _arrival(municipality: str = TOYONAKA, origin: str | None = CHIYODA) -> IdentityChange:
    return change(ChangeReason.move_in, municipality=municipality, version=4, move={"procedure_id": str(uuid.uuid4()), "origin_municipality_code": origin})


def test_move_in_at_the_destination_of_the_pending_move_out_allowed():
    check_single_registration(_in_transit(), _arrival())


def test_move_in_elsewhere_than_the_destination_refused():
    with pytest.raises(RegistrationConflict, match="without a matching move-out"):
        check_single_registration(_in_transit(destination=SHIBUYA), _arrival(TOYONAKA))


def test_move_in_of_a_person_still_registered_refused():
    current = CurrentRow(municipality_code=CHIYODA, status="active", version=3)
    with pytest.raises(RegistrationConflict, match="without a matching move-out"):
        check_single_registration(current, _arrival(TOYONAKA))


def test_move_in_after_emigration_allowed_anywhere():
    check_single_registration(_in_transit(destination=None, country="アメリカ合衆国", status="removed"), _arrival(SHIBUYA, origin=None))


def test_move_in_after_removal_that_was_not_emigration_refused():
    current = CurrentRow(municipality_code=CHIYODA, status="removed", version=3, last_reason="ex_officio_removal")
    with pytest.raises(RegistrationConflict, match="without a matching move-out"):
        check_single_registration(current, _arrival())


def test_first_registration_by_a_move_in_from_a_municipality_refused():
    with pytest.raises(RegistrationConflict, match="never registered"):
        check_single_registration(None, _arrival())


def test_cancelling_a_pending_move_out_allowed_only_when_one_is_pending():
    check_single_registration(_in_transit(), change(ChangeReason.move_out_cancellation, version=4))
    with pytest.raises(RegistrationConflict, match="no pending move-out"):
        check_single_registration(CurrentRow(municipality_code=CHIYODA, status="active", version=3), change(ChangeReason.move_out_cancellation, version=4))


def test_move_out_of_a_person_in_transit_refused():
    with pytest.raises(RegistrationConflict, match="move-out of a person who is moving_out"):
        check_single_registration(_in_transit(), change(ChangeReason.move_out, version=4))


@pytest.mark.parametrize("reason", [ChangeReason.move_within, ChangeReason.name_change, ChangeReason.death, ChangeReason.move_out, ChangeReason.correction])
def test_normal_update_from_the_registering_municipality_allowed(reason):
    current = CurrentRow(municipality_code=CHIYODA, status="active", version=2)
    check_single_registration(current, change(reason, version=3))


@pytest.mark.parametrize("reason", [ChangeReason.birth, ChangeReason.ex_officio_record])
def test_registering_an_active_person_again_refused(reason):
    current = CurrentRow(municipality_code=CHIYODA, status="active", version=2)
    with pytest.raises(RegistrationConflict, match="already registered"):
        check_single_registration(current, change(reason, version=3))


def test_ex_officio_record_after_removal_allowed():
    current = CurrentRow(municipality_code=CHIYODA, status="removed", version=2)
    check_single_registration(current, change(ChangeReason.ex_officio_record, version=3))

