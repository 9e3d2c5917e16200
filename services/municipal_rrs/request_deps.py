"""What every JSON route of the register needs from a request: its transaction and the member of staff.

The transaction commits *before* the answer is sent (``scope="function"``):
a 201 means the change is durable and the next request reads it. With
FastAPI's default scope the commit would run after the response, so a client
could be told "registered" for a change that then failed, or read it back too
early.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.problems import ProblemError


def transaction_dependency(sessions: async_sessionmaker):
    """``Annotated[AsyncSession, …]`` for one transaction per request, committed before the answer.

    A commit that wrote outbox rows wakes the outbox relay (``outbox.enqueue``),
    so the first pass already sees them instead of waiting for the next poll.
    """

    async def transaction():
        async with sessions() as session, session.begin():
            yield session

    return Annotated[AsyncSession, Depends(transaction, scope="function")]


def staff_id(request: Request) -> str:
    """The member of staff acting, as ``access.authorize`` authenticated them: recorded with every change and refusal.

    There is no default and no header to name oneself: a route reached without
    an authenticated member of staff is a route missing from the access table.
    """
    member = getattr(request.state, "staff", None)
    if member is None:
        raise ProblemError(401, "unauthorized", "Staff log in first")
    return member.username


StaffDep = Annotated[str, Depends(staff_id)]
