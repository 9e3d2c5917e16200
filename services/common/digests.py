"""Range digests over a table of persons, computed in SQL (see contracts/recovery.py).

A range is the set of resident codes that start with a prefix. Its digest is
the number of persons and the XOR of a 64-bit hash of each person's (code,
version, status, municipality): order-independent, so PostgreSQL computes it
in one pass without sorting, and two tiers holding the same persons in the
same versions get the same digest whatever their row order.

Every table compared this way (``identity`` of the tiers, ``residents`` of
the register, ``snapshot_rows``) has those four columns and its primary key
(or the leading part of it) on ``resident_code``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import String

from contracts.recovery import PersonState

CODE_LENGTH = 11
_HASH = "('x' || substr(md5(t.resident_code || ':' || t.version || ':' || t.status || ':' || t.municipality_code), 1, 16))::bit(64)::bigint"
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class DigestTable:
    """A table of persons and the condition that makes a row part of the compared set."""

    name: str
    condition: str = "true"  # SQL on alias ``t``, e.g. the register leaves out records closed by a completed move


def digest_text(count: int, xor: int) -> str:
    return f"{count}:{xor & _MASK:016x}"


def digest_count(digest: str | None) -> int:
    return int(digest.split(":", 1)[0]) if digest else 0


def combine(digests: list[str]) -> str:
    """The digest of the union of disjoint ranges."""
    count, xor = 0, 0
    for d in digests:
        c, x = d.split(":", 1)
        count += int(c)
        xor ^= int(x, 16)
    return digest_text(count, xor)


def _bounds(prefixes: list[str]) -> tuple[list[str], list[str]]:
    """Inclusive code bounds of each prefix (codes are exactly 11 digits, so this holds in any collation)."""
    return [p.ljust(CODE_LENGTH, "0") for p in prefixes], [p.ljust(CODE_LENGTH, "9") for p in prefixes]


def _in_ranges(prefixes: list[str]) -> tuple[str, dict]:
    if prefixes == [""]:
        return "", {}
    lows, highs = _bounds(prefixes)
    return (
        " join unnest(cast(:lows as varchar[]), cast(:highs as varchar[])) as r(lo, hi) on t.resident_code between r.lo and r.hi",
        {"lows": lows, "highs": highs},
    )


async def range_digests(conn, table: DigestTable, area: list[str], prefixes: list[str], length: int) -> dict[str, str]:
    """Digests of the ranges of ``length`` leading digits under ``prefixes`` (non-empty ranges only)."""
    join, params = _in_ranges(sorted(set(prefixes)))
    sql = (
        f"select left(t.resident_code, :length) as p, count(*) as n, coalesce(bit_xor({_HASH}), 0) as x from {table.name} t{join}"
        f" where t.municipality_code = any(cast(:area as varchar[])) and ({table.condition}) group by 1"
    )
    rows = (await conn.execute(text(sql).bindparams(*_array_params(params)), {"length": length, "area": list(area), **params})).all()
    return {p: digest_text(n, x) for p, n, x in rows}


async def range_rows(conn, table: DigestTable, area: list[str], prefixes: list[str], *, extra_columns: str = "") -> list:
    """The persons of ``area`` under ``prefixes``: (code, version, status, municipality[, extra...])."""
    join, params = _in_ranges(sorted(set(prefixes)))
    extra = f", {extra_columns}" if extra_columns else ""
    sql = (
        f"select t.resident_code, t.version, t.status, t.municipality_code{extra} from {table.name} t{join}"
        f" where t.municipality_code = any(cast(:area as varchar[])) and ({table.condition}) order by t.resident_code"
    )
    return (await conn.execute(text(sql).bindparams(*_array_params(params)), {"area": list(area), **params})).all()


async def persons(conn, table: DigestTable, codes: list[str]) -> dict[str, PersonState]:
    """What this table holds of these persons, in whatever municipality (rows outside the compared set are left out)."""
    sql = (
        f"select t.resident_code, t.version, t.status, t.municipality_code from {table.name} t"
        f" where t.resident_code = any(cast(:codes as varchar[])) and ({table.condition})"
    )
    rows = (await conn.execute(text(sql), {"codes": list(codes)})).all()
    return {r[0]: PersonState(resident_code=r[0], version=r[1], status=r[2], municipality_code=r[3]) for r in rows}


def states(rows) -> dict[str, PersonState]:
    return {r[0]: PersonState(resident_code=r[0], version=r[1], status=r[2], municipality_code=r[3]) for r in rows}


def _array_params(params: dict) -> list:
    return [bindparam(name, type_=ARRAY(String)) for name in params]
