"""Identifier types with check-digit validation.

- 住民票コード (resident code): 11 digits, 10 random + a mod-11 check digit
  (weights 5,4,3,2,7,6,5,4,3,2; remainder 0 or 1 gives 0).
- 個人番号 (individual number, "My Number"): 12 digits, validated with
  python-stdnum's ``stdnum.jp.in_``.
- 全国地方公共団体コード (local-government code): 5 digits of JIS X 0402 plus a
  check digit ``(11 - Σ digit·weight mod 11) mod 10`` with weights 6,5,4,3,2.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.jp import in_ as individual_number_std

_RESIDENT_CODE_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_LG_CODE_WEIGHTS = (6, 5, 4, 3, 2)


def _mod11_check_digit(digits: str, weights: tuple[int, ...]) -> str:
    remainder = sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    return "0" if remainder <= 1 else str(11 - remainder)


def resident_code_check_digit(first_ten: str) -> str:
    return _mod11_check_digit(first_ten, _RESIDENT_CODE_WEIGHTS)


def is_valid_resident_code(value: str) -> bool:
    return (
        len(value) == 11
        and value.isascii()
        and value.isdigit()
        and resident_code_check_digit(value[:10]) == value[10]
    )


def is_valid_individual_number(value: str) -> bool:
    if len(value) != 12 or not value.isascii() or not value.isdigit():
        return False
    try:
        individual_number_std.validate(value)
    except StdnumError:
        return False
    return True


def lg_code_check_digit(five: str) -> str:
    total = sum(int(d) * w for d, w in zip(five, _LG_CODE_WEIGHTS, strict=True))
    return str((11 - total % 11) % 10)


def is_valid_lg_code(value: str) -> bool:
    return (
        len(value) == 6
        and value.isascii()
        and value.isdigit()
        and lg_code_check_digit(value[:5]) == value[5]
    )


def with_lg_check_digit(five: str) -> str:
    """Turn a JIS X 0402 code (5 digits) into the 6-digit local-government code."""
    return five + lg_code_check_digit(five)


def new_resident_code() -> str:
    """A fresh random resident code. Uniqueness is enforced by the stores."""
    first_ten = f"{secrets.randbelow(10**10):010d}"
    return first_ten + resident_code_check_digit(first_ten)


def new_individual_number() -> str:
    first_eleven = f"{secrets.randbelow(10**11):011d}"
    return first_eleven + individual_number_std.calc_check_digit(first_eleven)


def _must_be_str(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be a string of digits")
    return value


def _check(predicate, what: str):
    def validate(value: str) -> str:
        if not predicate(value):
            raise ValueError(f"not a valid {what} (length, digits or check digit)")
        return value

    return validate


ResidentCode = Annotated[
    str,
    BeforeValidator(_must_be_str),
    AfterValidator(_check(is_valid_resident_code, "住民票コード")),
    Field(min_length=11, max_length=11, examples=["12345678903"]),
]
IndividualNumber = Annotated[
    str,
    BeforeValidator(_must_be_str),
    AfterValidator(_check(is_valid_individual_number, "個人番号")),
    Field(min_length=12, max_length=12, examples=["621498320257"]),
]
LocalGovernmentCode = Annotated[
    str,
    BeforeValidator(_must_be_str),
    AfterValidator(_check(is_valid_lg_code, "地方公共団体コード")),
    Field(min_length=6, max_length=6, examples=["131016"]),
]
PrefectureCode = Annotated[str, Field(pattern=r"^(0[1-9]|[1-3][0-9]|4[0-7])$", examples=["13"])]

#: A per-agency pseudonym (機関別符号) issued by the national server: "p1" + 44 base32 characters.
AgencyPseudonym = Annotated[str, BeforeValidator(_must_be_str), Field(pattern=r"^p1[a-z2-7]{44}$", examples=["p1" + "a" * 44])]
