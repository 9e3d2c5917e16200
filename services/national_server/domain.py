"""The national server's own rule: a person is registered in exactly one
municipality at a time (R-NET-3). Pure; the identity store calls it."""

from __future__ import annotations

from contracts.identity import ChangeReason, IdentityChange

_REGISTERING = {ChangeReason.birth, ChangeReason.ex_officio_record, ChangeReason.move_in}


class RegistrationConflict(ValueError):
    pass


def check_single_registration(current, change: IdentityChange) -> None:
    """Refuse a change that would leave a person registered twice or nowhere known."""
    if current is None:
        if change.reason not in _REGISTERING:
            raise RegistrationConflict(f"{change.resident_code}: first change must register the person, got {change.reason.value}")
        return
    if current.municipality_code != change.municipality_code and change.reason is not ChangeReason.move_in:
        raise RegistrationConflict(
            f"{change.resident_code} is registered in {current.municipality_code}; {change.municipality_code} cannot change it without a move-in"
        )
    if current.status == "active" and change.reason in {ChangeReason.birth, ChangeReason.ex_officio_record} and change.version > 1:
        raise RegistrationConflict(f"{change.resident_code} is already registered")
