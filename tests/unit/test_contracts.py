"""Boundary contracts refuse what does not fit: characters, lengths, fields, types (contracts/)."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts.identity import IdentityChange, IdentityChangeAck, PersonName
from contracts.provision import ByBasicItems, ByIndividualNumber, ByResidentCode, PersonQuery, ProvisionRecord
from contracts.register import (
    ChangeHousehold, CorrectRecord, ForeignResidentItems, HouseholdPlacement, RegisterResident, Relationship,
)
from contracts.text import AddressText, IsoDate, KanaText, NameText, ReasonText

NAME = TypeAdapter(NameText)
KANA = TypeAdapter(KanaText)
ADDRESS = TypeAdapter(AddressText)
REASON = TypeAdapter(ReasonText)
DATE = TypeAdapter(IsoDate)
QUERY = TypeAdapter(PersonQuery)

RESIDENT_CODE = "12345678903"
INDIVIDUAL_NUMBER = "621498320257"
EVENT_ID = "2b1f6c2e-8d4e-4c3a-9a57-6f1d2f0e9b11"
HOUSEHOLD_ID = "7d0c5a54-0a6e-4f0b-9a8e-2d7a3c1b5e90"


def identity_change_payload() -> dict:
    return {
        "event_id": EVENT_ID,
        "resident_code": RESIDENT_CODE,
        "version": 1,
        "municipality_code": "131016",
        "reason": "birth",
        "change_date": "2024-04-01",
        "notified_date": "2024-04-10",
        "status": "active",
        "identity": {
            "resident_code": RESIDENT_CODE,
            "individual_number": INDIVIDUAL_NUMBER,
            "name": {"family_name": "山田", "given_name": "太郎", "family_name_kana": "ヤマダ", "given_name_kana": "タロウ"},
            "birth_date": "2024-04-01",
            "sex": "male",
            "address": {"municipality_code": "131016", "postal_code": "1000001", "text": "東京都千代田区千代田1番1号"},
        },
        "recorded_at": "2024-04-10T09:30:00+09:00",
    }


def register_payload(**overrides) -> dict:
    payload = {
        "reason": "birth",
        "name": {"family_name": "山田", "given_name": "花子", "family_name_kana": "ヤマダ", "given_name_kana": "ハナコ"},
        "birth_date": "2024-04-01",
        "sex": "female",
        "address": {"municipality_code": "131016", "text": "東京都千代田区千代田1番1号"},
        "household": {"relationship": "世帯主"},
        "became_resident_on": "2024-04-01",
        "family_register": {"honseki": "東京都千代田区千代田1番", "hittousha": "山田太郎"},
    }
    payload.update(overrides)
    return payload


FOREIGN_RESIDENT = {
    "nationality": "アメリカ合衆国",
    "residence_status": "永住者",
    "period_of_stay": "無期限",
    "period_of_stay_ends": "2099-12-31",
    "residence_card_number": "AB12345678CD",
}


# --- names: the administrative character set, nothing else ---------------------------------------

@pytest.mark.parametrize(
    "name",
    [
        "𠮷田",  # U+20BB7, beyond JIS X 0208 (supplementary plane)
        "髙橋",  # U+9AD9, IBM extension, not in JIS X 0208
        "葛\U000E0100城",  # ideographic variation sequence (MJ glyph)
        "辻\U000E0101",
        "﨑山",  # U+FA11, CJK compatibility ideograph
        "佐々木",  # 々
        "〆木",
        "渡邊",
        "のぞみ",
        "スミス",
        "ジョン・スミス",
        "Smith",
        "O'Brien",
        "Jean-Luc",
        "Müller",
        "ＳＭＩＴＨ",  # full-width Latin
        "山田\u3000花子",  # inner ideographic space
        "a" * 60,
    ],
)
def test_names_beyond_jis_x_0208_accepted(name):
    assert NAME.validate_python(name) == name
    assert PersonName(family_name=name).family_name == name


@pytest.mark.parametrize(
    "name, why",
    [
        ("山田😀", "emoji"),
        ("🀄", "symbol (mahjong tile)"),
        ("山\x00田", "NUL"),
        ("山\x07田", "control character"),
        ("山\t田", "tab"),
        ("山\n田", "newline"),
        ("山田\n", "trailing newline"),
        ("山\u200b田", "zero-width space"),
        ("山\u200d田", "zero-width joiner"),
        ("\ufeff山田", "BOM"),
        ("山\u202e田", "bidi override"),
        ("山田①", "circled digit"),
        ("山田1", "digit"),
        ("ﾔﾏﾀﾞ", "half-width katakana"),
        ("山田♡", "symbol"),
        ("<script>", "markup"),
        ("Robert'); DROP TABLE", "punctuation"),
    ],
)
def test_names_with_other_characters_refused(name, why):
    with pytest.raises(ValidationError):
        NAME.validate_python(name)


@pytest.mark.parametrize("name", [" 山田", "山田 ", "\u3000山田", "山田\u3000", " ", "\u3000"])
def test_names_with_leading_or_trailing_spaces_refused(name):
    with pytest.raises(ValidationError):
        NAME.validate_python(name)


@pytest.mark.parametrize("name", ["山田×", "÷"])
def test_multiplication_and_division_signs_refused(name):
    with pytest.raises(ValidationError):
        NAME.validate_python(name)


@pytest.mark.parametrize("name", ["\U000E0100", "\U000E0100山田"])
def test_variation_selector_without_base_ideograph_refused(name):
    with pytest.raises(ValidationError):
        NAME.validate_python(name)


@pytest.mark.parametrize(
    "adapter, limit, char",
    [(NAME, 60, "山"), (NAME, 60, "𠮷"), (KANA, 120, "ア"), (ADDRESS, 200, "町"), (REASON, 400, "理")],
)
def test_oversize_strings_refused(adapter, limit, char):
    assert adapter.validate_python(char * limit) == char * limit
    with pytest.raises(ValidationError):
        adapter.validate_python(char * (limit + 1))


@pytest.mark.parametrize("adapter", [NAME, KANA, ADDRESS, REASON])
def test_empty_strings_refused(adapter):
    with pytest.raises(ValidationError):
        adapter.validate_python("")


@pytest.mark.parametrize("adapter", [NAME, KANA, ADDRESS, REASON])
def test_text_must_be_a_string(adapter):
    for value in (123, b"abc", ["山田"], None):
        with pytest.raises(ValidationError):
            adapter.validate_python(value)


def test_address_allows_digits_and_address_punctuation():
    text = "東京都千代田区千代田１丁目１－１ ＡＢＣビル(3F)#101"
    assert ADDRESS.validate_python(text) == text
    with pytest.raises(ValidationError):
        ADDRESS.validate_python("千代田1-1\x00")


# --- furigana: katakana only ---------------------------------------------------------------------

@pytest.mark.parametrize("kana", ["ヤマダ", "ヤマダ タロウ", "ジョン・スミス", "コーヒー", "ヴァ", "ヤマダ\u3000タロウ"])
def test_katakana_furigana_accepted(kana):
    assert KANA.validate_python(kana) == kana


@pytest.mark.parametrize("kana", ["やまだ", "山田", "Yamada", "ﾔﾏﾀﾞ", "ヤマダ1", "ヤマダ😀", " ヤマダ", "ヤマダ ", "ヤマ\u200bダ"])
def test_furigana_must_be_katakana(kana):
    with pytest.raises(ValidationError):
        KANA.validate_python(kana)
    with pytest.raises(ValidationError):
        PersonName(family_name="山田", family_name_kana=kana)


# --- dates ---------------------------------------------------------------------------------------

def test_dates_cross_as_iso_strings():
    assert DATE.validate_python("2024-02-29") == date(2024, 2, 29)
    assert DATE.validate_json('"2024-02-29"') == date(2024, 2, 29)
    assert DATE.validate_python(date(2024, 2, 29)) == date(2024, 2, 29)


@pytest.mark.parametrize("value", [20240401, 1711929600, 20240401.0, "20240401", "2024/04/01", "2024-4-1", "2023-02-29", "２０２４-０４-０１", "2024-04-01\n", "2024-04-01T00:00:00", None])
def test_dates_in_other_shapes_refused(value):
    with pytest.raises(ValidationError):
        DATE.validate_python(value)


def test_date_number_refused_from_json():
    with pytest.raises(ValidationError):
        DATE.validate_json("20240401")


# --- IdentityChange ------------------------------------------------------------------------------

def test_identity_change_valid_and_round_trips():
    change = IdentityChange.model_validate(identity_change_payload())
    assert change.kind == "identity-change/v1"
    assert change.identity.birth_date == date(2024, 4, 1)
    assert IdentityChange.model_validate_json(change.model_dump_json()) == change


def test_identity_change_unknown_fields_refused():
    payload = identity_change_payload()
    payload["family_register"] = {"honseki": "東京都"}
    with pytest.raises(ValidationError, match="extra"):
        IdentityChange.model_validate(payload)
    nested = identity_change_payload()
    nested["identity"]["household_id"] = HOUSEHOLD_ID
    with pytest.raises(ValidationError, match="extra"):
        IdentityChange.model_validate(nested)
    name = identity_change_payload()
    name["identity"]["name"]["middle_name"] = "X"
    with pytest.raises(ValidationError, match="extra"):
        IdentityChange.model_validate(name)


@pytest.mark.parametrize(
    "path, value",
    [
        (("version",), "1"),
        (("version",), 1.0),
        (("version",), True),
        (("version",), 0),
        (("version",), 1_000_001),
        (("change_date",), 20240401),
        (("identity", "birth_date"), 20240401),
        (("identity", "birth_date"), "2024/04/01"),
        (("identity", "sex"), "M"),
        (("reason",), "adoption"),
        (("status",), "alive"),
        (("kind",), "identity-change/v2"),
        (("event_id",), "not-a-uuid"),
        (("municipality_code",), "131017"),
        (("municipality_code",), 131016),
        (("identity", "address", "postal_code"), "100-0001"),
        (("identity", "address", "postal_code"), 1000001),
        (("identity", "name", "family_name"), 42),
        (("identity", "individual_number"), 621498320257),
        (("resident_code",), "12345678906"),
    ],
)
def test_identity_change_wrong_types_refused(path, value):
    payload = identity_change_payload()
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        IdentityChange.model_validate(payload)


def test_identity_change_version_string_refused_in_json():
    payload = identity_change_payload()
    payload["version"] = "1"
    with pytest.raises(ValidationError):
        IdentityChange.model_validate_json(json.dumps(payload))


def test_identity_change_missing_field_refused():
    for key in ("event_id", "resident_code", "version", "municipality_code", "reason", "change_date", "status", "identity", "recorded_at"):
        payload = identity_change_payload()
        del payload[key]
        with pytest.raises(ValidationError):
            IdentityChange.model_validate(payload)


def test_contracts_are_immutable():
    change = IdentityChange.model_validate(identity_change_payload())
    with pytest.raises(ValidationError):
        change.version = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        change.identity.name.family_name = "田中"  # type: ignore[misc]


def test_oversize_free_strings_refused_by_the_base_limit():
    ack = {"event_id": EVENT_ID, "resident_code": RESIDENT_CODE, "version": 1, "outcome": "accepted"}
    IdentityChangeAck.model_validate(ack)
    with pytest.raises(ValidationError):
        IdentityChangeAck.model_validate({**ack, "outcome": "refused"})
    record = {
        "record_id": EVENT_ID, "provided_at": datetime(2024, 4, 1, tzinfo=timezone.utc), "provider": "national",
        "recipient": "pension-service", "recipient_name": "日本年金機構", "affair": "pension-benefits",
        "affair_name": "年金", "items": ["name"], "resident_code": RESIDENT_CODE, "query_type": "ByResidentCode",
    }
    ProvisionRecord.model_validate(record)
    with pytest.raises(ValidationError):
        ProvisionRecord.model_validate({**record, "recipient_name": "x" * 4001})
    with pytest.raises(ValidationError):
        ProvisionRecord.model_validate({**record, "items": ["name", "family_register"]})


# --- PersonQuery ---------------------------------------------------------------------------------

def test_person_query_union_dispatches_on_type():
    assert isinstance(QUERY.validate_python({"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": RESIDENT_CODE}), ByResidentCode)
    assert isinstance(QUERY.validate_python({"type": "ByIndividualNumber", "affair": "mynumber-card", "individual_number": INDIVIDUAL_NUMBER}), ByIndividualNumber)
    query = QUERY.validate_json(json.dumps({"type": "ByBasicItems", "affair": "passport-issuance", "family_name_kana": "ヤマダ", "birth_date": "2024-04-01", "fields": ["name", "address"]}))
    assert isinstance(query, ByBasicItems)
    assert query.limit == 10


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "ByAddress", "affair": "pension-benefits", "address": "東京都"},
        {"type": "byresidentcode", "affair": "pension-benefits", "resident_code": RESIDENT_CODE},
        {"type": "ByBasicItems ", "affair": "pension-benefits", "birth_date": "2024-04-01"},
        {"affair": "pension-benefits", "resident_code": RESIDENT_CODE},  # no type
        {"type": None, "affair": "pension-benefits", "resident_code": RESIDENT_CODE},
    ],
)
def test_person_query_unknown_type_refused(payload):
    with pytest.raises(ValidationError):
        QUERY.validate_python(payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": RESIDENT_CODE, "individual_number": INDIVIDUAL_NUMBER},
        {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": RESIDENT_CODE, "fields": ["honseki"]},
        {"type": "ByResidentCode", "affair": "pension benefits", "resident_code": RESIDENT_CODE},
        {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": "12345678906"},
        {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": RESIDENT_CODE, "reason": "理由\x00"},
        {"type": "ByBasicItems", "affair": "passport-issuance", "family_name": "山田", "birth_date": "2024-04-01", "limit": 51},
        {"type": "ByBasicItems", "affair": "passport-issuance", "family_name": "山田", "birth_date": "2024-04-01", "limit": "10"},
        {"type": "ByBasicItems", "affair": "passport-issuance", "family_name": "山田"},  # birth date is required
        {"type": "ByBasicItems", "affair": "passport-issuance", "family_name": "山田", "birth_date": 20240401},
    ],
)
def test_person_query_invalid_members_refused(payload):
    with pytest.raises(ValidationError):
        QUERY.validate_python(payload)


# --- RegisterResident ----------------------------------------------------------------------------

def test_register_japanese_national_accepted():
    cmd = RegisterResident.model_validate(register_payload())
    assert cmd.household.relationship is Relationship.head
    assert cmd.family_register is not None and cmd.foreign_resident is None


def test_register_foreign_resident_accepted_without_furigana():
    cmd = RegisterResident.model_validate(register_payload(
        reason="ex_officio_record", name={"family_name": "Smith", "given_name": "John"}, alias="スミス",
        family_register=None, foreign_resident=FOREIGN_RESIDENT,
    ))
    assert cmd.foreign_resident is not None and cmd.name.family_name_kana is None


def test_register_needs_exactly_one_of_family_register_or_foreign_resident():
    with pytest.raises(ValidationError, match="exactly one"):
        RegisterResident.model_validate(register_payload(family_register=None))
    with pytest.raises(ValidationError, match="exactly one"):
        RegisterResident.model_validate(register_payload(foreign_resident=FOREIGN_RESIDENT))


def test_japanese_nationals_need_furigana():
    with pytest.raises(ValidationError, match="furigana"):
        RegisterResident.model_validate(register_payload(name={"family_name": "山田", "given_name": "花子"}))


def test_new_household_must_be_headed_by_the_person():
    with pytest.raises(ValidationError, match="世帯主"):
        RegisterResident.model_validate(register_payload(household={"relationship": "子"}))
    with pytest.raises(ValidationError, match="世帯主"):
        HouseholdPlacement(relationship=Relationship.spouse)
    joined = RegisterResident.model_validate(register_payload(household={"household_id": HOUSEHOLD_ID, "relationship": "子"}))
    assert joined.household.relationship is Relationship.child
    with pytest.raises(ValidationError):
        ChangeHousehold.model_validate({"household": {"relationship": "子"}, "change_date": "2024-05-01"})


@pytest.mark.parametrize("kana", ["やまだ", "Yamada", "山田"])
def test_register_furigana_must_be_katakana(kana):
    payload = register_payload()
    payload["name"] = {**payload["name"], "family_name_kana": kana}
    with pytest.raises(ValidationError):
        RegisterResident.model_validate(payload)
    with pytest.raises(ValidationError):
        RegisterResident.model_validate(register_payload(former_surname="田中", former_surname_kana=kana))


@pytest.mark.parametrize(
    "overrides",
    [
        {"reason": "move_out"},  # only birth, ex-officio record and a first arrival from abroad register a person
        {"reason": "death"},
        {"birth_date": 20240401},
        {"sex": "unknown"},
        {"household": {"relationship": "友人"}},
        {"household_id": HOUSEHOLD_ID},  # unknown field
        {"resident_code": RESIDENT_CODE},  # assigned by the register, never given
        {"address": {"municipality_code": "131016", "text": "千代田1\n番地"}},
    ],
)
def test_register_other_refusals(overrides):
    with pytest.raises(ValidationError):
        RegisterResident.model_validate(register_payload(**overrides))


@pytest.mark.parametrize("number", ["ab12345678cd", "AB1234567CD", "AB123456789CD", "AB12345678C", "１B12345678CD"])
def test_residence_card_number_pattern(number):
    with pytest.raises(ValidationError):
        ForeignResidentItems.model_validate({**FOREIGN_RESIDENT, "residence_card_number": number})


def test_correction_contract_needs_an_explanation_in_allowed_text():
    CorrectRecord.model_validate({"sex": "male", "correction_date": "2024-05-01", "explanation": "出生届の記載誤り。"})
    with pytest.raises(ValidationError):
        CorrectRecord.model_validate({"sex": "male", "correction_date": "2024-05-01"})
    with pytest.raises(ValidationError):
        CorrectRecord.model_validate({"sex": "male", "correction_date": "2024-05-01", "explanation": "誤り😀"})



def test_a_household_composition_lists_each_member_once():
    import uuid
    from datetime import UTC, datetime

    from pydantic import ValidationError

    from contracts.household import HouseholdComposition

    member = {"resident_code": "12345678903", "relationship": "世帯主"}
    body = {"household_id": str(uuid.uuid4()), "municipality_code": "131016", "recorded_at": datetime.now(UTC).isoformat()}
    assert len(HouseholdComposition.model_validate(body | {"members": [member]}).members) == 1
    with pytest.raises(ValidationError, match="more than once"):
        HouseholdComposition.model_validate(body | {"members": [member, member | {"relationship": "子"}]})
