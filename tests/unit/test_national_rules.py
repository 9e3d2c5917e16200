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


def change(reason: ChangeReason, *, municipality: str = CHIYODA, version: int = 1, status: RegistrationStatus = RegistrationStatus.active) -> IdentityChange:
    return IdentityChange.model_validate({
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


def test_move_in_from_another_municipality_allowed():
    current = CurrentRow(municipality_code=CHIYODA, status="removed", version=3)
    check_single_registration(current, change(ChangeReason.move_in, municipality=TOYONAKA, version=4))


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

