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
    kept = await session.execute(_STORE_COMPOSITION, {
        "household_id": composition.household_id, "members": composition.model_dump_json(), "recorded_at": composition.recorded_at,
        "codes": [m.resident_code for m in composition.members],
    })
    return kept.scalar_one() > 0


#: One statement for a composition (it was three round trips, one of every few statements of a move at a CS):
#: the composition, unless a newer one is kept already (it locks the household's row); then those no longer
#: listed leave, and every member listed joins, moving from another household if need be. The leaving
#: and the joining touch different rows, so the two parts never meet on one row in this one statement.
_STORE_COMPOSITION = text(
    f"WITH kept AS (INSERT INTO {HouseholdRow.__tablename__} AS h (household_id, members, recorded_at) VALUES (:household_id, :members, :recorded_at)"
    "  ON CONFLICT (household_id) DO UPDATE SET members = excluded.members, recorded_at = excluded.recorded_at"
    "  WHERE h.recorded_at <= excluded.recorded_at RETURNING household_id),"
    f" leaving AS (DELETE FROM {HouseholdMemberRow.__tablename__} m USING kept"
    "  WHERE m.household_id = kept.household_id AND m.resident_code <> ALL(CAST(:codes AS varchar[]))),"
    f" joining AS (INSERT INTO {HouseholdMemberRow.__tablename__} AS m (resident_code, household_id)"
    "  SELECT code, kept.household_id FROM kept, unnest(CAST(:codes AS varchar[])) AS code"
    "  ON CONFLICT (resident_code) DO UPDATE SET household_id = excluded.household_id WHERE m.household_id <> excluded.household_id)"
    " SELECT count(*) FROM kept"
).bindparams(bindparam("household_id", type_=Uuid), bindparam("recorded_at", type_=DateTime(timezone=True)))


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
