"""The version rules every tier applies, against a real PostgreSQL with the tier tables as the services declare them.

``apply_change`` is the hot path of every CS, prefecture and national server,
so it is written as few Core statements; these tests hold it to the rules of
``services/common/versioning.py``: apply in order, ignore redeliveries, refuse
a second event for a held version, hold a change after a gap and apply it as
soon as the missing version arrives, and let a person arriving by a move skip
versions that happened elsewhere.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import DeclarativeBase

from contracts.identifiers import new_individual_number, new_resident_code
from contracts.identity import Address, ChangeReason, IdentityChange, IdentityInfo, MoveDetails, PersonName, RegistrationStatus, Sex
from services.common.db import make_engine, make_sessionmaker
from tests.e2e.helpers import tenant_database
from services.common.identity_store import VersionConflict, apply_change
from services.common.moves import arriving_in
from services.common.tier_models import declare_tier_tables, identity_tables
from services.common.versioning import Decision

CODE = new_resident_code()
NUMBER = new_individual_number()


class _Base(DeclarativeBase):
    pass


_declared = declare_tier_tables(_Base)
TABLES = identity_tables(_declared)


def _change(version: int, *, reason: ChangeReason = ChangeReason.move_within, municipality: str = "131016", text: str | None = None,
            move: MoveDetails | None = None, status: RegistrationStatus = RegistrationStatus.active) -> IdentityChange:
    address = Address(municipality_code=municipality, postal_code="1000001", text=text or f"東京都千代田区千代田{version}番")
    return IdentityChange(
        event_id=uuid.uuid4(), resident_code=CODE, version=version, municipality_code=municipality, reason=reason,
        change_date=date(2026, 4, version), notified_date=date(2026, 4, version), status=status,
        identity=IdentityInfo(
            resident_code=CODE, individual_number=NUMBER, name=PersonName(family_name="山田", given_name="花子", family_name_kana="ヤマダ", given_name_kana="ハナコ"),
            birth_date=date(1990, 1, 2), sex=Sex.female, address=address,
        ),
        move=move, recorded_at=datetime.now(UTC),
    )


async def _scenario(url: str) -> dict:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    sessions = make_sessionmaker(engine)

    async def apply(change: IdentityChange, **kw):
        async with sessions() as session, session.begin():
            return await apply_change(session, TABLES, change, **kw)

    async def state() -> tuple[int | None, str | None, list[int], int]:
        async with sessions() as session:
            current = (await session.execute(select(TABLES.current.version, TABLES.current.address_text).where(TABLES.current.resident_code == CODE))).one_or_none()
            history = list((await session.execute(select(TABLES.history.version).where(TABLES.history.resident_code == CODE).order_by(TABLES.history.version))).scalars())
            held = (await session.execute(select(func.count()).select_from(TABLES.held))).scalar_one()
        return (current[0] if current else None), (current[1] if current else None), history, held

    seen: dict = {}
    try:
        first = _change(1, reason=ChangeReason.birth)
        seen["first"] = (await apply(first)).decision
        seen["redelivered"] = (await apply(first)).decision
        with pytest.raises(VersionConflict):
            await apply(_change(1, reason=ChangeReason.birth))
        seen["after first"] = await state()

        third, fourth, second = _change(3), _change(4), _change(2)
        seen["third early"] = (await apply(third)).decision
        seen["fourth early"] = (await apply(fourth)).decision
        seen["while held"] = await state()
        healed = await apply(second)
        seen["second"] = healed.decision, [c.version for c in healed.applied]
        seen["after healing"] = await state()

        move_in = _change(9, reason=ChangeReason.move_in, municipality="131130", text="東京都中央区日本橋1番",
                          move=MoveDetails(procedure_id=uuid.uuid4(), origin_municipality_code="272035"))
        seen["gap without arriving"] = (await apply(move_in.model_copy(update={"event_id": uuid.uuid4()}))).decision
        async with sessions() as session, session.begin():
            await session.execute(TABLES.held.__table__.delete())
            await session.execute(TABLES.current.__table__.update().values(municipality_code="272035", status="moving_out"))
        seen["arriving"] = (await apply(move_in, arriving=arriving_in({"131130"}))).decision
        seen["after arriving"] = await state()
    finally:
        await engine.dispose()
    return seen


def test_apply_change_follows_the_version_rules(tmp_path):
    with tenant_database(tmp_path, "identity_store_test") as (_, url):
        seen = asyncio.run(_scenario(url))
    assert seen["first"] is Decision.apply
    assert seen["redelivered"] is Decision.duplicate
    assert seen["after first"] == (1, "東京都千代田区千代田1番", [1], 0)
    assert seen["third early"] is Decision.gap and seen["fourth early"] is Decision.gap
    assert seen["while held"] == (1, "東京都千代田区千代田1番", [1], 2)
    assert seen["second"] == (Decision.apply, [2, 3, 4])  # the held successors follow in the same transaction
    assert seen["after healing"] == (4, "東京都千代田区千代田4番", [1, 2, 3, 4], 0)
    assert seen["gap without arriving"] is Decision.gap
    assert seen["arriving"] is Decision.apply
    assert seen["after arriving"] == (9, "東京都中央区日本橋1番", [1, 2, 3, 4, 9], 0)
