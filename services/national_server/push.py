"""Push-type provision (R-PRV-2): follows, notifications held for the affair's
hold window, delivery to the agency's Kafka topic and REST feed, each delivery
a recorded provision.

The rules of what a correction does to a pending or delivered notification
are in ``domain.plan_notification``; this module does the I/O around them.
"""

import asyncio
import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import String, Uuid, any_, bindparam, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import topics
from contracts.base import BIGINT_MAX
from contracts.affairs import Level
from contracts.identity import IdentityChange
from contracts.push import NOTIFICATION_TYPE_OF, ChangeNotification, EncryptedNotification, Follow, FollowList, FollowRequest, NotificationFeed, NotificationType
from contracts.push_encryption import encrypt_notification
from services.common.auth import bearer_verifier
from services.common.encryption_keys import EncryptionKeyRing
from services.common.outbox import enqueue, poll_forever
from services.common.problems import ProblemError
from services.common.provision import AGENCY_PARTY_PREFIX, Grant, ProvisionRefused, authorise, items_for, project_change, record_provisions, subject_for
from services.common.protection import protected_codes
from services.common.tokens import VerifiedToken
from services.national_server.domain import LatestNotification, plan_notification
from services.national_server.models import FollowRow, Identity, NotificationRow, Outbox, ProtectionMarkerRow

log = logging.getLogger(__name__)

PENDING, DELIVERED, SUPERSEDED, WITHDRAWN = "pending", "delivered", "superseded", "withdrawn"

# Statements of every change and every delivery, built once (docs/architecture.md, "Database access on the hot path").
_ACTIVE_FOLLOWS_AMONG = select(FollowRow).where(
    FollowRow.resident_code == any_(bindparam("codes", type_=ARRAY(String))), FollowRow.stopped_at.is_(None),
    or_(FollowRow.until.is_(None), FollowRow.until >= bindparam("today")),
).order_by(FollowRow.created_at, FollowRow.id)
#: Each follow's latest notification still in force, locked (FOR UPDATE cannot go with DISTINCT ON: the rows are chosen
#: inside). The outer condition is checked again on the locked row, so one withdrawn meanwhile is not taken as in force.
_IN_FORCE = NotificationRow.status.in_((PENDING, DELIVERED))
_LATEST_NOTIFICATIONS_OF = select(NotificationRow).where(_IN_FORCE, NotificationRow.id.in_(
    select(NotificationRow.id).where(NotificationRow.follow_id == any_(bindparam("follow_ids", type_=ARRAY(Uuid))), _IN_FORCE)
    .distinct(NotificationRow.follow_id).order_by(NotificationRow.follow_id, NotificationRow.created_at.desc())
)).with_for_update()
_LATEST_NOTIFICATION = select(NotificationRow).where(
    NotificationRow.follow_id == bindparam("follow_id"), NotificationRow.status.in_((PENDING, DELIVERED)),
).order_by(NotificationRow.created_at.desc()).limit(1).with_for_update()
_DUE_NOTIFICATIONS = select(NotificationRow).where(
    NotificationRow.status == PENDING, NotificationRow.due_at <= bindparam("now"),
).order_by(NotificationRow.due_at, NotificationRow.created_at).limit(200).with_for_update(skip_locked=True)
#: The feed positions of one delivery pass, ascending: the pass hands them out in the order the notifications fell due.
_FEED_SEQUENCES = text("select nextval('notification_feed_seq') as position from generate_series(1, :n) order by position")


