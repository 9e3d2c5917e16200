"""The national server (全国サーバ): single lookups per second through the agency
API next to a bare FastAPI endpoint doing the same primary-key read on the same
database (same client, same concurrency, same run); lookup latency as the
store grows; storage bytes per person, extrapolated to 125 million persons.

The store is bulk-loaded with COPY: persons from the synthetic population
generator (services/population.py) with fresh resident codes and individual
numbers, so row sizes are those of real payloads. A lookup at the national
server is the whole agency path: token check, affair authorisation, the read,
and the provision record written to the outbox in the same transaction.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from pathlib import Path

import httpx
import psycopg

from services.common.embedded import free_port
from services.network import REPO_ROOT, Network
from services.population import HISTORY_COLUMNS, IDENTITY_COLUMNS, Identifiers, copy_rows, identity_row_pool

NATIONAL = "national_server.national"
POOL = 20_000
#: Store sizes for the latency figures (JUKINET_BENCH_SIZES); the 10^7 load takes about 16 minutes and 21 GB here.
SIZES = tuple(int(s) for s in os.environ.get("JUKINET_BENCH_SIZES", "100000,1000000,10000000").split(","))
SAMPLE = 20_000
THROUGHPUT_SECONDS = float(os.environ.get("JUKINET_BENCH_SECONDS", "15"))
CONCURRENCY = 8


def load(conn: psycopg.Connection, pool: list, ids: Identifiers, count: int, *, batch: int = 50_000, label: str) -> None:
    """Append ``count`` persons to identity and identity_history."""
    import uuid

    started = time.monotonic()
    done = 0
    while done < count:
        n = min(batch, count - done)
        identity, history = [], []
        for i in range(n):
            row = pool[(done + i) % len(pool)]
            code, number = ids.resident_code(), ids.individual_number()
            event = str(uuid.UUID(int=random.getrandbits(128), version=4))
            raw = row[14].replace(row[0], code).replace(row[1], number)
            identity.append((code, number, *row[2:14], raw))
            history.append((code, 1, event, raw))
        with conn.transaction():
            copy_rows(conn, "identity", IDENTITY_COLUMNS, identity)
            copy_rows(conn, "identity_history", HISTORY_COLUMNS, history)
        done += n
        rate = done / (time.monotonic() - started)
        print(f"  {label}: {done:,}/{count:,} persons loaded ({rate:,.0f}/s)", flush=True)


def sample_codes(conn: psycopg.Connection, size: int) -> list[str]:
    """About SAMPLE resident codes drawn from pages all over the store, so lookups touch all of it, not the rows loaded first."""
    percent = min(100.0, 100.0 * 1.5 * SAMPLE / size)
    codes = [code for (code,) in conn.execute(f"select resident_code from identity tablesample system ({percent})")]
    return random.sample(codes, min(SAMPLE, len(codes)))  # not the first rows of the sample: those come in page order


async def _drive(make_request, codes: list[str], *, seconds: float, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        rng = random.Random()
        while time.monotonic() < stop:
            started = time.perf_counter()
            response = await make_request(client, rng.choice(codes))
            if response.status_code != 200:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        begun = time.monotonic()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.monotonic() - begun
    latencies.sort()
    return {
        "lookups/s": len(latencies) / elapsed,
        "p50 (ms)": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99 (ms)": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
        "lookups": len(latencies),
        "errors": errors,
    }


def _national_request(net: Network):
    auth = net.agency_auth("pension-service")  # signed anew before it ends: a run outlasts a token
    url = f"{net.url(NATIONAL)}/v1/persons/query"

    async def request(client: httpx.AsyncClient, code: str) -> httpx.Response:
        return await client.post(url, auth=auth, json={"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code, "reason": "受給資格の確認"})

    return request


def _bare_request(port: int):
    async def request(client: httpx.AsyncClient, code: str) -> httpx.Response:
        return await client.get(f"http://127.0.0.1:{port}/persons/{code}")

    return request


def _storage(conn: psycopg.Connection) -> dict:
    conn.execute("vacuum analyze identity")
    conn.execute("vacuum analyze identity_history")
    persons = conn.execute("select count(*) from identity").fetchone()[0]
    sizes = {t: conn.execute("select pg_total_relation_size(%s), pg_relation_size(%s), pg_indexes_size(%s)", (t, t, t)).fetchone() for t in ("identity", "identity_history")}
    total = sum(s[0] for s in sizes.values())
    per_person = total / persons
    return {
        "persons": persons,
        "identity, total incl. indexes and TOAST (bytes)": sizes["identity"][0],
        "identity, indexes (bytes)": sizes["identity"][2],
        "identity_history, total incl. indexes and TOAST (bytes)": sizes["identity_history"][0],
        "bytes per person (identity + identity_history + indexes)": round(per_person),
        "extrapolated to 125,000,000 persons (GB)": round(per_person * 125e6 / 1e9, 1),
    }


def main() -> dict:
    figures: dict = {"notes": []}
    with tempfile.TemporaryDirectory(prefix="jukinet-bench-") as tmp:
        root = Path(tmp)
        net = Network.on_free_ports(root)
        bare = None
        try:
            print("  starting PostgreSQL, the broker and the national server", flush=True)
            net.prepare()
            net.start_node(NATIONAL)
            cred = net.credentials["national"]
            conn = psycopg.connect(host=net.postgres.host, port=net.postgres.port, user=cred.role, password=cred.password, dbname=cred.database, autocommit=True)
            print(f"  generating a pool of {POOL:,} synthetic persons", flush=True)
            pool = identity_row_pool(size=POOL, seed=42)
            ids = Identifiers(4242)
            loaded = 0
            bare_port = free_port()
            bare = subprocess.Popen(
                [sys.executable, "-m", "bench.bare_app"], cwd=REPO_ROOT,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "BENCH_DATABASE_URL": net.database_url(NATIONAL), "BENCH_PORT": str(bare_port)},
            )
            national, baseline = _national_request(net), _bare_request(bare_port)
            for size in SIZES:
                started = time.monotonic()
                load(conn, pool, ids, size - loaded, label=f"store of {size:,}")
                load_seconds = time.monotonic() - started
                conn.execute("analyze identity")
                codes = sample_codes(conn, size)
                rate = (size - loaded) / load_seconds
                loaded = size
                section = {"bulk load (persons/s, COPY)": rate}
                if size == SIZES[0]:
                    for attempt in range(100):
                        try:
                            if httpx.get(f"http://127.0.0.1:{bare_port}/persons/{codes[0]}", timeout=2).status_code == 200:
                                break
                        except httpx.HTTPError:
                            time.sleep(0.2)
                    print(f"  throughput: {THROUGHPUT_SECONDS:.0f} s each, {CONCURRENCY} concurrent clients", flush=True)
                    asyncio.run(_drive(national, codes, seconds=2, concurrency=CONCURRENCY))  # warm-up
                    asyncio.run(_drive(baseline, codes, seconds=2, concurrency=CONCURRENCY))
                    figures[f"single lookups, {CONCURRENCY} concurrent clients, {size:,} persons"] = {
                        "national server (agency API, provision recorded)": asyncio.run(_drive(national, codes, seconds=THROUGHPUT_SECONDS, concurrency=CONCURRENCY)),
                        "bare FastAPI, same primary-key read": asyncio.run(_drive(baseline, codes, seconds=THROUGHPUT_SECONDS, concurrency=CONCURRENCY)),
                    }
                print(f"  latency at {size:,} persons", flush=True)
                section["national server, one client"] = asyncio.run(_drive(national, codes, seconds=10, concurrency=1))
                section["bare FastAPI, one client"] = asyncio.run(_drive(baseline, codes, seconds=10, concurrency=1))
                figures[f"lookup latency at {size:,} persons"] = section
            figures[f"storage at the national server ({loaded:,} persons)"] = _storage(conn)
            conn.close()
        finally:
            if bare is not None:
                bare.terminate()
                bare.wait()
            net.stop()
    figures["notes"].append(
        f"Latency was measured at {', '.join(f'{s:,}' for s in SIZES)} persons (JUKINET_BENCH_SIZES). Each lookup asks for one of about"
        f" {SAMPLE:,} codes drawn with TABLESAMPLE from pages all over the store after it grew, so the reads are spread over the whole table"
        " and its index, not over the rows loaded first."
    )
    if max(SIZES) < 10_000_000:
        figures["notes"].append("10^7 persons were not loaded in this run (JUKINET_BENCH_SIZES was lowered).")
    figures["notes"].append("Client, national server, bare endpoint and PostgreSQL share the same 2 cores, so absolute numbers are a floor; compare within the run.")
    return figures
