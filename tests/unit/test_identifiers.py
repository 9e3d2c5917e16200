"""Check digits of 住民票コード, 個人番号 and 地方公共団体コード (contracts/identifiers.py)."""

from __future__ import annotations

import random

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts.identifiers import (
    IndividualNumber,
    LocalGovernmentCode,
    PrefectureCode,
    ResidentCode,
    is_valid_individual_number,
    is_valid_lg_code,
    is_valid_resident_code,
    lg_code_check_digit,
    new_individual_number,
    new_resident_code,
    resident_code_check_digit,
    with_lg_check_digit,
)

RESIDENT_CODE = TypeAdapter(ResidentCode)
INDIVIDUAL_NUMBER = TypeAdapter(IndividualNumber)
LG_CODE = TypeAdapter(LocalGovernmentCode)
PREFECTURE_CODE = TypeAdapter(PrefectureCode)


# --- independent re-implementations, from the rules as specified -------------------------------

def spec_resident_check_digit(first_ten: str) -> int:
    """住民票コード: weights 5,4,3,2,7,6,5,4,3,2; check = 11 − (Σ mod 11); remainder 0 or 1 gives 0."""
    weights = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2]
    remainder = sum(int(first_ten[i]) * weights[i] for i in range(10)) % 11
    if remainder in (0, 1):
        return 0
    return 11 - remainder


def spec_individual_number_check_digit(first_eleven: str) -> int:
    """個人番号 (行政手続における特定の個人を識別するための番号の利用等に関する法律施行令 第八条):
    P_n is the n-th digit counted from the right (excluding the check digit),
    Q_n = n + 1 for 1 ≤ n ≤ 6 and n − 5 for 7 ≤ n ≤ 11; check = 11 − (Σ P_n·Q_n mod 11),
    remainder 0 or 1 gives 0."""
    digits = [int(c) for c in reversed(first_eleven)]
    total = sum(p * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(digits, start=1))
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def spec_lg_check_digit(five: str) -> int:
    """全国地方公共団体コード: weights 6,5,4,3,2; the ones digit of 11 − (Σ mod 11)."""
    total = sum(int(d) * w for d, w in zip(five, (6, 5, 4, 3, 2)))
    return (11 - total % 11) % 10


def with_digit(code: str, position: int, digit: int) -> str:
    return code[:position] + str(digit) + code[position + 1 :]


# --- documented examples ------------------------------------------------------------------------

def test_documented_individual_number_is_valid():
    assert is_valid_individual_number("621498320257")
    assert INDIVIDUAL_NUMBER.validate_python("621498320257") == "621498320257"


def test_documented_lg_code_example():
    assert with_lg_check_digit("13101") == "131016"  # 千代田区
    assert lg_code_check_digit("13101") == "6"
    assert is_valid_lg_code("131016")
    assert LG_CODE.validate_python("131016") == "131016"


@pytest.mark.parametrize("jis, expected", [("13113", "131130"), ("27203", "272035"), ("01100", "011002"), ("47201", "472018")])
def test_known_lg_codes(jis, expected):
    # 渋谷区, 豊中市, 札幌市, 那覇市 as published by 総務省
    assert with_lg_check_digit(jis) == expected


def test_published_examples_in_the_schemas_are_valid():
    """The examples shown in OpenAPI / JSON Schema must themselves pass validation."""
    for adapter in (RESIDENT_CODE, INDIVIDUAL_NUMBER, LG_CODE, PREFECTURE_CODE):
        examples = adapter.json_schema()["examples"]
        assert examples
        for example in examples:
            assert adapter.validate_python(example) == example


# --- refusals -----------------------------------------------------------------------------------

@pytest.mark.parametrize("position", range(11))
def test_resident_code_any_changed_digit_is_refused(position):
    code = "12345678903"
    assert is_valid_resident_code(code)
    for replacement in range(10):
        if str(replacement) == code[position]:
            continue
        changed = with_digit(code, position, replacement)
        if position == 10 or spec_resident_check_digit(changed[:10]) != int(changed[10]):
            assert not is_valid_resident_code(changed), changed
            with pytest.raises(ValidationError):
                RESIDENT_CODE.validate_python(changed)


def test_wrong_check_digits_refused():
    assert not is_valid_resident_code("12345678906")
    assert not is_valid_individual_number("621498320258")
    assert not is_valid_lg_code("131017")
    for adapter, value in ((RESIDENT_CODE, "12345678906"), (INDIVIDUAL_NUMBER, "621498320250"), (LG_CODE, "131010")):
        with pytest.raises(ValidationError, match="check digit"):
            adapter.validate_python(value)


