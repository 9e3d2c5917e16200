"""The prefecture server's edges: consumer of its CSs' changes, relay to the
national server, resync answers, and the API for prefectural affairs."""


from fastapi import FastAPI

from contracts import topics
from contracts.affairs import Level
from contracts.identity import IdentityChange
from services.common.kafka import Refuse, StoredOffsetConsumer
from services.common.moves import arriving_in, concerns_area
from services.common.outbox import OutboxRelay
from services.common.problems import install_problem_handlers
from services.common.provision import provision_router
from services.common.runtime import Runtime
from services.common.settings import ServiceSettings
from services.common.tier import Tier
from services.prefecture_server.models import TABLES, ConsumerOffset, DeadLetter, Identity, Outbox, Refusal


def build_app(settings: ServiceSettings) -> FastAPI:
    rt = Runtime(settings)
    topology = settings.topology_model
    prefecture = next((p for p in topology.prefectures if p.code == settings.tenant), None)
    if prefecture is None:
        raise SystemExit(f"prefecture {settings.tenant} is not in the topology")
    municipalities = {m.code for m in topology.municipalities if m.prefecture == prefecture.code}

    def in_this_prefecture(change: IdentityChange) -> None:
        if not concerns_area(change, municipalities):
            raise Refuse(f"municipality {change.municipality_code} is not in prefecture {prefecture.code}, nor a move into or out of it")

    tier = Tier(
        rt, TABLES, Outbox, forward_to=lambda change: topics.NATIONAL_IDENTITY, source_of=lambda change: f"cs_gateway.{change.municipality_code}",
        arriving=arriving_in(municipalities),
    )
    consumer = StoredOffsetConsumer(
        bootstrap=settings.kafka_bootstrap, topic=topics.prefecture_identity(prefecture.code), sessions=rt.sessions,
        offset_model=ConsumerOffset, dead_letter_model=DeadLetter, handler=tier.kafka_handler(in_this_prefecture), producer=rt.producer, name=rt.party,
    )

    relay = OutboxRelay(rt.sessions, Outbox, rt.publish_outbox_row, poll_seconds=settings.outbox_poll_seconds)
    app = FastAPI(
        title=f"都道府県サーバ {prefecture.name} ({prefecture.code})",
        version="1.0.0",
        description="The prefecture's 本人確認情報; provision for prefectural affairs; forwards every change to the national server.",
        lifespan=rt.background(consumer.run_forever, relay.run_forever, tier.heal_gaps_forever),
    )
    install_problem_handlers(app, rt.refusal_recorder(Refusal))
    app.include_router(provision_router(rt, identity_model=Identity, outbox_model=Outbox, relay=relay, level=Level.prefectural, prefecture=prefecture.code, municipalities=municipalities))
    app.include_router(tier.internal_router())
    return app
