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
from datetime import date, timedelta

from contracts.identity import Address, ChangeReason, IdentityChange, MoveDetails, PersonName, RegistrationStatus, Sex
from contracts.moves import CsNotice, Discrepancy, MoveInNotice, MoveInReply, MoveOutCancellation, MoveOutCertificate, MoveOutWithdrawal
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
    move: MoveDetails | None = None


#: A 転出届 is filed up to this long before the move, or within 14 days after it (住民基本台帳法 24条).
MOVE_OUT_FILED_BEFORE = timedelta(days=30)
MOVE_OUT_FILED_AFTER = timedelta(days=14)


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
    pending_move: MoveDetails | None = None  # the 転出 filed and not yet confirmed by a 転入通知

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
        if cmd.reason is ChangeReason.move_in and cmd.became_resident_on > today:
            raise RegistryRuleViolation("a 転入届 is filed after moving in")
        arrival = MoveDetails(procedure_id=uuid.uuid4()) if cmd.reason is ChangeReason.move_in else None  # 国外からの転入: no origin
        return resident, resident._record(Changed(cmd.reason, change_date, cmd.notified_date, None, identity_changed=True, move=arrival))

    @classmethod
    def arrive(cls, certificate: MoveOutCertificate, *, municipality_code: str, new_address: Address, household_id: uuid.UUID,
               relationship: Relationship, move_date: date, notified_date: date | None, procedure_id: uuid.UUID, today: date,
               sequence_before: int = 0) -> tuple["Resident", Changed]:
        """転入 from the 転出証明書情報: the same codes, the version sequence continued from the 転出."""
        if certificate.destination_municipality_code != municipality_code:
            raise RegistryRuleViolation(f"the move-out certificate names {certificate.destination_municipality_code} as destination, not this municipality")
        if new_address.municipality_code != municipality_code:
            raise RegistryRuleViolation("the new address is not in this municipality")
        if move_date > today:
            raise RegistryRuleViolation("a 転入届 is filed after moving in")
        person = certificate.person
        ident = person.change.identity
        if move_date < ident.birth_date:
            raise RegistryRuleViolation("the move date is before the birth date")
        resident = cls(
            resident_code=ident.resident_code, individual_number=ident.individual_number, municipality_code=municipality_code,
            name=ident.name, birth_date=ident.birth_date, sex=ident.sex, address=new_address, household_id=household_id,
            relationship=relationship, became_resident_on=move_date, former_surname=ident.former_surname,
            former_surname_kana=person.former_surname_kana, alias=ident.alias, previous_address=ident.address.text,
            family_register=person.family_register, foreign_resident=person.foreign_resident,
            version=person.change.version, sequence=sequence_before,
        )
        origin = None if certificate.from_abroad else certificate.municipality_code
        move = MoveDetails(procedure_id=procedure_id, origin_municipality_code=origin)
        return resident, resident._record(Changed(ChangeReason.move_in, move_date, notified_date, None, identity_changed=True, move=move))

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

    def move_out(self, *, procedure_id: uuid.UUID, destination_code: str | None, destination_country: str | None,
                 planned_date: date, notified_date: date | None, today: date) -> Changed:
        """転出届: to another municipality the person is in transit until its 転入; abroad the record closes."""
        self._must_be_active()
        if (destination_code is None) == (destination_country is None):
            raise RegistryRuleViolation("a move-out goes to exactly one municipality or one country abroad")
        if destination_code == self.municipality_code:
            raise RegistryRuleViolation("a move within the municipality is a 転居, not a 転出")
        if not today - MOVE_OUT_FILED_AFTER <= planned_date <= today + MOVE_OUT_FILED_BEFORE:
            raise RegistryRuleViolation("a 転出届 is filed from 30 days before the move to 14 days after it")
        self.pending_move = MoveDetails(
            procedure_id=procedure_id, origin_municipality_code=self.municipality_code, destination_municipality_code=destination_code,
            destination_country=destination_country, planned_date=planned_date,
        )
        self.status = RegistrationStatus.removed if destination_country is not None else RegistrationStatus.moving_out
        return self._record(Changed(ChangeReason.move_out, planned_date, notified_date, None, identity_changed=True, move=self.pending_move))

    def cancel_move_out(self, cmd: MoveOutCancellation) -> Changed:
        """転出取消: the person stays; allowed while the move has not been confirmed by a 転入."""
        if self.pending_move is None or self.last_change is not ChangeReason.move_out:
            raise RegistryRuleViolation("there is no pending move-out to cancel")
        cancelled, self.pending_move = self.pending_move, None
        self.status = RegistrationStatus.active
        return self._record(Changed(ChangeReason.move_out_cancellation, cmd.cancellation_date, None, cmd.explanation, identity_changed=True, move=cancelled))

    def close_after_move_in(self, change: IdentityChange) -> tuple[Changed, list[Discrepancy]]:
        """転入通知 received: the record closes (転出確定); what differs from the new registration is reported back.

        The network already carries the 転入 version, so closing changes nothing the network sees.
        """
        found: list[Discrepancy] = []
        ident = change.identity

        def differs(item, mine, theirs):
            if mine != theirs:
                found.append(Discrepancy(item=item, origin_value=str(mine), destination_value=str(theirs)))

        differs("name", f"{self.name.family_name} {self.name.given_name or ''}".strip(), f"{ident.name.family_name} {ident.name.given_name or ''}".strip())
        differs("birth_date", self.birth_date.isoformat(), ident.birth_date.isoformat())
        differs("sex", self.sex.value, ident.sex.value)
        differs("individual_number", self.individual_number, ident.individual_number)
        differs("version", self.version + 1, change.version)
        if self.status is not RegistrationStatus.moving_out or self.pending_move is None or self.pending_move.destination_municipality_code != change.municipality_code:
            raise RegistryRuleViolation(f"a 転入通知 from {change.municipality_code} does not match a pending move-out of {self.resident_code}")
        self.status = RegistrationStatus.removed
        self.pending_move = None
        event = Changed(ChangeReason.move_out, change.change_date, None, f"転出確定: 転入通知 from {change.municipality_code}", identity_changed=False)
        self.sequence += 1
        self.last_change, self.last_change_date = event.reason, event.change_date
        return event, found

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


def proxy_refusal(filer: Resident, members: list[Resident]) -> str | None:
    """A filing for others (R-PRV-3 proxy) is made by their head of household, for members of that household."""
    if not members:
        return None
    if filer.relationship is not Relationship.head or filer.status is not RegistrationStatus.active:
        return "only the head of household (世帯主) may file for other members"
    strangers = [m.resident_code for m in members if m.household_id != filer.household_id or m.status is not RegistrationStatus.active]
    if strangers:
        return f"not members of the filer's household: {', '.join(strangers)}"
    return None


#: What a 転入通知 closing can be reordered with, within one pull: these touch no record on the register.
_TOUCHING_NO_RECORD = (MoveInReply, MoveOutCertificate, MoveOutWithdrawal)


def closable_together(notices: list[CsNotice]) -> list[CsNotice]:
    """The 転入通知 of a pull that may close their records together, before the pull's other notices are taken:
    all of them, when each names another person and every other notice touches no record; else none."""
    closing = [n for n in notices if isinstance(n.message, MoveInNotice)]
    if len(closing) < 2 or len({n.message.resident_code for n in closing}) < len(closing):
        return []
    if not all(isinstance(n.message, (MoveInNotice, *_TOUCHING_NO_RECORD)) for n in notices):
        return []
    return closing
