"""The Merkle log in the provision log's own database: appends, checkpoints,
proofs, resident views, incidents and expiry. SQL only; the arithmetic is
in :mod:`merkle` and the rules in :mod:`domain`.

Functions take the caller's session and never commit: a consumer appends a
record, its leaf and its Kafka offset in one transaction.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import DateTime, String, any_, bindparam, delete, func, insert, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.provision import ProvisionRecord
from contracts.transparency import (
    ConsistencyProof, IncidentKind, IncidentRecorded, IncidentView, InclusionProof, LogLeaf as LogLeafView, LogLeaves,
    ResidentProvision,
)
from services.provision_log import checkpoint as cp
from services.provision_log import domain, merkle
from services.provision_log.models import (
    Incident, IncidentRecord, LogLeaf, LogNode, LogState, ProvisionEntry, SignedCheckpoint,
)

T = TypeVar("T")


class NotFound(Exception):
    pass


class NotYetCheckpointed(Exception):
    pass


# --- the tree -------------------------------------------------------------------------


async def read_nodes(session: AsyncSession, coords) -> dict[merkle.Coord, bytes]:
    coords = list(coords)
    if not coords:
        return {}
    rows = await session.execute(select(LogNode.level, LogNode.idx, LogNode.hash).where(tuple_(LogNode.level, LogNode.idx).in_(coords)))
    return {(level, idx): bytes(h) for level, idx, h in rows}


async def compute(session: AsyncSession, fn: Callable[[merkle.NodeGetter], T]) -> T:
    """Run a merkle computation on the stored nodes it needs (one query)."""
    return fn(merkle.getter(await read_nodes(session, merkle.needed(fn))))


async def tree_size(session: AsyncSession) -> int:
    return int(await session.scalar(select(LogState.size).where(LogState.id == 1)) or 0)


# Statements of every provision record, built once: a Core INSERT is compiled once and cached, the
# PostgreSQL dialect's INSERT … ON CONFLICT never is (so that one is written as text).
_LOCKED_STATE = select(LogState).where(LogState.id == 1).with_for_update()  # appends are serial
_LEAVES_OF = select(LogLeaf.record_id, LogLeaf.leaf_index).where(LogLeaf.record_id == any_(bindparam("record_ids", type_=ARRAY(String))))
_INSERT_NODES = insert(LogNode.__table__)  # executemany: the nodes an append completes
_KEEP_PROVISION = text(
    f"INSERT INTO {ProvisionEntry.__tablename__} (record_id, resident_code, provided_at, provider, recipient, affair, payload)"
    " VALUES (:record_id, :resident_code, :provided_at, :provider, :recipient, :affair, :payload) ON CONFLICT (record_id) DO NOTHING"
).bindparams(bindparam("provided_at", type_=DateTime(timezone=True)))


@dataclass(frozen=True)
class Entry:
    """One leaf to append: what it hashes and what is kept beside it."""

    record_id: str
    kind: str
    entry: bytes
    entry_time: datetime
    resident_code: str | None = None
    salt: bytes | None = None


async def append(session: AsyncSession, *, record_id: str, kind: str, entry: bytes, entry_time: datetime, resident_code: str | None = None, salt: bytes | None = None) -> int:
    """Append one leaf unless ``record_id`` already has one; its leaf index either way."""
    [index] = await append_many(session, [Entry(record_id, kind, entry, entry_time, resident_code, salt)])
    return index


async def append_many(session: AsyncSession, entries: list[Entry]) -> list[int]:
    """Append, in order, a leaf for each entry whose record has none yet; each entry's leaf index.

    The same few statements whatever the number of entries (the lock, the leaves already there, the
    stored nodes the appends read, the new nodes, the leaves and the size): a consumer appends the
    records of one fetch together. An append reads only the roots of complete subtrees to its left,
    so each is either stored already or made by an earlier append of the same call.
    """
    state = (await session.execute(_LOCKED_STATE)).scalar_one()
    leaf_of = dict((await session.execute(_LEAVES_OF, {"record_ids": [e.record_id for e in entries]})).all())
    fresh = []
    for e in entries:
        if e.record_id not in leaf_of:
            leaf_of[e.record_id] = state.size + len(fresh)
            fresh.append(e)
    if fresh:
        first = state.size
        nodes = await read_nodes(session, {coord for i in range(first, first + len(fresh)) for coord in merkle.append_reads(i)})
        made = []
        for index, e in enumerate(fresh, start=first):
            leaf = merkle.leaf_hash(e.entry)
            appended = merkle.nodes_for_append(index, leaf, merkle.getter(nodes))
            nodes.update({(level, i): h for level, i, h in appended})
            made.extend({"level": level, "idx": i, "hash": h} for level, i, h in appended)
            session.add(LogLeaf(
                leaf_index=index, record_id=e.record_id, kind=e.kind, leaf_hash=leaf, entry=e.entry.decode("utf-8"),
                resident_code=e.resident_code, salt=e.salt, entry_time=e.entry_time,
            ))
        await session.execute(_INSERT_NODES, made)
        state.size = first + len(fresh)
        await session.flush()
    return [leaf_of[e.record_id] for e in entries]


async def append_provision(session: AsyncSession, record: ProvisionRecord) -> int:
    """The provision record and its leaf, both idempotent by record id."""
    [index] = await append_provisions(session, [record])
    return index


async def append_provisions(session: AsyncSession, records: list[ProvisionRecord]) -> list[int]:
    """:func:`append_provision` for several records, in order, in the same few statements."""
    await session.execute(_KEEP_PROVISION, [{
        "record_id": str(r.record_id), "resident_code": r.resident_code, "provided_at": r.provided_at,
        "provider": r.provider, "recipient": r.recipient, "affair": r.affair, "payload": r.model_dump_json(),
    } for r in records])
    entries = []
    for r in records:
        salt = os.urandom(domain.SALT_BYTES)
        entries.append(Entry(str(r.record_id), "provision", domain.provision_entry(r, salt), r.provided_at, r.resident_code, salt))
    return await append_many(session, entries)


async def append_missing(session: AsyncSession) -> int:
    """Append records stored before the tree existed (oldest first)."""
    rows = (await session.execute(
        select(ProvisionEntry.payload).outerjoin(LogLeaf, LogLeaf.record_id == ProvisionEntry.record_id)
        .where(LogLeaf.leaf_index.is_(None)).order_by(ProvisionEntry.provided_at, ProvisionEntry.received_at)
    )).scalars().all()
    for payload in rows:
        await append_provision(session, ProvisionRecord.model_validate_json(payload))
    return len(rows)


# --- checkpoints ----------------------------------------------------------------------


async def sign_checkpoint(session: AsyncSession, *, key: Ed25519PrivateKey, origin: str, now: datetime) -> SignedCheckpoint | None:
    """Sign the current tree unless the newest checkpoint already covers it."""
    size = await tree_size(session)
    latest = await session.scalar(select(func.max(SignedCheckpoint.tree_size)))
    if latest is not None and latest >= size:
        return None
    root = await compute(session, lambda get: merkle.root(size, get))
    note = cp.sign(cp.Checkpoint(origin=origin, size=size, root=root, signed_at=now), key)
    row = SignedCheckpoint(tree_size=size, root_hash=root, signed_at=now, note=note)
    session.add(row)
    return row


async def latest_checkpoint(session: AsyncSession) -> SignedCheckpoint | None:
    return await session.scalar(select(SignedCheckpoint).order_by(SignedCheckpoint.tree_size.desc()).limit(1))


async def checkpoint_of_size(session: AsyncSession, size: int) -> SignedCheckpoint | None:
    return await session.get(SignedCheckpoint, size)


async def consistency(session: AsyncSession, first: int, second: int) -> ConsistencyProof:
    size = await tree_size(session)
    if not 0 <= first <= second <= size:
        raise NotFound(f"sizes must satisfy 0 ≤ first ≤ second ≤ {size}")
    path = await compute(session, lambda get: merkle.consistency_proof(first, second, get))
    return ConsistencyProof(first_size=first, second_size=second, path=[domain.b64(h) for h in path])


async def leaves(session: AsyncSession, start: int, limit: int) -> LogLeaves:
    size = await tree_size(session)
    rows = (await session.execute(
        select(LogLeaf.leaf_index, LogLeaf.leaf_hash, LogLeaf.entry).where(LogLeaf.leaf_index >= start, LogLeaf.leaf_index < size)
        .order_by(LogLeaf.leaf_index).limit(limit)
    )).all()
    return LogLeaves(start=start, tree_size=size, leaves=[LogLeafView(leaf_index=i, leaf_hash=domain.b64(bytes(h)), entry=e) for i, h, e in rows])


# --- the resident's view ----------------------------------------------------------------


async def _incidents_for(session: AsyncSession, record_ids: list[str]) -> dict[str, list[IncidentView]]:
    out: dict[str, list[IncidentView]] = {r: [] for r in record_ids}
    if not record_ids:
        return out
    rows = (await session.execute(
        select(IncidentRecord.record_id, Incident).join(Incident, Incident.incident_id == IncidentRecord.incident_id)
        .where(IncidentRecord.record_id.in_(record_ids)).order_by(Incident.reported_at)
    )).all()
    for record_id, inc in rows:
        out[record_id].append(IncidentView(incident_id=inc.incident_id, reported_at=inc.reported_at, reporter=inc.reporter, kind=IncidentKind(inc.kind), explanation=inc.explanation))
    return out


async def resident_provisions(session: AsyncSession, resident_code: str, *, limit: int) -> list[ResidentProvision]:
    rows = (await session.execute(
        select(ProvisionEntry.record_id, ProvisionEntry.payload, LogLeaf.leaf_index)
        .outerjoin(LogLeaf, LogLeaf.record_id == ProvisionEntry.record_id)
        .where(ProvisionEntry.resident_code == resident_code)
        .order_by(ProvisionEntry.provided_at.desc(), ProvisionEntry.record_id).limit(limit)
    )).all()
    incidents = await _incidents_for(session, [r for r, _, _ in rows])
    return [
        ResidentProvision(record=ProvisionRecord.model_validate_json(payload), leaf_index=leaf_index, incidents=incidents[record_id])
        for record_id, payload, leaf_index in rows
    ]


async def inclusion_bundle(session: AsyncSession, *, resident_code: str, record_id: str) -> InclusionProof:
    """The proof of one of this resident's records against the newest checkpoint that covers it."""
    row = await session.scalar(select(LogLeaf).where(LogLeaf.record_id == record_id, LogLeaf.resident_code == resident_code, LogLeaf.kind == "provision"))
    if row is None:
        raise NotFound("no such record of yours in the log")
    checkpoint = await latest_checkpoint(session)
    if checkpoint is None or checkpoint.tree_size <= row.leaf_index:
        raise NotYetCheckpointed("the record is appended but no checkpoint covers it yet")
    path = await compute(session, lambda get: merkle.inclusion_proof(row.leaf_index, checkpoint.tree_size, get))
    record = ProvisionRecord.model_validate_json(await session.scalar(select(ProvisionEntry.payload).where(ProvisionEntry.record_id == record_id)))
    return InclusionProof(
        record_id=uuid.UUID(record_id), leaf_index=row.leaf_index, tree_size=checkpoint.tree_size, entry=row.entry or "",
        resident_code=resident_code, resident_tag_salt=domain.b64(bytes(row.salt)) if row.salt else None, reason=record.reason,
        inclusion_path=[domain.b64(h) for h in path], checkpoint=checkpoint.note,
    )


