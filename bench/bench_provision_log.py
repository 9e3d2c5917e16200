"""The provision log: sustained append throughput with checkpoints signed
during the run, next to plain inserts of the same records into the same
database (same run, same transaction shape: one record per transaction, as the
Kafka consumer applies them); and proof generation time.

Runs on its own embedded PostgreSQL (a temporary directory), through the same
code the service runs (``services.provision_log.store``), with its migrations.
``JUKINET_BENCH_SECONDS`` (default 10) sets each throughput phase.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.dialects.postgresql import insert

from contracts.affairs import AFFAIRS
from contracts.identifiers import resident_code_check_digit
from contracts.provision import ProvisionRecord
from services.common.db import make_engine, make_sessionmaker, run_migrations
from services.common.embedded import EmbeddedPostgres, free_port
from services.provision_log import merkle, store
from services.provision_log.models import ProvisionEntry

SECONDS = float(os.environ.get("JUKINET_BENCH_SECONDS", "10"))
CHECKPOINT_SECONDS = 1.0
PROOFS = 300
SERVICE_DIR = Path(__file__).resolve().parent.parent / "services" / "provision_log"


def _code(rng: random.Random) -> str:
    first_ten = f"{rng.randrange(10**10):010d}"
    return first_ten + resident_code_check_digit(first_ten)


def _record(rng: random.Random) -> ProvisionRecord:
    affair = AFFAIRS["pension-benefits"]
    return ProvisionRecord(
        record_id=uuid.uuid4(), provided_at=datetime.now(UTC), provider="national", recipient="pension-service", recipient_name="日本年金機構",
        affair=affair.id, affair_name=affair.name, items=list(affair.items), resident_code=_code(rng),
        municipality_code="131016", reason="受給資格の確認", query_type="ByResidentCode",
    )


async def _baseline(sessions, rng: random.Random) -> dict:
    """Plain inserts of the same records into provision_records, one per transaction."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        r = _record(rng)
        async with sessions() as session, session.begin():
            await session.execute(insert(ProvisionEntry).values(
                record_id=str(r.record_id), resident_code=r.resident_code, provided_at=r.provided_at, provider=r.provider,
                recipient=r.recipient, affair=r.affair, payload=r.model_dump_json(),
            ).on_conflict_do_nothing(index_elements=["record_id"]))
        done += 1
    elapsed = time.perf_counter() - started
    return {"records": done, "seconds": round(elapsed, 1), "records/s": round(done / elapsed)}


async def _appends(sessions, rng: random.Random, key: Ed25519PrivateKey) -> dict:
    """Record + leaf + tree nodes per transaction, while a checkpoint is signed every second."""
    stop = asyncio.Event()
    checkpoints = 0

    async def checkpointer():
        nonlocal checkpoints
        while not stop.is_set():
            async with sessions() as session, session.begin():
                if await store.sign_checkpoint(session, key=key, origin="bench/provision-log", now=datetime.now(UTC).replace(microsecond=0)):
                    checkpoints += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=CHECKPOINT_SECONDS)
            except TimeoutError:
                pass

    task = asyncio.create_task(checkpointer())
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        async with sessions() as session, session.begin():
            await store.append_provision(session, _record(rng))
        done += 1
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return {"records": done, "seconds": round(elapsed, 1), "records/s": round(done / elapsed), "checkpoints signed": checkpoints}


def _ms(samples: list[float]) -> dict:
    samples = sorted(samples)
    return {"median ms": round(statistics.median(samples) * 1000, 3), "p95 ms": round(samples[int(len(samples) * 0.95) - 1] * 1000, 3)}


async def _proofs(sessions, rng: random.Random) -> dict:
    async with sessions() as session:
        size = await store.tree_size(session)
    inclusion, consistency = [], []
    for _ in range(PROOFS):
        index = rng.randrange(size)
        t = time.perf_counter()
        async with sessions() as session:
            proof = await store.compute(session, lambda get: merkle.inclusion_proof(index, size, get))
        inclusion.append(time.perf_counter() - t)
        first = rng.randrange(1, size)
        t = time.perf_counter()
        async with sessions() as session:
            await store.consistency(session, first, size)
        consistency.append(time.perf_counter() - t)
    tree = merkle.MemoryTree(merkle.leaf_hash(str(i).encode()) for i in range(size))
    memory = []
    for _ in range(PROOFS):
        t = time.perf_counter()
        tree.inclusion_proof(rng.randrange(size))
        memory.append(time.perf_counter() - t)
    return {
        "tree size": size, "proof length": len(proof),
        "inclusion proof from PostgreSQL": _ms(inclusion), "consistency proof from PostgreSQL": _ms(consistency),
        "inclusion proof in memory (baseline: no database)": _ms(memory),
    }


async def _run(url: str) -> dict:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    rng = random.Random(7)
    try:
        baseline = await _baseline(sessions, rng)
        appends = await _appends(sessions, rng, Ed25519PrivateKey.generate())
        proofs = await _proofs(sessions, rng)
    finally:
        await engine.dispose()
    return {
        "append throughput (one record per transaction)": {
            "baseline: plain insert of the record": baseline,
            "log: record + Merkle leaf + nodes, checkpoints every second": appends,
            "log / baseline": round(appends["records/s"] / baseline["records/s"], 2),
        },
        "proof generation": proofs,
        "notes": [
            f"Each throughput phase runs {SECONDS:.0f} s on the embedded PostgreSQL, one client, one record per transaction (as the consumer applies them).",
            "Appends are serial by design (the tree size row is locked), so this is the log's ceiling per process; batching records per transaction would raise it.",
        ],
    }


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-provlog-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "postgres", free_port())
        postgres.start()
        try:
            url = postgres.ensure_tenant("provlog").url(postgres.host, postgres.port)
            run_migrations(SERVICE_DIR, url)
            figures = asyncio.run(_run(url))
        finally:
            postgres.stop()
    _print(figures)
    return figures


def _print(figures: dict, indent: str = "") -> None:
    for name, value in figures.items():
        if isinstance(value, dict):
            print(f"{indent}{name}:")
            _print(value, indent + "  ")
        elif isinstance(value, list):
            for line in value:
                print(f"{indent}- {line}")
        else:
            print(f"{indent}{name}: {value}")


if __name__ == "__main__":
    main()
