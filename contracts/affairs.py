"""The affairs catalogue (事務): what identity information may be provided for.

In law these are the rows of the annexed tables (別表) of the Basic Resident
Registration Act. Each affair names the level that serves it (national
affairs by the national server, prefectural affairs by the prefecture
server), the items an agency may receive for it, and whether it needs the
resident code itself (others will see a per-agency pseudonym).
"""

from __future__ import annotations

from enum import StrEnum

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
        ),
        Affair(
            id="national-pension",
            name="国民年金法による年金である給付の支給に関する事務",
            legal_basis="住民基本台帳法 別表第一",
            level=Level.national,
            items=(Item.resident_code, *_BASIC),
            requires_resident_code=True,
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
        ),
        Affair(
            id="child-allowance",
            name="児童手当法による児童手当の支給に関する事務",
            legal_basis="住民基本台帳法 別表第一",
            level=Level.national,
            items=(Item.resident_code, *_BASIC),
            requires_resident_code=True,
            household_based=True,
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
        ),
    )
}


def affair(affair_id: str) -> Affair | None:
    return AFFAIRS.get(affair_id)