class Push:
    def __init__(self, rt, *, pseudonymizer, relay):
        self.rt = rt
        self.topology = rt.settings.topology_model
        self.pseudonymizer = pseudonymizer
        self.relay = relay
        self.wakeup = asyncio.Event()
        self.encryption_keys = EncryptionKeyRing(rt.settings.keys_dir)  # <keys dir>/agency-<id>.x25519.pub

    def grant(self, agency_id: str, affair_id: str) -> Grant:
        return authorise(self.topology, agency_id=agency_id, affair_id=affair_id, fields=None, level=Level.national, prefecture=None)

    # --- follows ---------------------------------------------------------------------
    async def follow(self, session: AsyncSession, *, agency_id: str, request: FollowRequest) -> tuple[Follow, bool]:
        grant = self.grant(agency_id, request.affair)
        if request.resident_code is not None and not grant.affair.requires_resident_code:
            raise ProvisionRefused("resident-code-not-authorised", f"the affair {request.affair} works with pseudonyms, not resident codes")
        resident_code = request.resident_code or self.pseudonymizer.resolve(agency_id, request.pseudonym)
        person = await session.get(Identity, resident_code) if resident_code else None
        if person is None:
            raise LookupError("no such person")
        existing = (await session.execute(select(FollowRow).where(
            FollowRow.agency_id == agency_id, FollowRow.affair == request.affair, FollowRow.resident_code == resident_code, FollowRow.stopped_at.is_(None),
        ).with_for_update())).scalar_one_or_none()
        if existing is not None:
            existing.until = request.until
            return self._follow_view(existing, grant), False
        row = FollowRow(id=uuid.uuid4(), agency_id=agency_id, affair=request.affair, resident_code=resident_code, until=request.until, created_at=datetime.now(UTC))
        session.add(row)
        await session.flush()
        return self._follow_view(row, grant), True

    def _follow_view(self, row: FollowRow, grant: Grant) -> Follow:
        code, pseudonym = subject_for(grant, row.resident_code, self.pseudonymizer)
        return Follow(follow_id=row.id, affair=row.affair, subject=code or pseudonym, until=row.until, created_at=row.created_at)

    async def unfollow(self, session: AsyncSession, *, agency_id: str, follow_id: uuid.UUID) -> bool:
        row = await session.get(FollowRow, follow_id, with_for_update=True)
        if row is None or row.agency_id != agency_id or row.stopped_at is not None:
            return False
        row.stopped_at = datetime.now(UTC)
        # what is still in its hold window is not sent after the agency stopped following
        pending = (await session.execute(select(NotificationRow).where(NotificationRow.follow_id == follow_id, NotificationRow.status == PENDING))).scalars()
        for n in pending:
            n.status = WITHDRAWN
        return True

    async def follows(self, session: AsyncSession, *, agency_id: str) -> FollowList:
        rows = (await session.execute(select(FollowRow).where(FollowRow.agency_id == agency_id, FollowRow.stopped_at.is_(None)).order_by(FollowRow.created_at))).scalars().all()
        return FollowList(follows=[self._follow_view(r, self.grant(agency_id, r.affair)) for r in rows])

    # --- from an applied change to notifications ------------------------------------------
    async def on_applied(self, session: AsyncSession, changes: list[IdentityChange]) -> None:
        """In the transaction that applied the changes (one, or a consumer's fetch), in their order: one notification per
        active follow of each. One read of the follows of all their persons and one of those follows' latest notifications."""
        changes = [c for c in changes if c.reason in NOTIFICATION_TYPE_OF]
        if not changes:
            return
        follows = (await session.execute(_ACTIVE_FOLLOWS_AMONG, {"codes": list({c.resident_code for c in changes}), "today": date.today()})).scalars().all()
        if not follows:
            return
        following: dict[str, list[FollowRow]] = {}
        for f in follows:
            following.setdefault(f.resident_code, []).append(f)
        latest_of = {row.follow_id: row for row in (await session.execute(_LATEST_NOTIFICATIONS_OF, {"follow_ids": [f.id for f in follows]})).scalars()}
        stamp = datetime.now(UTC)
        for position, change in enumerate(changes):
            now = stamp + timedelta(microseconds=position)  # strictly in the changes' order: "latest" and delivery order go by it
            for f in following.get(change.resident_code, ()):
                latest_row = latest_of.get(f.id)
                latest = None if latest_row is None else LatestNotification(
                    notification_id=str(latest_row.id), type=NotificationType(latest_row.type), delivered=latest_row.status == DELIVERED,
                    corrects=str(latest_row.corrects) if latest_row.corrects else None,
                )
                plan = plan_notification(latest, NOTIFICATION_TYPE_OF[change.reason])
                if plan.supersede_latest:
                    latest_row.status = SUPERSEDED
                    latest_of.pop(f.id)
                if plan.send:
                    latest_of[f.id] = NotificationRow(
                        id=uuid.uuid4(), follow_id=f.id, agency_id=f.agency_id, affair=f.affair, resident_code=change.resident_code,
                        change_event_id=str(change.event_id), version=change.version, type=plan.type.value,
                        corrects=uuid.UUID(plan.corrects) if plan.corrects else None, change=change.model_dump_json(), status=PENDING,
                        due_at=now + timedelta(seconds=self.topology.hold_seconds(f.affair)), created_at=now,
                    )
                    session.add(latest_of[f.id])
                elif plan.supersede_latest:  # the one before the superseded is the latest now: rare enough to ask (the flush comes first)
                    if (before := (await session.execute(_LATEST_NOTIFICATION, {"follow_id": f.id})).scalar_one_or_none()) is not None:
                        latest_of[f.id] = before
        self.wakeup.set()

    async def on_protection_change(self, session: AsyncSession, marker, changed: bool) -> None:
        """A DV support measure started or ended for a followed person: one ``protection_status_change`` per follow, due at once
        (the hold window is for erroneous entries; the marker comes from a decision, and the address must stop flowing now)."""
        if not changed:
            return
        person = await session.get(Identity, marker.resident_code)
        if person is None:
            return  # not registered here yet: nobody follows the person
        today, now = date.today(), datetime.now(UTC)
        follows = (await session.execute(select(FollowRow).where(
            FollowRow.resident_code == marker.resident_code, FollowRow.stopped_at.is_(None), or_(FollowRow.until.is_(None), FollowRow.until >= today),
        ))).scalars().all()
        change = IdentityChange.model_validate_json(person.payload)
        for f in follows:
            session.add(NotificationRow(
                id=uuid.uuid4(), follow_id=f.id, agency_id=f.agency_id, affair=f.affair, resident_code=marker.resident_code, change_event_id=str(change.event_id),
                version=change.version, type=NotificationType.protection_status_change.value, corrects=None, change=person.payload, status=PENDING,
                due_at=now, created_at=now,
            ))
        if follows:
            self.wakeup.set()

    # --- delivery ------------------------------------------------------------------------
    async def deliver_due(self) -> int:
        """One pass: the due notifications (up to 200), in the same few statements whatever their number; one by one,
        each cost several round trips, and at 100 changes/s the pass fell behind (docs/push.md, "Delivery")."""
        async with self.rt.sessions() as session, session.begin():
            due = (await session.execute(_DUE_NOTIFICATIONS, {"now": datetime.now(UTC)})).scalars().all()
            granted = []
            for n in due:
                try:
                    granted.append((n, self.grant(n.agency_id, n.affair)))
                except ProvisionRefused as exc:  # the agency lost the authorisation meanwhile: nothing leaves
                    log.warning("notification %s withdrawn: %s", n.id, exc.detail)
                    n.status = WITHDRAWN
            if granted:
                # as of delivery: a measure may have started since the change
                protected = await protected_codes(session, ProtectionMarkerRow, {n.resident_code for n, _ in granted})
                sequences = (await session.execute(_FEED_SEQUENCES, {"n": len(granted)})).scalars().all()
                for (n, grant), sequence in zip(granted, sequences, strict=True):
                    self._deliver(session, n, grant, sequence=sequence, protected=n.resident_code in protected)  # its outbox rows wake the relay at commit
        return len(due)

    def _deliver(self, session: AsyncSession, n: NotificationRow, grant: Grant, *, sequence: int, protected: bool) -> None:
        change = IdentityChange.model_validate_json(n.change)
        code, pseudonym = subject_for(grant, n.resident_code, self.pseudonymizer)
        delivered_at = datetime.now(UTC)
        notification = ChangeNotification(
            notification_id=n.id, sequence=sequence, agency=n.agency_id, affair=n.affair, subject=code or pseudonym,
            type=NotificationType(n.type), version=n.version, change_date=change.change_date,
            person=project_change(change, items_for(grant, protected=protected), pseudonym=pseudonym, protected=protected), corrects=n.corrects, delivered_at=delivered_at,
        )
        payload = notification.model_dump_json()
        n.status, n.sequence, n.delivered_at, n.payload = DELIVERED, sequence, delivered_at, payload  # the REST feed answers it as it is
        self._publish(session, notification, key=str(n.follow_id))
        record_provisions(
            session, Outbox, provider=self.rt.party, grant=grant, rows=[SimpleNamespace(resident_code=n.resident_code, municipality_code=change.municipality_code)],
            reason=f"変更通知 ({n.type})", query_type="Notification", trace_id=None, notification_id=n.id, protected={n.resident_code} if protected else (),
        )

    def _publish(self, session: AsyncSession, notification: ChangeNotification, *, key: str) -> None:
        """The notification on the agency's topic, sealed to the agency's encryption key (HPKE, ``contracts/push_encryption.py``):
        any consumer of the broker can read the topic, only the agency opens what is on it. The record key is the follow's id
        (a notification's order is its follow's), never the subject. Without the agency's key nothing goes to the topic; the
        notification is still in the agency's REST feed."""
        public_key = self.encryption_keys.key_for(f"{AGENCY_PARTY_PREFIX}{notification.agency}")
        if public_key is None:
            log.warning("notification %s not put on the topic: no encryption key for agency %s (%s%s.x25519.pub); it is in the REST feed",
                        notification.notification_id, notification.agency, AGENCY_PARTY_PREFIX, notification.agency)
            return
        topic = topics.agency_push(notification.agency)
        sealed = EncryptedNotification.model_validate(encrypt_notification(public_key, notification.model_dump(mode="json"), topic=topic, key=key))
        enqueue(session, Outbox, destination=topic, key=key, kind="encrypted-notification", payload=sealed.model_dump_json())

    async def deliver_forever(self) -> None:
        await poll_forever(self.deliver_due, wakeup=self.wakeup, idle_seconds=0.5, what="notification delivery pass")

    async def feed(self, session: AsyncSession, *, agency_id: str, after: int, since: datetime | None, limit: int) -> NotificationFeed:
        stmt = select(NotificationRow.payload, NotificationRow.sequence).where(NotificationRow.agency_id == agency_id, NotificationRow.status == DELIVERED, NotificationRow.sequence > after)
        if since is not None:
            stmt = stmt.where(NotificationRow.delivered_at >= since)
        rows = (await session.execute(stmt.order_by(NotificationRow.sequence).limit(limit))).all()
        return NotificationFeed(notifications=[ChangeNotification.model_validate_json(p) for p, _ in rows], next_cursor=rows[-1][1] if rows else after)

    # --- HTTP ---------------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter(prefix="/v1", tags=["push"])
        verify = bearer_verifier(self.rt.keys, audience=self.rt.party, allowed_issuers=lambda party: party.startswith(AGENCY_PARTY_PREFIX))
        Agency = Annotated[VerifiedToken, Depends(verify)]

        def agency_of(token: VerifiedToken) -> str:
            return token.issuer.removeprefix(AGENCY_PARTY_PREFIX)

        @router.post("/follows", response_model=Follow, status_code=201)
        async def follow(request: FollowRequest, token: Agency, response: Response) -> Follow:
            """Follow a person for an authorised affair; changes arrive as notifications."""
            try:
                async with self.rt.sessions() as session, session.begin():
                    view, created = await self.follow(session, agency_id=agency_of(token), request=request)
            except ProvisionRefused as exc:
                raise ProblemError(403, exc.slug, "Not authorised to follow for this affair", exc.detail) from None
            except LookupError:
                raise ProblemError(404, "not-found", "No such person") from None
            if not created:
                response.status_code = 200
            return view

        @router.get("/follows", response_model=FollowList)
        async def follows(token: Agency) -> FollowList:
            """The persons this agency follows."""
            async with self.rt.sessions() as session:
                return await self.follows(session, agency_id=agency_of(token))

        @router.delete("/follows/{follow_id}", status_code=204)
        async def unfollow(follow_id: uuid.UUID, token: Agency) -> Response:
            """Stop following; notifications still in their hold window are withdrawn."""
            async with self.rt.sessions() as session, session.begin():
                if not await self.unfollow(session, agency_id=agency_of(token), follow_id=follow_id):
                    raise ProblemError(404, "not-found", "No such follow")
            return Response(status_code=204)

        @router.get("/notifications", response_model=NotificationFeed)
        async def notifications(token: Agency, after: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0, since: datetime | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> NotificationFeed:
            """The agency's change feed: delivered notifications after a cursor, or from a point in time (replay)."""
            async with self.rt.sessions() as session:
                return await self.feed(session, agency_id=agency_of(token), after=after, since=since, limit=limit)

        return router
