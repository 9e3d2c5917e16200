"""Households at the CS: kept from what the RRS sends, answered to the national
server for authorised household-based affairs, each answer a recorded provision."""

from types import SimpleNamespace

from sqlalchemy import DateTime, Uuid, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.household import HouseholdAnswer, HouseholdComposition, HouseholdMemberAnswer, HouseholdRequest
from services.common.provision import Grant, record_provisions
from services.cs_gateway.models import HouseholdMemberRow, HouseholdRow, Outbox, TABLES


async def store_composition(session: AsyncSession, composition: HouseholdComposition) -> bool:
    """Keep the newest composition of a household; an older one arriving late changes nothing."""
    kept = await session.execute(_KEEP_COMPOSITION, {"household_id": composition.household_id, "members": composition.model_dump_json(), "recorded_at": composition.recorded_at})
    if kept.first() is None:
        return False
    await session.execute(_PLACE_MEMBERS, {"household_id": composition.household_id, "codes": [m.resident_code for m in composition.members]})
    return True


#: The composition, unless a newer one is kept already (then no row comes back); it locks the household's row.
_KEEP_COMPOSITION = text(
    f"INSERT INTO {HouseholdRow.__tablename__} AS h (household_id, members, recorded_at) VALUES (:household_id, :members, :recorded_at)"
    " ON CONFLICT (household_id) DO UPDATE SET members = excluded.members, recorded_at = excluded.recorded_at"
    " WHERE h.recorded_at <= excluded.recorded_at RETURNING household_id"
).bindparams(bindparam("household_id", type_=Uuid), bindparam("recorded_at", type_=DateTime(timezone=True)))

#: Then, in one statement (it was two): those no longer listed leave, and every member listed joins, moving from
#: another household if need be. The two parts touch different rows, so they never meet on one row. It is a
#: statement of its own, after the household's row is locked, so its snapshot sees what a composition of the
#: same household committed while this one waited for the lock (one statement shares one snapshot).
#: Written once as text: the PostgreSQL dialect's INSERT … ON CONFLICT construct is never cached by SQLAlchemy.
_PLACE_MEMBERS = text(
    f"WITH leaving AS (DELETE FROM {HouseholdMemberRow.__tablename__}"
    "  WHERE household_id = CAST(:household_id AS uuid) AND resident_code <> ALL(CAST(:codes AS varchar[])))"
    f" INSERT INTO {HouseholdMemberRow.__tablename__} AS m (resident_code, household_id)"
    " SELECT code, CAST(:household_id AS uuid) FROM unnest(CAST(:codes AS varchar[])) AS code"
    " ON CONFLICT (resident_code) DO UPDATE SET household_id = excluded.household_id WHERE m.household_id <> excluded.household_id"
)


async def answer(session: AsyncSession, *, request: HouseholdRequest, grant: Grant, municipality_code: str, provider: str) -> HouseholdAnswer | None:
    household_id = (await session.execute(select(HouseholdMemberRow.household_id).where(HouseholdMemberRow.resident_code == request.resident_code))).scalar_one_or_none()
    if household_id is None:
        return None
    composition = HouseholdComposition.model_validate_json((await session.get(HouseholdRow, household_id)).members)
    codes = [m.resident_code for m in composition.members]
    names = {r.resident_code: r for r in (await session.execute(select(TABLES.current).where(TABLES.current.resident_code.in_(codes)))).scalars()}
    members = [
        HouseholdMemberAnswer(resident_code=m.resident_code, relationship=m.relationship, family_name=names[m.resident_code].family_name, given_name=names[m.resident_code].given_name)
        for m in composition.members if m.resident_code in names
    ]
    record_provisions(
        session, Outbox, provider=provider, grant=grant, rows=[SimpleNamespace(resident_code=m.resident_code, municipality_code=municipality_code) for m in members],
        reason=request.reason, query_type="Household", trace_id=None,
    )
    return HouseholdAnswer(municipality_code=municipality_code, members=members)