@pytest.mark.parametrize(
    "adapter, value",
    [
        (RESIDENT_CODE, "1234567890"),  # too short
        (RESIDENT_CODE, "123456789030"),  # too long
        (RESIDENT_CODE, "1234567890a"),
        (RESIDENT_CODE, "１２３４５６７８９０３"),  # full-width digits
        (RESIDENT_CODE, "1234-567890"),
        (RESIDENT_CODE, " 2345678903"),
        (RESIDENT_CODE, ""),
        (INDIVIDUAL_NUMBER, "62149832025"),
        (INDIVIDUAL_NUMBER, "6214983202570"),
        (INDIVIDUAL_NUMBER, "62149832025X"),
        (INDIVIDUAL_NUMBER, "６２１４９８３２０２５７"),
        (INDIVIDUAL_NUMBER, "6214 9832 0257"),
        (LG_CODE, "13101"),  # the JIS code without its check digit
        (LG_CODE, "1310160"),
        (LG_CODE, "13101a"),
        (LG_CODE, "１３１０１６"),
        (PREFECTURE_CODE, "00"),
        (PREFECTURE_CODE, "48"),
        (PREFECTURE_CODE, "1"),
    ],
)
def test_non_digits_and_wrong_lengths_refused(adapter, value):
    with pytest.raises(ValidationError):
        adapter.validate_python(value)


@pytest.mark.parametrize("value", ["1234567890a", "１２３４５６７８９０３", "²345678903", "12345678903\n"])
def test_predicates_refuse_non_ascii_digits(value):
    assert not is_valid_resident_code(value)


@pytest.mark.parametrize(
    "adapter, value",
    [
        (RESIDENT_CODE, 12345678903),
        (RESIDENT_CODE, b"12345678903"),
        (RESIDENT_CODE, None),
        (INDIVIDUAL_NUMBER, 621498320257),
        (INDIVIDUAL_NUMBER, 621498320257.0),
        (LG_CODE, 131016),
        (LG_CODE, ["131016"]),
    ],
)
def test_non_string_input_refused(adapter, value):
    with pytest.raises(ValidationError):
        adapter.validate_python(value)


def test_non_string_refused_from_json_too():
    with pytest.raises(ValidationError):
        RESIDENT_CODE.validate_json("12345678903")
    with pytest.raises(ValidationError):
        INDIVIDUAL_NUMBER.validate_json("621498320257")
    assert RESIDENT_CODE.validate_json('"12345678903"') == "12345678903"


# --- generated codes ----------------------------------------------------------------------------

def test_generated_resident_codes_are_valid():
    codes = {new_resident_code() for _ in range(5000)}
    assert len(codes) > 4990  # random, not a constant
    for code in codes:
        assert len(code) == 11 and code.isdigit()
        assert int(code[10]) == spec_resident_check_digit(code[:10]), code
        assert is_valid_resident_code(code)
    RESIDENT_CODE.validate_python(next(iter(codes)))


def test_generated_individual_numbers_are_valid():
    numbers = {new_individual_number() for _ in range(5000)}
    assert len(numbers) > 4990
    for number in numbers:
        assert len(number) == 12 and number.isdigit()
        assert int(number[11]) == spec_individual_number_check_digit(number[:11]), number
        assert is_valid_individual_number(number)
    INDIVIDUAL_NUMBER.validate_python(next(iter(numbers)))


# --- cross-check against the specified rules ----------------------------------------------------

def test_resident_code_check_digit_matches_the_spec():
    rng = random.Random(20260401)
    samples = [f"{rng.randrange(10**10):010d}" for _ in range(5000)]
    samples += ["0000000000", "9999999999", "1234567890", "0000000001", "1000000000"]
    seen_remainders = set()
    for first_ten in samples:
        expected = spec_resident_check_digit(first_ten)
        assert resident_code_check_digit(first_ten) == str(expected), first_ten
        assert is_valid_resident_code(first_ten + str(expected))
        for other in set(range(10)) - {expected}:
            assert not is_valid_resident_code(first_ten + str(other))
        seen_remainders.add(sum(int(d) * w for d, w in zip(first_ten, (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))) % 11)
    assert seen_remainders == set(range(11))  # including the 0 and 1 cases


def test_remainder_zero_and_one_give_zero():
    # Σ = 0 ≡ 0 (mod 11)
    assert sum(int(d) * w for d, w in zip("0000000000", (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))) % 11 == 0
    assert resident_code_check_digit("0000000000") == "0"
    # 1·5 + 1·7 = 12 ≡ 1 (mod 11)
    assert sum(int(d) * w for d, w in zip("1000100000", (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))) % 11 == 1
    assert resident_code_check_digit("1000100000") == "0"
    # remainder 2 gives 9 (the largest check digit)
    assert resident_code_check_digit("0001000000") == "9"


def test_lg_code_check_digit_matches_the_spec():
    for n in range(0, 100000, 7):
        five = f"{n:05d}"
        assert lg_code_check_digit(five) == str(spec_lg_check_digit(five)), five
        assert is_valid_lg_code(five + str(spec_lg_check_digit(five)))


def test_individual_number_check_digit_matches_the_spec():
    rng = random.Random(12)
    for _ in range(5000):
        first_eleven = f"{rng.randrange(10**11):011d}"
        expected = spec_individual_number_check_digit(first_eleven)
        assert is_valid_individual_number(first_eleven + str(expected)), first_eleven
        assert not is_valid_individual_number(first_eleven + str((expected + 1) % 10))
