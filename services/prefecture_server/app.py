"""The prefecture server's edges: consumer of its CSs' changes, relay to the
national server, resync answers, and the API for prefectural affairs."""


from fastapi import FastAPI

from contracts import topics
from contracts.affairs import Level
from contracts.identity import IdentityChange
from services.common.kafka import Refuse, StoredOffsetConsumer
from services.common.moves import arriving_in, concerns_area, made_in
from services.common.problems import install_problem_handlers
from services.common.provision import provision_router
from services.common.runtime import Runtime
from services.common.settings import ServiceSettings
from services.common.tier import Tier
from services.common.reconciliation import counterparts_of
from services.common.snapshots import tier_recovery
from services.prefecture_server.models import RECOVERY
from services.prefecture_server.models import TABLES, ConsumerOffset, DeadLetter, Identity, MessageReceipt, Outbox, Refusal
from services.prefecture_server.models import ProtectionMarkerRow
from contracts.dv import ProtectionMarker
from services.common.outbox import enqueue
from services.common.protection import marker_handler


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
        rt, TABLES, Outbox, forward_to=lambda change: topics.NATIONAL_IDENTITY if made_in(change, municipalities) else None, source_of=lambda change: f"cs_gateway.{change.municipality_code}",
        arriving=arriving_in(municipalities),
    )
    def marker_of_this_prefecture(marker: ProtectionMarker) -> None:
        if marker.municipality_code not in municipalities:
            raise Refuse(f"a protection marker of {marker.municipality_code}, which is not in prefecture {prefecture.code}")

    async def forward_marker(session, marker: ProtectionMarker, changed: bool) -> None:
        enqueue(session, Outbox, destination=topics.NATIONAL_IDENTITY, key=marker.resident_code, kind=marker.kind, payload=marker.model_dump_json())

    # DV protection markers share the identity topic (same order, same offsets); kept here and passed on
    markers = marker_handler(ProtectionMarkerRow, check=marker_of_this_prefecture, after=forward_marker)
    consumer = StoredOffsetConsumer(
        bootstrap=settings.kafka_bootstrap, topic=topics.prefecture_identity(prefecture.code), sessions=rt.sessions,
        offset_model=ConsumerOffset, dead_letter_model=DeadLetter, gate=rt.record_gate(), receipt_model=MessageReceipt,
        handler=tier.kafka_handler(in_this_prefecture, markers=markers), producer=rt.producer, name=rt.party,
    )

    relay = rt.kafka_outbox_relay(Outbox)
    recovery_routers, recovery_loops = tier_recovery(rt, tier, RECOVERY, municipalities=municipalities, counterparts=counterparts_of(topology, settings.node))
    app = FastAPI(
        title=f"都道府県サーバ {prefecture.name} ({prefecture.code})",
        version="1.0.0",
        description="The prefecture's 本人確認情報; provision for prefectural affairs; forwards every change its municipalities make to the national server.",
        lifespan=rt.background(consumer.run_forever, relay.run_forever, tier.heal_gaps_forever, *recovery_loops),
    )
    install_problem_handlers(app, rt.refusal_recorder(Refusal))
    app.include_router(provision_router(rt, identity_model=Identity, outbox_model=Outbox, relay=relay, level=Level.prefectural, prefecture=prefecture.code, municipalities=municipalities,
                                        marker_model=ProtectionMarkerRow))
    app.include_router(tier.internal_router())
    for recovery_router in recovery_routers:  # snapshots, reconciliation, disaster recovery
        app.include_router(recovery_router)
    return app
