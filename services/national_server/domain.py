"""The national server's own rules, pure: a person is registered in exactly one
municipality at a time (R-NET-3), and how a change becomes a push notification
without spreading an error (R-PRV-2)."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.identity import ChangeReason, IdentityChange
from contracts.push import NotificationType

_REGISTERING = {ChangeReason.birth, ChangeReason.ex_officio_record, ChangeReason.move_in}


class RegistrationConflict(ValueError):
    pass


def _move_of(current):
    """The move recorded with the version the national server holds (its payload)."""
    return IdentityChange.model_validate_json(current.payload).move


def check_single_registration(current, change: IdentityChange) -> None:
    """Refuse a change that would leave a person registered twice or nowhere known (R-NET-3).

    A person is either registered in one municipality (``active``), in
    transit from a known origin to a known destination (``moving_out``), or
    no longer registered (death, removal, emigration). Only the destination
    of the person's pending 転出 — or, after 国外転出, any municipality — may
    register them by a 転入; anything else is a move-in without a matching
    move-out and is refused (the refusal is recorded as a dead letter).
    """
    if current is None:
        if change.reason not in _REGISTERING:
            raise RegistrationConflict(f"{change.resident_code}: first change must register the person, got {change.reason.value}")
        if change.reason is ChangeReason.move_in and change.move is not None and change.move.origin_municipality_code is not None:
            raise RegistrationConflict(f"{change.resident_code}: move-in from {change.move.origin_municipality_code}, where the person was never registered")
        return
    if change.reason is ChangeReason.move_in:
        held = _move_of(current)
        in_transit_here = current.status == "moving_out" and held is not None and held.destination_municipality_code == change.municipality_code
        back_from_abroad = current.status == "removed" and held is not None and held.destination_country is not None
        if not (in_transit_here or back_from_abroad):
            raise RegistrationConflict(
                f"{change.resident_code}: move-in at {change.municipality_code} without a matching move-out "
                f"(the person is {current.status} at {current.municipality_code})"
            )
        return
    if current.municipality_code != change.municipality_code:
        raise RegistrationConflict(
            f"{change.resident_code} is registered in {current.municipality_code}; {change.municipality_code} cannot change it without a move-in"
        )
    if current.status == "active" and change.reason in {ChangeReason.birth, ChangeReason.ex_officio_record} and change.version > 1:
        raise RegistrationConflict(f"{change.resident_code} is already registered")
    if change.reason is ChangeReason.move_out and current.status != "active":
        raise RegistrationConflict(f"{change.resident_code}: move-out of a person who is {current.status}")
    if change.reason is ChangeReason.move_out_cancellation and current.last_reason != ChangeReason.move_out.value:
        raise RegistrationConflict(f"{change.resident_code}: no pending move-out to cancel")


# --- push notifications: what a new change does to what the agency has or has not yet seen -----------------


@dataclass(frozen=True)
class LatestNotification:
    """The newest notification of one follow, as far as the plan needs it."""

    notification_id: str
    type: NotificationType
    delivered: bool
    corrects: str | None


@dataclass(frozen=True)
class NotificationPlan:
    supersede_latest: bool  # the pending notification is dropped: the agency never sees it
    send: bool
    type: NotificationType | None = None
    corrects: str | None = None


def plan_notification(latest: LatestNotification | None, incoming: NotificationType) -> NotificationPlan:
    """Damage control (R-PRV-2): corrections inside the hold window replace what was pending;
    after delivery they follow it, referencing the notification they fix."""
    fixes = incoming in (NotificationType.correction, NotificationType.retraction)
    if latest is None or not fixes:
        # an ordinary change (or a fix with nothing to fix): it goes out after any pending one
        return NotificationPlan(supersede_latest=False, send=True, type=incoming)
    if latest.delivered:
        return NotificationPlan(supersede_latest=False, send=True, type=incoming, corrects=latest.notification_id)
    # the agency has not seen the latest notification yet
    if incoming is NotificationType.retraction:
        if latest.corrects is None:
            return NotificationPlan(supersede_latest=True, send=False)
        return NotificationPlan(supersede_latest=True, send=True, type=NotificationType.retraction, corrects=latest.corrects)
    return NotificationPlan(supersede_latest=True, send=True, type=latest.type, corrects=latest.corrects)
