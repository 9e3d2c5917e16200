"""The affairs catalogue (事務): what identity information may be provided for.

In law these are the rows of the annexed tables (別表) of the Basic Resident
Registration Act. Each affair names the level that serves it (national
affairs by the national server, prefectural affairs by the prefecture
server), the items an agency may receive for it, and whether it needs the
resident code itself (others will see a per-agency pseudonym).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import model_validator

from contracts.base import Contract


class Item(StrEnum):
    """Items of 本人確認情報 an agency can be given (the `fields` of a query)."""

    resident_code = "resident_code"
    individual_number = "individual_number"
    name = "name"
    name_kana = "name_kana"
    former_surname = "former_surname"
    alias = "alias"
    birth_date = "birth_date"
    sex = "sex"
    address = "address"
    status = "status"
    change = "change"  # 異動事由・異動年月日
    household = "household"  # 世帯情報: members, head, 続柄 (household-based affairs only)


class Criterion(StrEnum):
    """What a query selects persons by: the criteria members of the queries in ``contracts/provision.py``.

    A criterion is an oracle on the item it compares: an answer that depends on it tells the
    caller whether the person's item fits the guess, so it is the item's disclosure.
    """

    resident_code = "resident_code"
    individual_number = "individual_number"
    pseudonym = "pseudonym"
    family_name = "family_name"
    given_name = "given_name"
    family_name_kana = "family_name_kana"
    given_name_kana = "given_name_kana"
    birth_date = "birth_date"
    sex = "sex"
    address_contains = "address_contains"


#: The item each criterion reveals. None: it reveals no item (a pseudonym is the asking agency's own
#: handle for a person it was already given; another agency's pseudonym finds nobody).
CRITERION_ITEMS: dict[Criterion, Item | None] = {
    Criterion.resident_code: Item.resident_code,
    Criterion.individual_number: Item.individual_number,
    Criterion.pseudonym: None,
    Criterion.family_name: Item.name,
    Criterion.given_name: Item.name,
    Criterion.family_name_kana: Item.name_kana,
    Criterion.given_name_kana: Item.name_kana,
    Criterion.birth_date: Item.birth_date,
    Criterion.sex: Item.sex,
    Criterion.address_contains: Item.address,
}


class Level(StrEnum):
    national = "national"
    prefectural = "prefectural"


class Affair(Contract):
    id: str
    name: str
    legal_basis: str
    level: Level
    items: tuple[Item, ...]
    requires_resident_code: bool
    household_based: bool = False
    #: the affair needs the current address even of a person under a DV support measure (e.g. to pay a
    #: benefit or hand over a card); otherwise a protected person's address is withheld (R-DV-1)
    requires_address: bool = False
    #: how long a change notification waits before delivery, so a municipality can correct an erroneous entry
    hold_seconds: int = 0

    @model_validator(mode="after")
    def _household_item_only_for_household_affairs(self):
        if (Item.household in self.items) != self.household_based:
            raise ValueError(f"{self.id}: the household item belongs exactly to household-based affairs")
        return self

    @model_validator(mode="after")
    def _pseudonymous_affairs_get_no_shared_identifier(self):
        if not self.requires_resident_code and (Item.resident_code in self.items or Item.individual_number in self.items):
            raise ValueError(f"{self.id}: an affair without the resident code may not provide a shared identifier")
        return self


_BASIC = (Item.name, Item.name_kana, Item.former_surname, Item.alias, Item.birth_date, Item.sex, Item.address, Item.status, Item.change)

AFFAIRS: dict[str, Affair] = {
    a.id: a
    for a in (
        Affair(
            id="pension-benefits",
            name="厚生年金保険法による年金たる保険給付の支給に関する事務",
            legal_basis="住民基本台帳法 別表第一",
            level=Level.national,
            items=(Item.resident_code, *_BASIC),
            requires_resident_code=True,
            requires_address=True,
            hold_seconds=3600,
        ),
        Affair(
            id="national-pension",
            name="国民年金法による年金である給付の支給に関する事務",
            legal_basis="住民基本台帳法 別表第一",
            level=Level.national,
            items=(Item.resident_code, *_BASIC),
            requires_resident_code=True,
            requires_address=True,
        ),
        Affair(
            id="passport-issuance",
            name="旅券法による一般旅券の発給に関する事務",
            legal_basis="住民基本台帳法 別表第一",
            level=Level.national,
            items=(Item.name, Item.name_kana, Item.birth_date, Item.sex, Item.address, Item.status),
            requires_resident_code=False,
        ),
        Affair(
            id="mynumber-card",
            name="個人番号カードの交付に関する事務",
            legal_basis="住民基本台帳法 別表第一",
            level=Level.national,
            items=(Item.resident_code, Item.individual_number, *_BASIC),
            requires_resident_code=True,
            requires_address=True,
        ),
        Affair(
            id="child-allowance",
            name="児童手当法による児童手当の支給に関する事務",
            legal_basis="住民基本台帳法 別表第一",
            level=Level.national,
            items=(Item.resident_code, *_BASIC, Item.household),
            requires_resident_code=True,
            requires_address=True,
            household_based=True,
            hold_seconds=3600,
        ),
        Affair(
            id="employment-insurance",
            name="雇用保険法による失業等給付の支給に関する事務",
            legal_basis="住民基本台帳法 別表第一",
            level=Level.national,
            items=(Item.name, Item.name_kana, Item.birth_date, Item.sex, Item.address, Item.status, Item.change),
            requires_resident_code=False,
        ),
        Affair(
            id="pref-driver-license",
            name="道路交通法による運転免許に関する事務",
            legal_basis="住民基本台帳法 別表第五",
            level=Level.prefectural,
            items=(Item.name, Item.name_kana, Item.birth_date, Item.sex, Item.address, Item.status),
            requires_resident_code=False,
        ),
        Affair(
            id="pref-disability-certificate",
            name="身体障害者福祉法による身体障害者手帳の交付に関する事務",
            legal_basis="住民基本台帳法 別表第五",
            level=Level.prefectural,
            items=(Item.resident_code, *_BASIC),
            requires_resident_code=True,
            requires_address=True,
        ),
    )
}


def criteria_allowed(affair: Affair) -> frozenset[Criterion]:
    """The criteria a query for this affair may use: those on items the affair may receive (DESIGN: you cannot
    search by what you cannot see). ``fields`` narrows what is sent, not what may be asked."""
    return frozenset(c for c, item in CRITERION_ITEMS.items() if item is None or item in affair.items)


def affair(affair_id: str) -> Affair | None:
    return AFFAIRS.get(affair_id)
