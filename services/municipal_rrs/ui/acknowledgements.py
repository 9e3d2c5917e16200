"""Acknowledgements of the support-measure alert on a record (R-DV-2).

Rule: before issuing anything from a protected record (住民票の写し) or
showing its address, the clerk acknowledges the alert. An acknowledgement
counts for one clerk, one login session, one record and one measure, on the
day (the register's local day) it was made; a measure added later, another
clerk, a new login or the next day all ask again. Every acknowledgement is a
row: who, when, which record, which measure. The issuance route checks the
rows itself, so a clerk cannot skip the step by posting the form directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.municipal_rrs.related_models import AlertAcknowledgementRow
from services.municipal_rrs.ui.auth import StaffSession
from services.municipal_rrs.ui.labels import start_of_today


async def record(session: AsyncSession, who: StaffSession, resident_code: str, measure_ids: Iterable[str]) -> list[AlertAcknowledgementRow]:
    rows = [AlertAcknowledgementRow(id=uuid.uuid4(), staff_id=who.staff_id, session_id=who.session_id, resident_code=resident_code, measure_id=m)
            for m in sorted(set(measure_ids))]
    session.add_all(rows)
    await session.flush()
    return rows


async def acknowledged_today(session: AsyncSession, who: StaffSession, resident_code: str) -> dict[str, datetime]:
    """measure id → when this clerk acknowledged it in this session today."""
    rows = (await session.execute(select(AlertAcknowledgementRow.measure_id, AlertAcknowledgementRow.acknowledged_at).where(
        AlertAcknowledgementRow.staff_id == who.staff_id, AlertAcknowledgementRow.session_id == who.session_id,
        AlertAcknowledgementRow.resident_code == resident_code, AlertAcknowledgementRow.acknowledged_at >= start_of_today(),
    ))).all()
    return {measure_id: at for measure_id, at in rows}


async def missing(session: AsyncSession, who: StaffSession, resident_code: str, measure_ids: Iterable[str]) -> list[str]:
    """The measures in force that this clerk has not acknowledged for this record in this session today."""
    done = await acknowledged_today(session, who, resident_code)
    return [m for m in measure_ids if m not in done]
