"""Which identity changes concern a tier's area when people move (pure rules).

A CS's area is its municipality; a prefecture server's area is its
prefecture's municipalities. A move involves two areas: the change of a
転出 names the origin as its municipality and the destination in ``move``;
a 転入 names the destination and the origin. Both areas keep the change, so
each tier's copy says where the person went (or came from).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from contracts.identity import ChangeReason, IdentityChange


def concerns_area(change: IdentityChange, area: Collection[str]) -> bool:
    """The change is of this area's register, or of a move into or out of it."""
    if change.municipality_code in area:
        return True
    move = change.move
    return move is not None and (move.origin_municipality_code in area or move.destination_municipality_code in area)


def made_in(change: IdentityChange, area: Collection[str]) -> bool:
    """The change was made by a municipality of this area (not brought into it by a move).

    A prefecture forwards to the national server only such changes: a move
    also brings it the 転出 a destination CS continues from and the 転入 an
    origin CS hears of, and the prefecture of the municipality that made
    each one forwards it, so every change reaches the national server once."""
    return change.municipality_code in area


def forwarded_by_cs(change: IdentityChange, *, municipality_code: str, upstream_of: Callable[[str], str | None]) -> bool:
    """Whether the CS of ``municipality_code`` forwards an applied change to the tier above.

    It forwards what its municipality made. A move also brings it changes made
    elsewhere — the 転出 a 転入 here continues from, the 転入 an origin hears of
    — and the CS of the municipality that made each forwarded it already, to
    that municipality's upstream node. So such a change goes up again only when
    that node is not this CS's own (a move across prefectures): each upstream
    node hears of every change of its area once. ``upstream_of`` names a
    municipality's upstream node, None for one not on the network.
    """
    if change.municipality_code == municipality_code:
        return True
    makers_upstream = upstream_of(change.municipality_code)
    return makers_upstream is None or makers_upstream != upstream_of(municipality_code)


def arriving_in(area: Collection[str]) -> Callable[[object, IdentityChange], bool]:
    """A predicate for :func:`services.common.identity_store.apply_change`: the change brings
    a person into ``area`` who is not registered in it now, so the versions that
    happened elsewhere may be skipped."""

    def arriving(current, change: IdentityChange) -> bool:
        if current is not None and current.municipality_code in area and current.status == "active":
            return False
        move = change.move
        if move is None:
            return False
        into_area_by_move_out = change.reason is ChangeReason.move_out and move.destination_municipality_code in area
        into_area_by_move_in = change.reason is ChangeReason.move_in and change.municipality_code in area
        return into_area_by_move_out or into_area_by_move_in

    return arriving
