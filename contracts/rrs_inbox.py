"""What the municipal register sends its own CS, batched.

The RRS relay sends the outbox rows of one pass in one request, in order;
each message keeps the W3C trace context of the change that produced it, so
batching does not break the trace from the counter to the agency.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from contracts.base import TRACEPARENT_PATTERN, Contract
from contracts.dv import SupportMeasureAck, SupportMeasureNotice
from contracts.household import HouseholdComposition
from contracts.identity import IdentityChange
from contracts.moves import MoveInReply, MoveOutCertificate, MoveOutWithdrawal
from contracts.online import OnlineFilingOutcome

#: the first leg of a move's messages (certificate, withdrawal, reply) also starts at the RRS;
#: the CS forwards them to the other municipality's CS; so do DV support measures and their acknowledgements
RrsMessage = Annotated[
    IdentityChange | HouseholdComposition | MoveOutCertificate | MoveOutWithdrawal | MoveInReply | OnlineFilingOutcome
    | SupportMeasureNotice | SupportMeasureAck,
    Field(discriminator="kind"),
]


class RrsEnvelope(Contract):
    traceparent: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN)
    message: RrsMessage


class RrsBatch(Contract):
    messages: list[RrsEnvelope] = Field(min_length=1, max_length=500)


class RrsBatchAck(Contract):
    accepted: int
    duplicates: int
