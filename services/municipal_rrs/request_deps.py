"""What every JSON route of the register needs from a request: its transaction and the clerk.

The transaction commits *before* the answer is sent (``scope="function"``):
a 201 means the change is durable and the next request reads it. With
FastAPI's default scope the commit would run after the response, so a client
could be told "registered" for a change that then failed, or read it back too
early.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


def transaction_dependency(sessions: async_sessionmaker):
    """``Annotated[AsyncSession, …]`` for one transaction per request, committed before the answer.

    A commit that wrote outbox rows wakes the outbox relay (``outbox.enqueue``),
    so the first pass already sees them instead of waiting for the next poll.
    """

    async def transaction():
        async with sessions() as session, session.begin():
            yield session

    return Annotated[AsyncSession, Depends(transaction, scope="function")]


def staff_id(request: Request, x_staff_id: Annotated[str | None, Header(max_length=100, pattern=r"^[A-Za-z0-9._-]+$")] = None) -> str:
    """The clerk acting (``X-Staff-Id``), recorded with every change and refusal; "counter" when not given."""
    request.state.caller = x_staff_id or "counter"
    return request.state.caller


StaffDep = Annotated[str, Depends(staff_id)]