# --- incidents (R-LOG-2) --------------------------------------------------------------------


async def record_incident(session: AsyncSession, *, reporter: str, kind: IncidentKind, record_ids: list[str], explanation: str, now: datetime) -> IncidentRecorded:
    rows = (await session.execute(select(ProvisionEntry.record_id, ProvisionEntry.provider, ProvisionEntry.recipient).where(ProvisionEntry.record_id.in_(record_ids)))).all()
    missing = sorted(set(record_ids) - {r for r, _, _ in rows})
    if missing:
        raise NotFound(f"no provision record {', '.join(missing)}")
    domain.check_incident_reporter(reporter, [domain.ProvisionParties(record_id=r, provider=p, recipient=a) for r, p, a in rows])
    incident_id = uuid.uuid4()
    session.add(Incident(incident_id=str(incident_id), reported_at=now, reporter=reporter, kind=kind.value, explanation=explanation))
    await session.flush()
    await session.execute(insert(IncidentRecord).values([{"incident_id": str(incident_id), "record_id": r} for r in sorted(set(record_ids))]))
    entry = domain.incident_entry(incident_id=incident_id, reported_at=now, reporter=reporter, kind=kind, record_ids=[uuid.UUID(r) for r in set(record_ids)], explanation=explanation)
    index = await append(session, record_id=str(incident_id), kind="incident", entry=entry, entry_time=now)
    return IncidentRecorded(
        incident_id=incident_id, reported_at=now, reporter=reporter, kind=kind, explanation=explanation,
        record_ids=[uuid.UUID(r) for r in sorted(set(record_ids))], leaf_index=index,
    )


