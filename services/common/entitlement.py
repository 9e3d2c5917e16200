"""Which node may produce what on which topic (pure rules, no I/O).

A valid signature proves who produced a record
(:mod:`services.common.message_signing`); these rules decide whether that
node may say it. They follow the flows of docs/architecture.md:

- ``jukinet.pref.<pp>.identity``: the CSs of prefecture ``pp``, each about
  its own municipality (identity changes and DV protection markers), or a
  move into or out of it (the 転出 a 転入 here continues from, the 転入 an
  origin hears of);
- ``jukinet.national.identity``: the prefecture servers, each about its own
  prefecture's municipalities; without the prefecture tier, the CSs as above;
- ``jukinet.cs.<m>.inbox``: any other CS, speaking for its own municipality;
- ``jukinet.provisions``: a providing node, for its own provisions;
- ``jukinet.push.<agency>``: only the national server;
- ``jukinet.deadletter``: any node of the network.

Agencies, registers and the operator sign tokens with keys of the same ring,
but produce nothing on the broker: a record signed by one of them is refused.

Everything else is refused: an unknown topic has no producer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from contracts import topics
from services.common.auth import is_network_node
from services.common.topology import Topology

MARKER_KIND = "protection-marker/v1"
PROVISION_LOG = "provision-log"  # consumes provisions; produces dead letters only
IDENTITY_KINDS = ("identity-change", "identity-change/v1")


class NotEntitled(Exception):
    """The signer may not produce this record on this topic."""


def _party_tenant(party: str, prefix: str) -> str | None:
    return party.removeprefix(prefix) if party.startswith(prefix) else None


def _about(payload: Mapping, kind: str) -> tuple[str | None, set[str]]:
    """The municipality a record is of, and every municipality a move in it involves."""
    municipality = payload.get("municipality_code")
    involved = {municipality} if isinstance(municipality, str) else set()
    move = payload.get("move") if kind in IDENTITY_KINDS else None
    if isinstance(move, Mapping):
        involved |= {c for c in (move.get("origin_municipality_code"), move.get("destination_municipality_code")) if isinstance(c, str)}
    return (municipality if isinstance(municipality, str) else None), involved


def _identity_record(kind: str) -> None:
    if kind not in IDENTITY_KINDS and kind != MARKER_KIND:
        raise NotEntitled(f"a record of kind {kind!r} has no place on an identity topic")


def _cs_may_send_upward(municipality: str, kind: str, payload: Mapping) -> None:
    """A CS speaks for its own municipality; a change it forwards may also be of a move into or out of it."""
    own, involved = _about(payload, kind)
    if kind == MARKER_KIND:
        if own != municipality:
            raise NotEntitled(f"cs-{municipality} may not send a protection marker of municipality {own}")
        return
    if municipality not in involved:
        raise NotEntitled(f"cs-{municipality} may not send a change of municipality {own} that involves it in no move")


def _prefecture_may_send(prefecture: str, municipalities: Collection[str], kind: str, payload: Mapping) -> None:
    """A prefecture server passes on what its own municipalities made, and their protection markers."""
    own, _ = _about(payload, kind)
    if own not in municipalities:
        raise NotEntitled(f"pref-{prefecture} may not send a record of municipality {own}, which is not in its prefecture")


def check_entitled(topology: Topology, *, signer: str, topic: str, kind: str, payload: Mapping) -> None:
    """Raise :class:`NotEntitled` unless ``signer`` may produce a record of ``kind`` with ``payload`` on ``topic``."""
    if not (is_network_node(signer) or signer == PROVISION_LOG):  # the key ring holds agencies', registers' and the operator's keys too
        raise NotEntitled(f"{signer} is no node that produces to the broker")
    tier = topology.network.prefecture_tier
    cs = _party_tenant(signer, "cs-")
    cs_municipality = topology.municipality(cs) if cs is not None else None
    if topic == topics.NATIONAL_IDENTITY or topic.startswith("jukinet.pref."):
        _identity_record(kind)
        if topic == topics.NATIONAL_IDENTITY and tier:
            prefecture = _party_tenant(signer, "pref-")
            if prefecture is None or not any(p.code == prefecture for p in topology.prefectures):
                raise NotEntitled(f"{signer} may not produce to {topic}: only the prefecture servers do")
            _prefecture_may_send(prefecture, {m.code for m in topology.municipalities if m.prefecture == prefecture}, kind, payload)
            return
        if cs_municipality is None:
            raise NotEntitled(f"{signer} may not produce to {topic}: only the CSs below it do")
        upward = topics.prefecture_identity(cs_municipality.prefecture) if tier else topics.NATIONAL_IDENTITY
        if topic != upward:
            raise NotEntitled(f"{signer} may not produce to {topic}: its changes go to {upward}")
        _cs_may_send_upward(cs_municipality.code, kind, payload)
        return
    if topic.startswith("jukinet.cs.") and topic.endswith(".inbox"):
        if cs_municipality is None:
            raise NotEntitled(f"{signer} may not produce to {topic}: only the CSs do")
        if topic == topics.cs_inbox(cs_municipality.code):
            raise NotEntitled(f"{signer} may not send to its own inbox")
        sender = payload.get("municipality_code")
        if sender != cs_municipality.code:
            raise NotEntitled(f"{signer} may not send a message on behalf of municipality {sender}")
        return
    if topic == topics.PROVISIONS:
        if kind != "provision-record":
            raise NotEntitled(f"a record of kind {kind!r} has no place on {topic}")
        if not is_network_node(signer):
            raise NotEntitled(f"{signer} provides nothing to agencies")
        if payload.get("provider") != signer:
            raise NotEntitled(f"{signer} may not record a provision made by {payload.get('provider')}")
        return
    if topic.startswith("jukinet.push."):
        if signer != "national":
            raise NotEntitled(f"{signer} may not produce to {topic}: only the national server does")
        return
    if topic == topics.DEAD_LETTER:
        return
    raise NotEntitled(f"{topic} is no topic of the network")
