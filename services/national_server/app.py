"""The national server's edges: the Kafka consumer of identity changes, the
agency API, resync answers, and the relay of provision records."""


from fastapi import FastAPI

from contracts import topics
from contracts.affairs import Level
from contracts.identity import IdentityChange
from services.common.idempotency import install_idempotency, token_caller
from services.common.kafka import Refuse, StoredOffsetConsumer
from services.common.problems import install_problem_handlers
from services.common.provision import provision_router
from services.common.runtime import Runtime
from services.common.settings import ServiceSettings
from services.common.tier import Tier
from services.common.reconciliation import counterparts_of
from services.common.snapshots import tier_recovery
from services.national_server.models import RECOVERY
from services.national_server.bulk import build_bulk
from services.national_server.domain import RegistrationConflict, check_single_registration
from services.national_server.pseudonyms import Pseudonymizer
from services.national_server.households import household_router
from services.national_server.push import Push
from services.national_server.jpki_routes import Jpki, in_order  # JPKI certification authority
from services.national_server.models import TABLES, ConsumerOffset, DeadLetter, IdempotencyKey, Identity, MessageReceipt, Outbox, Refusal
from services.national_server.models import ProtectionMarkerRow
from contracts.dv import ProtectionMarker
from services.common.protection import marker_handler


def build_app(settings: ServiceSettings) -> FastAPI:
    rt = Runtime(settings)
    topology = settings.topology_model

    def source_of(change: IdentityChange) -> str:
        m = topology.municipality(change.municipality_code)
        if m is None:
            raise Refuse(f"unknown municipality {change.municipality_code}")
        return topology.upstream_of_cs(m.code) if topology.network.prefecture_tier else f"cs_gateway.{m.code}"

    def check(current, change: IdentityChange) -> None:
        try:
            check_single_registration(current, change)
        except RegistrationConflict as exc:
            raise Refuse(str(exc)) from None

    def known_municipality(change: IdentityChange) -> None:
        if topology.municipality(change.municipality_code) is None:
            raise Refuse(f"unknown municipality {change.municipality_code}")

    if settings.pseudonym_key is None:
        raise SystemExit("the national server needs JUKINET_PSEUDONYM_KEY (master key of per-agency pseudonyms)")
    pseudonymizer = Pseudonymizer(settings.pseudonym_key.read_bytes())
    relay = rt.kafka_outbox_relay(Outbox)
    push = Push(rt, pseudonymizer=pseudonymizer, relay=relay)
    jpki = Jpki(rt)
    tier = Tier(rt, TABLES, Outbox, forward_to=None, source_of=source_of, check=check, on_applied=in_order(push.on_applied, jpki.on_applied))

    def marker_of_known_municipality(marker: ProtectionMarker) -> None:
        if topology.municipality(marker.municipality_code) is None:
            raise Refuse(f"a protection marker of unknown municipality {marker.municipality_code}")

    # DV protection markers share the identity topic; followers hear of a change of protection
    markers = marker_handler(ProtectionMarkerRow, check=marker_of_known_municipality, after=push.on_protection_change)
    consumer = StoredOffsetConsumer(
        bootstrap=settings.kafka_bootstrap, topic=topics.NATIONAL_IDENTITY, sessions=rt.sessions, offset_model=ConsumerOffset,
        dead_letter_model=DeadLetter, gate=rt.record_gate(), receipt_model=MessageReceipt, handler=tier.kafka_handler(known_municipality, markers=markers),
        batch_handler=tier.kafka_batch_handler(known_municipality, markers=markers), producer=rt.producer, name=rt.party,
    )

    bulk_router, bulk_worker = build_bulk(rt, pseudonymizer=pseudonymizer, topology=topology)
    recovery_routers, recovery_loops = tier_recovery(rt, tier, RECOVERY, municipalities={m.code for m in topology.municipalities}, counterparts=counterparts_of(topology, settings.node))
    app = FastAPI(
        title="全国サーバ (national server)",
        version="1.0.0",
        description="Latest 本人確認情報 of every resident; provision to agencies for authorised national affairs only.",
        lifespan=rt.background(consumer.run_forever, relay.run_forever, tier.heal_gaps_forever, push.deliver_forever, bulk_worker, *recovery_loops),
    )
    install_problem_handlers(app, rt.refusal_recorder(Refusal))
    # Idempotency-Key on every POST (queries, follows, bulk jobs, households…), scoped to the verified token's issuer and subject
    install_idempotency(app, rt, IdempotencyKey, caller=token_caller(rt.keys, audience=rt.party))
    app.include_router(provision_router(
        rt, identity_model=Identity, outbox_model=Outbox, relay=relay, level=Level.national, prefecture=None, municipalities=None, pseudonymizer=pseudonymizer,
        serves_prefectural_affairs=not topology.network.prefecture_tier,  # R-NET-4: no prefecture server to ask instead
        marker_model=ProtectionMarkerRow,  # DV support measures: protected: true, no address unless the affair requires it
    ))
    app.include_router(push.router())
    app.include_router(household_router(rt, pseudonymizer=pseudonymizer, relay=relay))
    app.include_router(bulk_router)
    app.include_router(tier.internal_router())
    for recovery_router in recovery_routers:  # snapshots (without the prefecture tier), reconciliation, disaster recovery
        app.include_router(recovery_router)
    app.include_router(jpki.router())
    return app
