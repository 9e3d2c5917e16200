"""The municipality's rules for online filings, pure (R-ONL-1, R-ONL-3).

Each function answers with the reason a filing is refused, in words the
resident can act on, or ``None`` when the filing may go on.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from contracts.jpki import AssuranceState
from contracts.online import OnlineMoveIn, OnlineMoveOut, OnlineMoveWithin
from services.common.topology import OnlinePolicy

#: online 転出届: from 30 days before the move to 10 days after it
MOVE_OUT_BEFORE = timedelta(days=30)
MOVE_OUT_AFTER = timedelta(days=10)
#: 転入届 and 転居届: within 14 days after moving (住民基本台帳法 22・23条), never before
MOVE_IN_AFTER = timedelta(days=14)
#: a signed filing is sent when it is signed; an old one is a replay
FRESHNESS = timedelta(minutes=10)


def window_refusal(content: OnlineMoveOut | OnlineMoveIn | OnlineMoveWithin, *, today: date, now: datetime) -> str | None:
    if abs(now - content.filed_at) > FRESHNESS:
        return "the filing was signed more than 10 minutes ago; sign it again"
    if isinstance(content, OnlineMoveOut):
        if content.planned_date - today > MOVE_OUT_BEFORE:
            return "an online 転出届 can be filed from 30 days before the move"
        if today - content.planned_date > MOVE_OUT_AFTER:
            return "an online 転出届 can be filed until 10 days after the move; please visit the counter"
        return None
    if content.move_date > today:
        return "a 転入届 or 転居届 is filed after moving in"
    if today - content.move_date > MOVE_IN_AFTER:
        return "a 転入届 or 転居届 is filed within 14 days after moving; please visit the counter"
    return None


def assurance_refusal(state: AssuranceState, policy: OnlinePolicy, *, now: datetime) -> str | None:
    """Identity assurance must not decay: too many online-only procedures, or too long since a face-to-face check."""
    if state.consecutive_online_procedures >= policy.max_consecutive_online:
        return (f"an in-person identity check is needed: {state.consecutive_online_procedures} procedures in a row were done online "
                f"(this municipality allows {policy.max_consecutive_online}); please visit the counter once with your card")
    if state.last_in_person_check_at is None:
        return "an in-person identity check is needed: none is on record; please visit the counter once with your card"
    if now - state.last_in_person_check_at > timedelta(days=365 * policy.in_person_check_years):
        return (f"an in-person identity check is needed: the last one was on {state.last_in_person_check_at.date().isoformat()}, "
                f"more than {policy.in_person_check_years} years ago; please visit the counter once with your card")
    return None


def confirmation_refusal(content: OnlineMoveOut | OnlineMoveIn | OnlineMoveWithin, policy: OnlinePolicy) -> str | None:
    if isinstance(content, OnlineMoveOut):
        return None
    if content.confirmation not in policy.residence_confirmation:
        accepted = ", ".join(c.value for c in policy.residence_confirmation)
        return f"this municipality confirms residence by {accepted}, not by {content.confirmation.value}"
    return None