# --- retention --------------------------------------------------------------------------------


async def expire(session: AsyncSession, *, now: datetime, years: int) -> int:
    """Erase what is older than the retention period; keep every hash, so proofs still verify."""
    bound = domain.expiry_candidates_before(now, years)
    candidates = (await session.execute(
        select(LogLeaf.leaf_index, LogLeaf.record_id, LogLeaf.kind, LogLeaf.entry_time).where(LogLeaf.entry_time < bound, LogLeaf.expired_at.is_(None))
    )).all()
    due = [(index, record_id, kind) for index, record_id, kind, at in candidates if domain.is_expired(at, now=now, years=years)]
    for start in range(0, len(due), 1000):
        chunk = due[start:start + 1000]
        await session.execute(update(LogLeaf).where(LogLeaf.leaf_index.in_([i for i, _, _ in chunk])).values(entry=None, salt=None, resident_code=None, expired_at=now))
        records = [r for _, r, k in chunk if k == "provision"]
        incidents = [r for _, r, k in chunk if k == "incident"]
        await session.execute(delete(ProvisionEntry).where(ProvisionEntry.record_id.in_(records)))
        await session.execute(delete(IncidentRecord).where(IncidentRecord.incident_id.in_(incidents)))
        await session.execute(delete(Incident).where(Incident.incident_id.in_(incidents)))
    return len(due)
