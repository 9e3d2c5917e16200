"""Per-person version rules every tier applies (pure, no I/O).

Each change carries the person's version. A tier applies version n only when
it holds n−1: a lower or equal version is a redelivery (ignored when it is the
same event, refused when it is a different one), a higher one is a gap (held
until the missing versions arrive or are fetched from the tier below).

One exception: a person *arriving* in a tier's area by a move (転出 towards
it, or 転入 into it) brings versions that happened elsewhere; a tier below
the national server holds only its own area's people, so it may take such a
change as the continuation of what it held (``arriving``). The national
server sees everyone and never skips.
"""

from __future__ import annotations

from enum import Enum


class Decision(Enum):
    apply = "apply"
    duplicate = "duplicate"
    conflict = "conflict"  # same version, different event: never applied blindly
    gap = "gap"


def decide(*, held_version: int | None, held_event_id_for_version: str | None, incoming_version: int, incoming_event_id: str, arriving: bool = False) -> Decision:
    """What to do with an incoming change given what this tier holds.

    ``held_event_id_for_version`` is the event id this tier recorded for the
    incoming version, if it has one.
    """
    current = held_version or 0
    if incoming_version <= current:
        if held_event_id_for_version is None or held_event_id_for_version == incoming_event_id:
            return Decision.duplicate
        return Decision.conflict
    if incoming_version == current + 1 or arriving:
        return Decision.apply
    return Decision.gap
