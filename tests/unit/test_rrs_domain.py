"""Registry rules of the resident register (services/municipal_rrs/domain.py)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest

from contracts.identity import Address, ChangeReason, PersonName, RegistrationStatus, Sex
from contracts.register import (
    ChangeHousehold, ChangeName, CorrectRecord, HouseholdPlacement, MoveWithin, RecordDeath, RegisterResident,
    Relationship, RemoveExOfficio,
)
from services.municipal_rrs.domain import RegistryRuleViolation, Resident

MUNICIPALITY = "131016"  # 千代田区
OTHER_MUNICIPALITY = "131130"  # 渋谷区
TODAY = date(2024, 6, 1)
BIRTH = date(2024, 4, 1)
HOUSEHOLD = uuid.UUID("7d0c5a54-0a6e-4f0b-9a8e-2d7a3c1b5e90")


def address(text: str = "東京都千代田区千代田1番1号", municipality: str = MUNICIPALITY, postal: str | None = "1000001") -> Address:
    return Address(municipality_code=municipality, postal_code=postal, text=text)


def register_cmd(**overrides) -> RegisterResident:
    fields = dict(
        reason=ChangeReason.birth,
        name=PersonName(family_name="山田", given_name="花子", family_name_kana="ヤマダ", given_name_kana="ハナコ"),
        birth_date=BIRTH,
        sex=Sex.female,
        address=address(),
        household=HouseholdPlacement(relationship=Relationship.head),
        became_resident_on=BIRTH,
        family_register={"honseki": "東京都千代田区千代田1番", "hittousha": "山田太郎"},
    )
    fields.update(overrides)
    return RegisterResident.model_validate(fields)


def register(cmd: RegisterResident | None = None, *, today: date = TODAY):
    return Resident.register(
        cmd or register_cmd(), resident_code="12345678903", individual_number="621498320257",
        municipality_code=MUNICIPALITY, household_id=HOUSEHOLD, today=today,
    )


@pytest.fixture
def resident() -> Resident:
    return register()[0]


# --- registration --------------------------------------------------------------------------------

def test_register_birth_sets_version_one():
    resident, changed = register()
    assert resident.version == 1
    assert resident.sequence == 1
    assert resident.status is RegistrationStatus.active
    assert changed.reason is ChangeReason.birth
    assert changed.change_date == BIRTH
    assert changed.identity_changed
    assert resident.last_change is ChangeReason.birth and resident.last_change_date == BIRTH
    assert resident.household_id == HOUSEHOLD and resident.relationship is Relationship.head


def test_register_ex_officio_dates_the_change_on_becoming_resident():
    cmd = register_cmd(reason=ChangeReason.ex_officio_record, birth_date=date(1980, 1, 2), became_resident_on=date(2024, 5, 1))
    resident, changed = register(cmd)
    assert resident.version == 1
    assert changed.reason is ChangeReason.ex_officio_record
    assert changed.change_date == date(2024, 5, 1)
    assert resident.last_change_date == date(2024, 5, 1)


def test_register_birth_date_in_the_future_refused():
    with pytest.raises(RegistryRuleViolation, match="future"):
        register(register_cmd(birth_date=TODAY + timedelta(days=1), became_resident_on=TODAY + timedelta(days=1)))


def test_register_birth_today_allowed():
    resident, _ = register(register_cmd(birth_date=TODAY, became_resident_on=TODAY))
    assert resident.birth_date == TODAY


def test_register_address_in_another_municipality_refused():
    with pytest.raises(RegistryRuleViolation, match="municipality"):
        register(register_cmd(address=address("東京都渋谷区宇田川町1番1号", OTHER_MUNICIPALITY, None)))


def test_register_resident_before_birth_refused():
    with pytest.raises(RegistryRuleViolation, match="before birth"):
        register(register_cmd(reason=ChangeReason.ex_officio_record, birth_date=date(1980, 1, 2), became_resident_on=date(1979, 12, 31)))


def test_register_birth_must_make_resident_on_birth_date():
    with pytest.raises(RegistryRuleViolation, match="birth date"):
        register(register_cmd(became_resident_on=BIRTH + timedelta(days=3)))


# --- death ---------------------------------------------------------------------------------------

def test_death_closes_the_record(resident):
    changed = resident.record_death(RecordDeath(death_date=date(2024, 5, 20)), today=TODAY)
    assert resident.status is RegistrationStatus.deceased
    assert resident.version == 2 and resident.sequence == 2
    assert changed.reason is ChangeReason.death and changed.change_date == date(2024, 5, 20)
    assert resident.last_change is ChangeReason.death


def test_second_death_refused(resident):
    resident.record_death(RecordDeath(death_date=date(2024, 5, 20)), today=TODAY)
    with pytest.raises(RegistryRuleViolation, match="closed"):
        resident.record_death(RecordDeath(death_date=date(2024, 5, 21)), today=TODAY)
    assert resident.version == 2 and resident.sequence == 2


def test_closed_record_refuses_other_changes_but_correction(resident):
    resident.record_death(RecordDeath(death_date=date(2024, 5, 20)), today=TODAY)
    with pytest.raises(RegistryRuleViolation):
        resident.move_within(MoveWithin(new_address=address("東京都千代田区丸の内1番1号"), move_date=date(2024, 5, 21)))
    with pytest.raises(RegistryRuleViolation):
        resident.change_name(ChangeName(name=PersonName(family_name="田中", family_name_kana="タナカ"), change_date=date(2024, 5, 21)))
    with pytest.raises(RegistryRuleViolation):
        resident.remove_ex_officio(RemoveExOfficio(removal_date=date(2024, 5, 21), explanation="居住実態なし"))
    with pytest.raises(RegistryRuleViolation):
        resident.change_household(ChangeHousehold(household=HouseholdPlacement(relationship=Relationship.head), change_date=date(2024, 5, 21)), household_id=uuid.uuid4())
    assert resident.version == 2
    resident.correct(CorrectRecord(sex=Sex.male, correction_date=date(2024, 5, 22), explanation="出生届の記載誤り"))
    assert resident.sex is Sex.male and resident.version == 3
    assert resident.status is RegistrationStatus.deceased


def test_death_before_birth_refused(resident):
    with pytest.raises(RegistryRuleViolation, match="before the birth"):
        resident.record_death(RecordDeath(death_date=BIRTH - timedelta(days=1)), today=TODAY)
    assert resident.status is RegistrationStatus.active and resident.version == 1


# --- 転居 ----------------------------------------------------------------------------------------

def test_move_within(resident):
    old = resident.address
    new = address("東京都千代田区丸の内1番1号", postal="1000005")
    changed = resident.move_within(MoveWithin(new_address=new, move_date=date(2024, 5, 1)))
    assert resident.address == new
    assert resident.previous_address == old.text
    assert resident.version == 2
    assert changed.reason is ChangeReason.move_within and changed.identity_changed


def test_move_within_to_another_municipality_refused(resident):
    with pytest.raises(RegistryRuleViolation, match="転出"):
        resident.move_within(MoveWithin(new_address=address("東京都渋谷区宇田川町1番1号", OTHER_MUNICIPALITY, None), move_date=date(2024, 5, 1)))
    assert resident.municipality_code == MUNICIPALITY and resident.version == 1


def test_move_within_to_the_same_address_refused(resident):
    with pytest.raises(RegistryRuleViolation, match="current address"):
        resident.move_within(MoveWithin(new_address=address(), move_date=date(2024, 5, 1)))
    assert resident.version == 1 and resident.sequence == 1 and resident.previous_address is None


# --- versions: identity changes only -------------------------------------------------------------

def test_household_change_bumps_sequence_not_version(resident):
    new_household = uuid.uuid4()
    changed = resident.change_household(
        ChangeHousehold(household=HouseholdPlacement(household_id=new_household, relationship=Relationship.child), change_date=date(2024, 5, 1)),
        household_id=new_household,
    )
    assert not changed.identity_changed
    assert changed.reason is ChangeReason.household_change
    assert resident.version == 1
    assert resident.sequence == 2
    assert resident.household_id == new_household and resident.relationship is Relationship.child
    # the network-visible last change is still the birth
    assert resident.last_change is ChangeReason.birth and resident.last_change_date == BIRTH


def test_household_change_to_the_same_placement_refused(resident):
    with pytest.raises(RegistryRuleViolation, match="already"):
        resident.change_household(ChangeHousehold(household=HouseholdPlacement(household_id=HOUSEHOLD, relationship=Relationship.head), change_date=date(2024, 5, 1)), household_id=HOUSEHOLD)
    assert resident.sequence == 1


def test_version_counts_identity_changes_only(resident):
    resident.move_within(MoveWithin(new_address=address("東京都千代田区丸の内1番1号"), move_date=date(2024, 5, 1)))
    h = uuid.uuid4()
    resident.change_household(ChangeHousehold(household=HouseholdPlacement(household_id=h, relationship=Relationship.child), change_date=date(2024, 5, 2)), household_id=h)
    resident.change_name(ChangeName(name=PersonName(family_name="田中", given_name="花子", family_name_kana="タナカ", given_name_kana="ハナコ"), former_surname="山田", former_surname_kana="ヤマダ", change_date=date(2024, 5, 3)))
    resident.correct(CorrectRecord(birth_date=date(2024, 3, 31), correction_date=date(2024, 5, 4), explanation="出生届の記載誤り"))
    assert resident.version == 4  # birth, 転居, 氏名変更, 修正
    assert resident.sequence == 5  # … and the 世帯変更
    assert resident.former_surname == "山田" and resident.name.family_name == "田中"
    assert resident.birth_date == date(2024, 3, 31)
    assert resident.last_change is ChangeReason.ex_officio_correction and resident.last_change_date == date(2024, 5, 4)


def test_refused_change_changes_nothing(resident):
    before = resident.copy()
    with pytest.raises(RegistryRuleViolation):
        resident.move_within(MoveWithin(new_address=address(), move_date=date(2024, 5, 1)))
    assert resident == before


# --- 氏名の変更 / 修正 / 職権消除 ---------------------------------------------------------------

def test_change_name_needs_furigana_for_japanese_nationals(resident):
    with pytest.raises(RegistryRuleViolation, match="furigana"):
        resident.change_name(ChangeName(name=PersonName(family_name="田中"), change_date=date(2024, 5, 1)))
    assert resident.name.family_name == "山田" and resident.version == 1


def test_correction_needs_at_least_one_item(resident):
    with pytest.raises(RegistryRuleViolation, match="at least one"):
        resident.correct(CorrectRecord(correction_date=date(2024, 5, 1), explanation="確認のみ"))
    assert resident.version == 1 and resident.sequence == 1


def test_correction_changes_only_the_given_items(resident):
    changed = resident.correct(CorrectRecord(ex_officio=False, sex=Sex.male, correction_date=date(2024, 5, 1), explanation="届出による修正"))
    assert changed.reason is ChangeReason.correction
    assert changed.explanation == "届出による修正"
    assert resident.sex is Sex.male
    assert resident.name.family_name == "山田" and resident.birth_date == BIRTH
    assert resident.version == 2


def test_correction_of_name_needs_furigana_for_japanese_nationals(resident):
    with pytest.raises(RegistryRuleViolation, match="furigana"):
        resident.correct(CorrectRecord(name=PersonName(family_name="山田", given_name="華子"), correction_date=date(2024, 5, 1), explanation="氏名の誤記"))


def test_remove_ex_officio_closes_the_record(resident):
    changed = resident.remove_ex_officio(RemoveExOfficio(removal_date=date(2024, 5, 1), explanation="居住実態なし"))
    assert resident.status is RegistrationStatus.removed
    assert changed.reason is ChangeReason.ex_officio_removal and changed.explanation == "居住実態なし"
    assert resident.version == 2
    with pytest.raises(RegistryRuleViolation):
        resident.remove_ex_officio(RemoveExOfficio(removal_date=date(2024, 5, 2), explanation="重複"))


def test_copy_is_independent(resident):
    copy = resident.copy()
    resident.move_within(MoveWithin(new_address=address("東京都千代田区丸の内1番1号"), move_date=date(2024, 5, 1)))
    assert copy.version == 1 and copy.address == address()


def test_death_date_in_the_future_refused(resident):
    with pytest.raises(RegistryRuleViolation, match="future"):
        resident.record_death(RecordDeath(death_date=TODAY + timedelta(days=1)), today=TODAY)
    assert resident.status is RegistrationStatus.active and resident.version == 1
