"""The provision log's edges: the consumer of provision records and the resident API."""


from typing import Annotated

from aiokafka import ConsumerRecord
from fastapi import Depends, FastAPI, Query
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import topics
from contracts.provision import ProvisionRecord, ProvisionRecordList
from services.common.auth import bearer_verifier
from services.common.kafka import StoredOffsetConsumer
from services.common.problems import ProblemError, install_problem_handlers
from services.common.runtime import Runtime
from services.common.settings import ServiceSettings
from services.common.tokens import VerifiedToken
from services.provision_log.models import ConsumerOffset, DeadLetter, ProvisionEntry, Refusal


async def store_record(session: AsyncSession, record: ConsumerRecord) -> None:
    provision = ProvisionRecord.model_validate_json(record.value or b"")
    await session.execute(
        insert(ProvisionEntry).values(
            record_id=str(provision.record_id), resident_code=provision.resident_code, provided_at=provision.provided_at,
            provider=provision.provider, recipient=provision.recipient, affair=provision.affair, payload=provision.model_dump_json(),
        ).on_conflict_do_nothing(index_elements=["record_id"])
    )


def build_app(settings: ServiceSettings) -> FastAPI:
    rt = Runtime(settings)
    consumer = StoredOffsetConsumer(
        bootstrap=settings.kafka_bootstrap, topic=topics.PROVISIONS, sessions=rt.sessions, offset_model=ConsumerOffset,
        dead_letter_model=DeadLetter, handler=store_record, producer=rt.producer, name=rt.party,
    )
    app = FastAPI(
        title="提供記録 (provision log)",
        version="1.0.0",
        description="Every provision of a resident's identity information, and the resident's own view of them.",
        lifespan=rt.background(consumer.run_forever),
    )
    install_problem_handlers(app, rt.refusal_recorder(Refusal))
    resident_token = bearer_verifier(rt.keys, audience=rt.party, allowed_issuers=lambda party: party.startswith("rrs-"))

    @app.get("/v1/me/provisions", response_model=ProvisionRecordList)
    async def my_provisions(token: Annotated[VerifiedToken, Depends(resident_token)], limit: Annotated[int, Query(ge=1, le=500)] = 100) -> ProvisionRecordList:
        """Who received my identity information, newest first (resident credential required)."""
        if token.claims.get("scope") != "resident":
            raise ProblemError(403, "not-a-resident-credential", "This token is not a resident credential")
        async with rt.sessions() as session:
            rows = (await session.execute(select(ProvisionEntry).where(ProvisionEntry.resident_code == token.subject).order_by(ProvisionEntry.provided_at.desc()).limit(limit))).scalars().all()
        return ProvisionRecordList(resident_code=token.subject, records=[ProvisionRecord.model_validate_json(r.payload) for r in rows])

    return app
