"""Between the domain's Resident, its table row, and the contracts."""

from __future__ import annotations

import uuid

from contracts.identity import Address, ChangeReason, IdentityChange, IdentityInfo, MoveDetails, PersonName, RegistrationStatus, Sex
from contracts.register import FamilyRegisterItems, ForeignResidentItems, HouseholdMember, Relationship, ResidentRecord
from services.municipal_rrs.domain import Changed, Resident
from services.municipal_rrs.models import ResidentRow

from datetime import UTC, datetime


def to_row_values(r: Resident) -> dict:
    fr, fo = r.family_register, r.foreign_resident
    return dict(
        resident_code=r.resident_code, individual_number=r.individual_number, version=r.version, sequence=r.sequence,
        status=r.status.value, municipality_code=r.municipality_code,
        family_name=r.name.family_name, given_name=r.name.given_name,
        family_name_kana=r.name.family_name_kana, given_name_kana=r.name.given_name_kana,
        former_surname=r.former_surname, former_surname_kana=r.former_surname_kana, alias=r.alias,
        birth_date=r.birth_date, sex=r.sex.value, postal_code=r.address.postal_code, address_text=r.address.text,
        household_id=r.household_id, relationship=r.relationship.value, became_resident_on=r.became_resident_on,
        previous_address=r.previous_address,
        honseki=fr.honseki if fr else None, hittousha=fr.hittousha if fr else None,
        nationality=fo.nationality if fo else None, residence_status=fo.residence_status if fo else None,
        period_of_stay=fo.period_of_stay if fo else None, period_of_stay_ends=fo.period_of_stay_ends if fo else None,
        residence_card_number=fo.residence_card_number if fo else None,
        special_permanent_resident=fo.special_permanent_resident if fo else False,
        last_change=r.last_change.value, last_change_date=r.last_change_date,
        pending_move=r.pending_move.model_dump_json() if r.pending_move else None,
    )


def from_row(row: ResidentRow) -> Resident:
    return Resident(
        resident_code=row.resident_code, individual_number=row.individual_number, municipality_code=row.municipality_code,
        name=PersonName(family_name=row.family_name, given_name=row.given_name, family_name_kana=row.family_name_kana, given_name_kana=row.given_name_kana),
        birth_date=row.birth_date, sex=Sex(row.sex),
        address=Address(municipality_code=row.municipality_code, postal_code=row.postal_code, text=row.address_text),
        household_id=row.household_id, relationship=Relationship(row.relationship), became_resident_on=row.became_resident_on,
        former_surname=row.former_surname, former_surname_kana=row.former_surname_kana, alias=row.alias,
        previous_address=row.previous_address,
        family_register=FamilyRegisterItems(honseki=row.honseki, hittousha=row.hittousha) if row.honseki else None,
        foreign_resident=ForeignResidentItems(
            nationality=row.nationality, residence_status=row.residence_status, period_of_stay=row.period_of_stay,
            period_of_stay_ends=row.period_of_stay_ends, residence_card_number=row.residence_card_number,
            special_permanent_resident=row.special_permanent_resident,
        ) if row.nationality else None,
        status=RegistrationStatus(row.status), version=row.version, sequence=row.sequence,
        last_change=ChangeReason(row.last_change), last_change_date=row.last_change_date,
        pending_move=MoveDetails.model_validate_json(row.pending_move) if row.pending_move else None,
    )


def to_record(r: Resident, head: HouseholdMember | None = None) -> ResidentRecord:
    return ResidentRecord(
        resident_code=r.resident_code, individual_number=r.individual_number, version=r.version, status=r.status,
        name=r.name, former_surname=r.former_surname, former_surname_kana=r.former_surname_kana, alias=r.alias,
        birth_date=r.birth_date, sex=r.sex, address=r.address, household_id=r.household_id, relationship=r.relationship,
        head_of_household=head, became_resident_on=r.became_resident_on, previous_address=r.previous_address,
        family_register=r.family_register, foreign_resident=r.foreign_resident,
        last_change=r.last_change, last_change_date=r.last_change_date, pending_move=r.pending_move,
    )


def to_identity_change(r: Resident, event: Changed) -> IdentityChange:
    """The only thing that leaves the municipality: 本人確認情報 and the change information."""
    return IdentityChange(
        event_id=uuid.uuid4(), resident_code=r.resident_code, version=r.version, municipality_code=r.municipality_code,
        reason=event.reason, change_date=event.change_date, notified_date=event.notified_date, status=r.status,
        identity=IdentityInfo(
            resident_code=r.resident_code, individual_number=r.individual_number, name=r.name,
            former_surname=r.former_surname, alias=r.alias, birth_date=r.birth_date, sex=r.sex, address=r.address,
        ),
        move=event.move,
        recorded_at=datetime.now(UTC),
    )
