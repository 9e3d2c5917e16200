"""Comparing a copy with the tier below it by range digests, and classifying what differs.

The comparison is the same everywhere (register↔CS, CS↔prefecture,
prefecture↔national, CS↔national): both sides answer digests of ranges of
resident codes for one area; ranges that differ are split by one more digit
until they hold few persons, which are then compared one by one. A person
found different is looked up again on both sides after a short grace period,
so that a change merely in flight is not mistaken for a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from contracts.recovery import MAX_CODES, Finding, PersonState
from services.common.digests import CODE_LENGTH, DigestTable, combine, digest_count, persons, range_digests, range_rows, states

#: A differing range with at most this many persons on either side is compared person by person.
LEAF_PERSONS = 64
#: The first split: 100 ranges of two leading digits.
FIRST_LENGTH = 2
#: Rows asked for in one request when comparing person by person.
ROWS_PER_REQUEST = 4000


class Side(Protocol):
    """One side of a comparison, bound to an area (its own database, or a peer over HTTP)."""

    async def digests(self, prefixes: list[str], length: int) -> dict[str, str]: ...
    async def rows(self, prefixes: list[str]) -> dict[str, PersonState]: ...
    async def persons(self, codes: list[str]) -> dict[str, PersonState]: ...


class SqlSide:
    """A side answered from a database of this process: each call on a connection from ``connect``
    (a fresh one per call, or one held open for a consistent view, see :func:`held`)."""

    def __init__(self, connect: Callable, table: DigestTable, area: list[str]):
        self._connect = connect  # () -> async context manager giving a connection
        self.table = table
        self.area = list(area)

    async def digests(self, prefixes: list[str], length: int) -> dict[str, str]:
        async with self._connect() as conn:
            return await range_digests(conn, self.table, self.area, prefixes, length)

    async def rows(self, prefixes: list[str]) -> dict[str, PersonState]:
        async with self._connect() as conn:
            return states(await range_rows(conn, self.table, self.area, prefixes))

    async def persons(self, codes: list[str]) -> dict[str, PersonState]:
        async with self._connect() as conn:
            return await persons(conn, self.table, codes)


def held(conn):
    """A ``connect`` for :class:`SqlSide` that always gives the same open connection (one transaction, one view)."""

    @contextlib.asynccontextmanager
    async def same():
        yield conn

    return same


@dataclass
class Comparison:
    ranges_compared: int = 0
    ranges_descended: int = 0
    persons_compared: int = 0
    requests: int = 0
    root_digest: str | None = None  # of the copy, over the whole area
    differing: list[str] = field(default_factory=list)  # resident codes


async def differing_leaves(copy: Side, truth: Side, comparison: Comparison, *, leaf_persons: int = LEAF_PERSONS) -> list[tuple[str, int]]:
    """Descend through differing ranges; the small differing ranges (prefix, persons) at the bottom."""
    frontier, length, leaves = [""], FIRST_LENGTH, []
    while frontier:
        mine, theirs = await asyncio.gather(copy.digests(frontier, length), truth.digests(frontier, length))
        comparison.requests += 2
        if length == FIRST_LENGTH:
            comparison.root_digest = combine(list(mine.values()))
        seen = set(mine) | set(theirs)
        comparison.ranges_compared += len(seen)
        deeper = []
        for prefix in sorted(p for p in seen if mine.get(p) != theirs.get(p)):
            size = max(digest_count(mine.get(prefix)), digest_count(theirs.get(prefix)))
            if size <= leaf_persons or length >= CODE_LENGTH:
                leaves.append((prefix, size))
            else:
                deeper.append(prefix)
        comparison.ranges_descended += len(deeper)
        frontier, length = deeper, length + 1
    return leaves


def batches(leaves: list[tuple[str, int]], limit: int = ROWS_PER_REQUEST) -> list[list[str]]:
    """Group leaf prefixes so that one request carries about ``limit`` persons."""
    out: list[list[str]] = [[]]
    size = 0
    for prefix, persons_in in leaves:
        if out[-1] and size + persons_in > limit:
            out.append([])
            size = 0
        out[-1].append(prefix)
        size += persons_in
    return [b for b in out if b]


async def compare(copy: Side, truth: Side, *, leaf_persons: int = LEAF_PERSONS) -> Comparison:
    """Which persons of the area differ between the copy and the truth (by code, version, status, municipality)."""
    comparison = Comparison()
    leaves = await differing_leaves(copy, truth, comparison, leaf_persons=leaf_persons)
    differing: set[str] = set()
    for group in batches(leaves):
        mine, theirs = await asyncio.gather(copy.rows(group), truth.rows(group))
        comparison.requests += 2
        comparison.persons_compared += len(set(mine) | set(theirs))
        differing |= {code for code in set(mine) | set(theirs) if mine.get(code) != theirs.get(code)}
    comparison.differing = sorted(differing)
    return comparison


def _state(s: PersonState | None) -> str | None:
    return None if s is None else f"v{s.version} {s.status.value} {s.municipality_code}"


Heal = Callable[[PersonState | None, PersonState], Awaitable[tuple[str, int, str | None]]]


async def classify_and_heal(copy: Side, truth: Side, area: list[str], codes: list[str], *, heal: Heal, grace_seconds: float) -> tuple[list[Finding], int]:
    """Look the differing persons up again (after ``grace_seconds``); heal the copy where it lacks versions.

    ``heal(copy_state, truth_state)`` brings one person's copy up to the truth
    and returns (action, versions applied, detail). Returns the findings and
    how many persons had settled by themselves (changes in flight).
    """
    if grace_seconds > 0 and codes:
        await asyncio.sleep(grace_seconds)
    findings: list[Finding] = []
    settled = 0
    for start in range(0, len(codes), MAX_CODES):
        chunk = codes[start:start + MAX_CODES]
        mine, theirs = await asyncio.gather(copy.persons(chunk), truth.persons(chunk))
        for code in chunk:
            c, t = mine.get(code), theirs.get(code)
            c_in = c if c is not None and c.municipality_code in area else None
            t_in = t if t is not None and t.municipality_code in area else None
            if c_in == t_in:
                settled += 1
                continue
            common = dict(resident_code=code, copy_version=c.version if c else None, truth_version=t.version if t else None, copy_state=_state(c), truth_state=_state(t))
            if t is None:
                findings.append(Finding(kind="extra", action="reported", detail="the tier below does not hold this person", **common))
            elif c is None or c.version < t.version:
                try:
                    action, applied, detail = await heal(c, t)
                except Exception as exc:  # one person's failure must not stop the others; recorded
                    action, applied, detail = "failed", 0, f"{type(exc).__name__}: {exc}"[:2000]
                findings.append(Finding(kind="missing" if c is None else "behind", action=action, applied=applied, detail=detail, **common))
            elif c.version > t.version:
                findings.append(Finding(kind="ahead", action="reported", detail="the copy holds versions the tier below lacks: the tier below lost data (its own reconciliation or a restore repairs it)", **common))
            else:
                findings.append(Finding(kind="conflict", action="reported", detail="the same version with another status or municipality", **common))
    return findings, settled
