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
