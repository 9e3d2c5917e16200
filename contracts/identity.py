"""本人確認情報 — the identity information the network carries, and its changes.

The network carries only this minimum: name (with 旧氏 and 通称 where
recorded), birth date, sex, address, 住民票コード, 個人番号, and the change
information (異動事由, 異動年月日). Family-register (戸籍) items, households
and residence-status details stay in the municipality.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import Field, StrictInt

from contracts.base import Contract
from contracts.identifiers import IndividualNumber, LocalGovernmentCode, ResidentCode
from contracts.text import AddressText, IsoDate, KanaText, LabelText, NameText, PostalCode


class Sex(StrEnum):
    male = "male"  # 男
    female = "female"  # 女


class ChangeReason(StrEnum):
    """異動事由 — why a record changed."""

    birth = "birth"  # 出生
    death = "death"  # 死亡
    move_within = "move_within"  # 転居
    move_in = "move_in"  # 転入
    move_out = "move_out"  # 転出
    name_change = "name_change"  # 氏名の変更
    correction = "correction"  # 届出による修正
    ex_officio_record = "ex_officio_record"  # 職権記載
    ex_officio_removal = "ex_officio_removal"  # 職権消除
    ex_officio_correction = "ex_officio_correction"  # 職権修正
    ex_officio_restoration = "ex_officio_restoration"  # 職権回復: an erroneous removal or death undone
    household_change = "household_change"  # 世帯変更 (stays in the municipality)
    move_out_cancellation = "move_out_cancellation"  # 転出取消: the person stays after all


class RegistrationStatus(StrEnum):
    active = "active"  # 住民票が有効
    deceased = "deceased"  # 死亡により消除
    removed = "removed"  # その他の消除 (職権消除, 転出 confirmed or abroad)
    moving_out = "moving_out"  # 転出予定: in transit to a known destination municipality


class PersonName(Contract):
    family_name: NameText
    given_name: NameText | None = None
    family_name_kana: KanaText | None = None
    given_name_kana: KanaText | None = None


class Address(Contract):
    municipality_code: LocalGovernmentCode
    postal_code: PostalCode | None = None
    text: AddressText


class IdentityInfo(Contract):
    """本人確認情報 of one person, as of one version."""

    resident_code: ResidentCode
    individual_number: IndividualNumber
    name: PersonName
    former_surname: NameText | None = None  # 旧氏
    alias: NameText | None = None  # 通称 (foreign residents)
    birth_date: IsoDate
    sex: Sex
    address: Address


class MoveDetails(Contract):
    """Where a move comes from and goes to: what makes an in-transit person traceable.

    On a 転出 the destination is known (a municipality, or a country abroad);
    on a 転入 the origin is (a municipality, or ``None`` when from abroad).
    """

    procedure_id: UUID  # one 転出届 or 転入届, possibly for a whole household
    origin_municipality_code: LocalGovernmentCode | None = None
    destination_municipality_code: LocalGovernmentCode | None = None
    destination_country: LabelText | None = None  # 国外転出
    planned_date: IsoDate | None = None  # 転出予定日


class IdentityChange(Contract):
    """One change of one person's 本人確認情報: RRS → CS → prefecture → national.

    ``version`` counts this person's changes (1 = first registration) and
    never restarts; each tier applies version n only after n−1, which is what
    keeps the tiers identical without trusting delivery order.
    """

    kind: Literal["identity-change/v1"] = "identity-change/v1"
    event_id: UUID
    resident_code: ResidentCode
    version: StrictInt = Field(ge=1, le=1_000_000)
    municipality_code: LocalGovernmentCode
    reason: ChangeReason
    change_date: IsoDate  # 異動年月日
    notified_date: IsoDate | None = None  # 届出年月日
    status: RegistrationStatus
    identity: IdentityInfo
    move: MoveDetails | None = None  # on 転出, 転入 and 転出取消
    recorded_at: datetime


class IdentityChangeAck(Contract):
    event_id: UUID
    resident_code: ResidentCode
    version: int
    outcome: Literal["accepted", "duplicate"]


class IdentityChangeBatch(Contract):
    """Answer to a resync request: a person's changes after a given version."""

    resident_code: ResidentCode
    changes: list[IdentityChange]
