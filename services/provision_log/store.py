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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import DateTime, String, any_, bindparam, delete, func, insert, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.provision import ProvisionRecord
from contracts.transparency import (
    ConsistencyProof, IncidentKind, IncidentLogEntry, IncidentProof, IncidentRecorded, InclusionPaths, InclusionProof,
    LogLeaf as LogLeafView, LogLeaves, ResidentProvision,
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


class TreeDamaged(Exception):
    """The stored tree no longer extends the newest signed checkpoint: signing it would launder the damage."""


async def sign_checkpoint(session: AsyncSession, *, key: Ed25519PrivateKey, origin: str, now: datetime) -> SignedCheckpoint | None:
    """Sign the current tree unless the newest checkpoint already covers it.

    Refuses (:class:`TreeDamaged`) when the stored tree does not extend the newest checkpoint whose
    signature is good: nodes altered under signed leaves are never signed over."""
    size = await tree_size(session)
    previous = await latest_checkpoint(session)
    if previous is not None and previous.tree_size >= size:
        return None
    root = await compute(session, lambda get: merkle.root(size, get))
    if previous is not None:
        try:
            old = cp.verify(previous.note, key.public_key(), origin=origin)
        except cp.CheckpointInvalid:
            old = None  # not ours: nothing to extend (the page and the audit report the bad checkpoint)
        if old is not None:
            proof = await compute(session, lambda get: merkle.consistency_proof(old.size, size, get))
            if not merkle.verify_consistency(old.size, size, old.root, root, proof):
                raise TreeDamaged(f"the stored tree of size {size} does not extend the signed checkpoint of size {old.size}")
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
    """Leaves in order, each with the digest of the entry its stored rows make now (``stored_sha256``)."""
    size = await tree_size(session)
    rows = (await session.execute(
        select(LogLeaf.leaf_index, LogLeaf.leaf_hash, LogLeaf.entry, LogLeaf.kind, LogLeaf.record_id, LogLeaf.salt, LogLeaf.resident_code)
        .where(LogLeaf.leaf_index >= start, LogLeaf.leaf_index < size).order_by(LogLeaf.leaf_index).limit(limit)
    )).all()
    record_ids = [r for _, _, e, k, r, _, _ in rows if e is not None and k == "provision"]
    incident_ids = [r for _, _, e, k, r, _, _ in rows if e is not None and k == "incident"]
    payloads = dict((await session.execute(select(ProvisionEntry.record_id, ProvisionEntry.payload).where(ProvisionEntry.record_id.in_(record_ids)))).all()) if record_ids else {}
    incidents = await _stored_incidents(session, incident_ids)
    named: dict[str, list[str]] = {i: [] for i in incident_ids}
    if incident_ids:
        for incident_id, record_id in (await session.execute(select(IncidentRecord.incident_id, IncidentRecord.record_id).where(IncidentRecord.incident_id.in_(incident_ids)))).all():
            named[incident_id].append(record_id)
    out = []
    for index, leaf_hash, entry, kind, record_id, salt, code in rows:
        stored = None
        if entry is not None and kind == "provision":
            stored = domain.stored_provision_sha256(entry, payloads.get(record_id), bytes(salt) if salt else None, code)
        elif entry is not None and kind == "incident":
            stored = domain.stored_incident_sha256(incidents.get(record_id), record_id, [uuid.UUID(r) for r in named.get(record_id, [])])
        out.append(LogLeafView(leaf_index=index, leaf_hash=domain.b64(bytes(leaf_hash)), entry=entry, stored_sha256=stored))
    unlogged = None
    if start == 0:
        unlogged = int(await session.scalar(
            select(func.count()).select_from(ProvisionEntry).where(~select(LogLeaf.leaf_index).where(LogLeaf.record_id == ProvisionEntry.record_id).exists())
        ) or 0)
    return LogLeaves(start=start, tree_size=size, leaves=out, records_without_leaf=unlogged)


async def inclusion_paths(session: AsyncSession, indexes, size: int) -> dict[int, list[bytes] | None]:
    """The inclusion proof of each leaf index at ``size``, from the stored nodes (one query); None where a node is missing."""
    computations = {i: (lambda get, i=i: merkle.inclusion_proof(i, size, get)) for i in indexes if 0 <= i < size}
    coords: set[merkle.Coord] = set()
    for fn in computations.values():
        coords |= merkle.needed(fn)
    get = merkle.getter(await read_nodes(session, coords))
    out: dict[int, list[bytes] | None] = {}
    for i, fn in computations.items():
        try:
            out[i] = fn(get)
        except LookupError:
            out[i] = None
    return out


async def range_inclusion_paths(session: AsyncSession, size: int, start: int, limit: int) -> InclusionPaths:
    """Every leaf's inclusion proof in ``[start, start+limit)`` at ``size``, as the stored tree gives them."""
    if not 0 <= size <= await tree_size(session):
        raise NotFound(f"no tree of size {size}")
    indexes = range(start, min(start + limit, size))
    paths = await inclusion_paths(session, indexes, size)
    if any(paths[i] is None for i in indexes):
        missing = next(i for i in indexes if paths[i] is None)
        raise NotFound(f"the stored tree cannot prove leaf {missing}: a node is missing")
    return InclusionPaths(tree_size=size, start=start, paths=[[domain.b64(h) for h in paths[i]] for i in indexes])


# --- the resident's view ----------------------------------------------------------------
#
# The resident's leaves are found in ``log_leaves`` by its resident index (``resident_code``, kept
# beside each leaf), never through ``provision_records``: a record whose row is gone is still
# listed, as missing. Each leaf found is checked against what it commits to (its tag is
# SHA-256(salt ‖ the resident's code)), proved under the newest signed checkpoint, and only then is
# the stored record compared with it. Incidents are found the same way, from the incident leaves
# that name the resident's records, never through ``incident_records``.


async def _stored_incidents(session: AsyncSession, incident_ids: list[str]) -> dict[str, domain.StoredIncident]:
    if not incident_ids:
        return {}
    rows = (await session.execute(select(Incident).where(Incident.incident_id.in_(incident_ids)))).scalars().all()
    return {i.incident_id: domain.StoredIncident(reported_at=i.reported_at, reporter=i.reporter, kind=i.kind, explanation=i.explanation) for i in rows}


def _stored_leaf(row: LogLeaf) -> domain.StoredLeaf:
    return domain.StoredLeaf(leaf_index=row.leaf_index, record_id=row.record_id, entry=row.entry, salt=bytes(row.salt) if row.salt else None, appended_at=row.appended_at)


async def _incident_leaves_naming(session: AsyncSession, record_ids: set[str]) -> list[tuple[domain.StoredLeaf, IncidentLogEntry]]:
    """The incident leaves that name any of these records, oldest first (found in the leaves, by their entries)."""
    if not record_ids:
        return []
    rows = (await session.execute(
        select(LogLeaf).where(LogLeaf.kind == "incident", LogLeaf.entry.is_not(None)).order_by(LogLeaf.leaf_index)
    )).scalars().all()
    out = []
    for row in rows:
        entry = domain.parse_incident_entry(row.entry)
        if entry is not None and record_ids & {str(r) for r in entry.record_ids}:
            out.append((_stored_leaf(row), entry))
    return out


async def signed_tree(session: AsyncSession, *, key: Ed25519PublicKey | None, origin: str) -> domain.SignedTree:
    """The newest checkpoint with its signature checked against the log's own public key."""
    row = await latest_checkpoint(session)
    if row is None:
        return domain.SignedTree(None)
    if key is None:
        return domain.SignedTree(None, "the log's public key is not available")
    try:
        checkpoint = cp.verify(row.note, key, origin=origin)
    except cp.CheckpointInvalid as exc:
        return domain.SignedTree(None, f"the newest checkpoint does not verify ({exc})")
    if checkpoint.size != row.tree_size:
        return domain.SignedTree(None, f"the newest checkpoint is stored as size {row.tree_size} but signs size {checkpoint.size}")
    return domain.SignedTree(checkpoint)


async def resident_view(session: AsyncSession, resident_code: str, *, key: Ed25519PublicKey | None, origin: str, limit: int, now: datetime) -> list[ResidentProvision]:
    """The resident's leaves, newest first, each judged by :func:`domain.judge_provision`."""
    rows = (await session.execute(
        select(LogLeaf).where(LogLeaf.resident_code == resident_code, LogLeaf.kind == "provision")
        .order_by(LogLeaf.entry_time.desc(), LogLeaf.leaf_index.desc()).limit(limit)
    )).scalars().all()
    leaves = [_stored_leaf(r) for r in rows]
    tree = await signed_tree(session, key=key, origin=origin)
    record_ids = {leaf.record_id for leaf in leaves}
    incident_leaves = await _incident_leaves_naming(session, record_ids)
    paths: dict[int, list[bytes] | None] = {}
    if tree.checkpoint is not None:
        paths = await inclusion_paths(session, [leaf.leaf_index for leaf in leaves] + [leaf.leaf_index for leaf, _ in incident_leaves], tree.checkpoint.size)
    payloads = dict((await session.execute(select(ProvisionEntry.record_id, ProvisionEntry.payload).where(ProvisionEntry.record_id.in_(record_ids)))).all()) if record_ids else {}
    stored_incidents = await _stored_incidents(session, [leaf.record_id for leaf, _ in incident_leaves])
    incidents_of: dict[str, list] = {r: [] for r in record_ids}
    for leaf, entry in incident_leaves:
        judged = domain.judge_incident(leaf, entry, stored_incidents.get(leaf.record_id), tree, paths.get(leaf.leaf_index), now)
        for r in {str(x) for x in entry.record_ids} & record_ids:
            incidents_of[r].append(judged)
    return [
        domain.judge_provision(leaf, resident_code, payloads.get(leaf.record_id), tree, paths.get(leaf.leaf_index), now, incidents_of[leaf.record_id])
        for leaf in leaves
    ]


async def inclusion_bundle(session: AsyncSession, *, resident_code: str, record_id: str) -> InclusionProof:
    """The proof of one of this resident's records (and of the incident leaves naming it) against the
    newest checkpoint that covers it, with the stored record and explanations as they are now."""
    row = await session.scalar(select(LogLeaf).where(LogLeaf.record_id == record_id, LogLeaf.resident_code == resident_code, LogLeaf.kind == "provision"))
    if row is None:
        raise NotFound("no such record of yours in the log")
    checkpoint = await latest_checkpoint(session)
    if checkpoint is None or checkpoint.tree_size <= row.leaf_index:
        raise NotYetCheckpointed("the record is appended but no checkpoint covers it yet")
    incident_leaves = [(leaf, entry) for leaf, entry in await _incident_leaves_naming(session, {record_id}) if leaf.leaf_index < checkpoint.tree_size]
    paths = await inclusion_paths(session, [row.leaf_index] + [leaf.leaf_index for leaf, _ in incident_leaves], checkpoint.tree_size)
    payload = await session.scalar(select(ProvisionEntry.payload).where(ProvisionEntry.record_id == record_id))
    try:
        record = ProvisionRecord.model_validate_json(payload) if payload is not None else None
    except ValueError:
        record = None
    explanations = await _stored_incidents(session, [leaf.record_id for leaf, _ in incident_leaves])
    return InclusionProof(
        record_id=uuid.UUID(record_id), leaf_index=row.leaf_index, tree_size=checkpoint.tree_size, entry=row.entry or "",
        resident_code=resident_code, resident_tag_salt=domain.b64(bytes(row.salt)) if row.salt else None, reason=record.reason if record else None,
        inclusion_path=[domain.b64(h) for h in paths.get(row.leaf_index) or []], checkpoint=checkpoint.note, record=record,
        incidents=[
            IncidentProof(
                incident_id=entry.incident_id, leaf_index=leaf.leaf_index, entry=leaf.entry or "",
                inclusion_path=[domain.b64(h) for h in paths.get(leaf.leaf_index) or []],
                explanation=explanations[leaf.record_id].explanation if leaf.record_id in explanations else None,
            )
            for leaf, entry in incident_leaves
        ],
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
    """Erase what is older than the retention period; keep every hash, so proofs still verify.

    Each erasure appends an erasure leaf naming the leaves it erased: an auditor accepts an
    entry-less leaf only when such a marker names it. Erasure leaves themselves are never erased."""
    bound = domain.expiry_candidates_before(now, years)
    candidates = (await session.execute(
        select(LogLeaf.leaf_index, LogLeaf.record_id, LogLeaf.kind, LogLeaf.entry_time)
        .where(LogLeaf.entry_time < bound, LogLeaf.expired_at.is_(None), LogLeaf.kind != "erasure")
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
    if due:
        await append_erasure(session, [i for i, _, _ in due], now=now, years=years)
    return len(due)


async def append_erasure(session: AsyncSession, indexes: list[int], *, now: datetime, years: int) -> int:
    entry = domain.erasure_entry(erased_at=now, retention_years=years, leaf_indexes=indexes)
    return await append(session, record_id=str(uuid.uuid4()), kind="erasure", entry=entry, entry_time=now)


async def mark_earlier_erasures(session: AsyncSession, *, now: datetime, years: int) -> int:
    """Append one erasure leaf for leaves erased before erasures were marked in the log (once, at start)."""
    erased = set((await session.execute(select(LogLeaf.leaf_index).where(LogLeaf.entry.is_(None)))).scalars().all())
    if not erased:
        return 0
    for (text_,) in (await session.execute(select(LogLeaf.entry).where(LogLeaf.kind == "erasure", LogLeaf.entry.is_not(None)))).all():
        marker = domain.parse_erasure_entry(text_)
        for a, b in marker.leaf_ranges if marker else ():
            erased -= set(range(a, b))
    if erased:
        await append_erasure(session, sorted(erased), now=now, years=years)
    return len(erased)
