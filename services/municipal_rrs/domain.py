"""Registry rules of the resident register, as plain Python (no I/O).

A :class:`Resident` changes only through the methods below; each checks the
rule, bumps the record's sequence (and the network-visible identity version
when 本人確認情報 changed), and returns the past-tense :class:`Changed` event
that the service layer writes to the history and, if the identity changed,
to the outbox for the CS.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import date

from contracts.identity import Address, ChangeReason, PersonName, RegistrationStatus, Sex
from contracts.register import (
    ChangeHousehold, ChangeName, CorrectRecord, FamilyRegisterItems, ForeignResidentItems,
    MoveWithin, RecordDeath, RegisterResident, Relationship, RemoveExOfficio, RestoreExOfficio,
)


class RegistryRuleViolation(Exception):
    """A requested change breaks a registry rule; nothing is written."""


@dataclass(frozen=True)
class Changed:
    reason: ChangeReason
    change_date: date
    notified_date: date | None
    explanation: str | None
    identity_changed: bool


@dataclass
class Resident:
    resident_code: str
    individual_number: str
    municipality_code: str
    name: PersonName
    birth_date: date
    sex: Sex
    address: Address
    household_id: uuid.UUID
    relationship: Relationship
    became_resident_on: date
    former_surname: str | None = None
    former_surname_kana: str | None = None
    alias: str | None = None
    previous_address: str | None = None
    family_register: FamilyRegisterItems | None = None
    foreign_resident: ForeignResidentItems | None = None
    status: RegistrationStatus = RegistrationStatus.active
    version: int = 0  # network-visible identity version
    sequence: int = 0  # every change, including those the network never sees
    last_change: ChangeReason = ChangeReason.birth
    last_change_date: date = field(default_factory=date.today)

    # --- creation -----------------------------------------------------------------
    @classmethod
    def register(cls, cmd: RegisterResident, *, resident_code: str, individual_number: str, municipality_code: str, household_id: uuid.UUID, today: date) -> tuple["Resident", Changed]:
        if cmd.address.municipality_code != municipality_code:
            raise RegistryRuleViolation("the address is not in this municipality")
        if cmd.birth_date > today:
            raise RegistryRuleViolation("the birth date is in the future")
        if cmd.became_resident_on < cmd.birth_date:
            raise RegistryRuleViolation("a person cannot become a resident before birth")
        if cmd.reason is ChangeReason.birth and cmd.became_resident_on != cmd.birth_date:
            raise RegistryRuleViolation("on a birth, the person becomes a resident on the birth date")
        resident = cls(
            resident_code=resident_code, individual_number=individual_number, municipality_code=municipality_code,
            name=cmd.name, birth_date=cmd.birth_date, sex=cmd.sex, address=cmd.address, household_id=household_id,
            relationship=cmd.household.relationship, became_resident_on=cmd.became_resident_on,
            former_surname=cmd.former_surname, former_surname_kana=cmd.former_surname_kana, alias=cmd.alias,
            previous_address=cmd.previous_address, family_register=cmd.family_register, foreign_resident=cmd.foreign_resident,
        )
        change_date = cmd.birth_date if cmd.reason is ChangeReason.birth else cmd.became_resident_on
        return resident, resident._record(Changed(cmd.reason, change_date, cmd.notified_date, None, identity_changed=True))

    # --- changes ------------------------------------------------------------------
    def record_death(self, cmd: RecordDeath, *, today: date) -> Changed:
        self._must_be_active()
        if cmd.death_date < self.birth_date:
            raise RegistryRuleViolation("the death date is before the birth date")
        if cmd.death_date > today:
            raise RegistryRuleViolation("the death date is in the future")
        self.status = RegistrationStatus.deceased
        return self._record(Changed(ChangeReason.death, cmd.death_date, cmd.notified_date, None, identity_changed=True))

    def move_within(self, cmd: MoveWithin) -> Changed:
        self._must_be_active()
        if cmd.new_address.municipality_code != self.municipality_code:
            raise RegistryRuleViolation("転居 stays within the municipality; a move elsewhere is 転出")
        if cmd.new_address == self.address:
            raise RegistryRuleViolation("the new address is the current address")
        self.previous_address = self.address.text
        self.address = cmd.new_address
        return self._record(Changed(ChangeReason.move_within, cmd.move_date, cmd.notified_date, None, identity_changed=True))

    def change_name(self, cmd: ChangeName) -> Changed:
        self._must_be_active()
        if self.foreign_resident is None and cmd.name.family_name_kana is None:
            raise RegistryRuleViolation("Japanese nationals are recorded with the furigana of their name")
        self.name = cmd.name
        if cmd.former_surname is not None:
            self.former_surname, self.former_surname_kana = cmd.former_surname, cmd.former_surname_kana
        return self._record(Changed(ChangeReason.name_change, cmd.change_date, cmd.notified_date, None, identity_changed=True))

    def correct(self, cmd: CorrectRecord) -> Changed:
        updates = {k: v for k, v in (("name", cmd.name), ("address", cmd.address), ("birth_date", cmd.birth_date), ("sex", cmd.sex), ("alias", cmd.alias)) if v is not None}
        if not updates:
            raise RegistryRuleViolation("a correction must change at least one item")
        if cmd.address is not None and cmd.address.municipality_code != self.municipality_code:
            raise RegistryRuleViolation("a corrected address stays within the municipality")
        if cmd.name is not None and self.foreign_resident is None and cmd.name.family_name_kana is None:
            raise RegistryRuleViolation("Japanese nationals are recorded with the furigana of their name")
        for key, value in updates.items():
            setattr(self, key, value)
        reason = ChangeReason.ex_officio_correction if cmd.ex_officio else ChangeReason.correction
        return self._record(Changed(reason, cmd.correction_date, None, cmd.explanation, identity_changed=True))

    def remove_ex_officio(self, cmd: RemoveExOfficio) -> Changed:
        self._must_be_active()
        self.status = RegistrationStatus.removed
        return self._record(Changed(ChangeReason.ex_officio_removal, cmd.removal_date, None, cmd.explanation, identity_changed=True))

    def restore_ex_officio(self, cmd: RestoreExOfficio) -> Changed:
        """Undo an erroneous death or removal; agencies that were told get a retraction."""
        if self.status is RegistrationStatus.active:
            raise RegistryRuleViolation("the record is not closed; there is nothing to restore")
        self.status = RegistrationStatus.active
        return self._record(Changed(ChangeReason.ex_officio_restoration, cmd.restoration_date, None, cmd.explanation, identity_changed=True))

    def change_household(self, cmd: ChangeHousehold, *, household_id: uuid.UUID) -> Changed:
        """世帯変更 — household data stays in the municipality, so the network sees nothing."""
        self._must_be_active()
        if household_id == self.household_id and cmd.household.relationship == self.relationship:
            raise RegistryRuleViolation("the person is already in that household with that relationship")
        self.household_id = household_id
        self.relationship = cmd.household.relationship
        return self._record(Changed(ChangeReason.household_change, cmd.change_date, cmd.notified_date, None, identity_changed=False))

    # --- helpers ------------------------------------------------------------------
    def _must_be_active(self) -> None:
        if self.status is not RegistrationStatus.active:
            raise RegistryRuleViolation(f"the record is closed ({self.status.value}); only a correction can change it")

    def _record(self, event: Changed) -> Changed:
        self.sequence += 1
        if event.identity_changed:
            self.version += 1
            self.last_change, self.last_change_date = event.reason, event.change_date
        return event

    def copy(self) -> "Resident":
        return replace(self)
