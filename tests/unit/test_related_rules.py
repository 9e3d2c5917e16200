"""Rules of the related municipal affairs (services/municipal_rrs/related.py) and the staff screens' date labels."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from contracts.identity import ChangeReason, RegistrationStatus
from contracts.related import EndSeal, RegisterNonResident, SealEndReason
from services.municipal_rrs.domain import Resident
from services.municipal_rrs.related import age_on, automatic_end_reason, seal_refusal
from services.municipal_rrs.ui.labels import wareki
from tests.unit.test_rrs_domain import HOUSEHOLD, register_cmd

TODAY = date(2026, 6, 1)


def resident() -> Resident:
    person, _ = Resident.register(register_cmd(), resident_code="12345678901", individual_number="621498320257", municipality_code="131016",
                                  household_id=HOUSEHOLD, today=TODAY)
    return person


def refusal(**overrides):
    fields = dict(holder_status="active", holder_birth_date=date(1990, 1, 1), registered_on=TODAY, today=TODAY, holder_has_seal=False)
    return seal_refusal(**{**fields, **overrides})


def test_age_counts_birthdays():
    assert age_on(date(2011, 6, 2), date(2026, 6, 1)) == 14
    assert age_on(date(2011, 6, 1), date(2026, 6, 1)) == 15


def test_seal_registration_rules():
    assert refusal() is None
    assert "age of 15" in refusal(holder_birth_date=date(2011, 6, 2))
    assert refusal(holder_birth_date=date(2011, 6, 1)) is None
    assert "already has" in refusal(holder_has_seal=True)
    for status in ("moving_out", "deceased", "removed"):
        assert "not an active resident" in refusal(holder_status=status)
    assert "future" in refusal(registered_on=date(2026, 6, 2))


@pytest.mark.parametrize("status, reason, expected", [
    (RegistrationStatus.deceased, ChangeReason.death, SealEndReason.died),
    (RegistrationStatus.moving_out, ChangeReason.move_out, SealEndReason.moved_out),
    (RegistrationStatus.removed, ChangeReason.move_out, SealEndReason.moved_out),  # 国外転出, or 転出確定
    (RegistrationStatus.removed, ChangeReason.ex_officio_removal, SealEndReason.removed),
    (RegistrationStatus.active, ChangeReason.move_within, None),
    (RegistrationStatus.active, ChangeReason.move_out_cancellation, None),  # a cancelled 転出 does not bring the seal back
])
def test_a_seal_ends_when_the_holder_leaves_the_register(status, reason, expected):
    person = resident()
    person.status = status
    event = type("E", (), {"reason": reason})()
    assert automatic_end_reason(person, event) == expected


def test_clerks_cannot_choose_the_automatic_end_reasons():
    assert EndSeal(reason="lost", ended_on=TODAY).reason is SealEndReason.lost
    for reason in ("moved_out", "died", "removed"):
        with pytest.raises(ValidationError):
            EndSeal(reason=reason, ended_on=TODAY)


def test_non_resident_items_are_checked_at_the_boundary():
    base = {"name": {"family_name": "固定", "family_name_kana": "コテイ"}, "birth_date": "1970-04-01", "address_text": "北海道札幌市中央区北1条西2丁目1", "reason": "property_tax"}
    assert RegisterNonResident.model_validate(base).individual_number is None
    for bad in ({"individual_number": "621498320258"}, {"address_text": "<script>"}, {"reason": "curiosity"}, {"address_municipality_code": "131017"}):
        with pytest.raises(ValidationError):
            RegisterNonResident.model_validate({**base, **bad})


def test_wareki_dates():
    assert wareki(date(2019, 5, 1)) == "令和元年5月1日"
    assert wareki(date(2026, 11, 20)) == "令和8年11月20日"
    assert wareki(date(2019, 4, 30)) == "平成31年4月30日"
    assert wareki(date(1989, 1, 7)) == "昭和64年1月7日"
    assert wareki("1970-04-01") == "昭和45年4月1日"
    assert wareki(None) == ""
