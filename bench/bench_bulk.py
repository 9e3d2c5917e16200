"""Bulk provision (一括提供): a job of 1,000,000 queries against a national store
of 1,000,000 persons, in rows answered per second next to plain primary-key
reads per second on the same database; and the latency of interactive lookups
(one client, one request at a time) while idle and while the job runs.

The store is bulk-loaded with COPY from the synthetic population
(services/population.py) with fresh identifiers. Only PostgreSQL, the broker
and the national server run: the job's provision records go to the bulk
outbox and the bulk worker's relay, as in production; the provision log is
not started.

The job file: 94 % by resident code (found; the affair, pension benefits,
does not receive the individual number, so no row searches by it), 5 % by a
resident code nobody has (not_found), 0.5 % by the basic items (name and
birth date), 0.5 % invalid lines. Sizes can be lowered with
JUKINET_BENCH_BULK_PERSONS and JUKINET_BENCH_BULK_ROWS.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import threading
import time

from pathlib import Path

import httpx
import psycopg

from services.network import Network
from services.population import IDENTITY_COLUMNS, Identifiers, copy_rows, identity_row_pool

NATIONAL = "national_server.national"
PERSONS = int(os.environ.get("JUKINET_BENCH_BULK_PERSONS", "1000000"))
ROWS = int(os.environ.get("JUKINET_BENCH_BULK_ROWS", "1000000"))
POOL = 20_000
IDLE_SECONDS = 20.0
JOB_TIMEOUT_SECONDS = 3600.0


def load_persons(conn: psycopg.Connection, count: int, *, batch: int = 50_000) -> tuple[list[str], list[str], list[tuple[str, str | None, object]], float]:
    """COPY ``count`` persons into identity; (codes, individual numbers, (family, given, birth) samples, persons/s)."""
    pool = identity_row_pool(size=POOL, seed=7)
    ids = Identifiers(77)
    codes: list[str] = []
    numbers: list[str] = []
    basics: list[tuple] = []
    started = time.monotonic()
    while len(codes) < count:
        rows = []
        for i in range(min(batch, count - len(codes))):
            template = pool[(len(codes) + i) % len(pool)]
            code, number = ids.resident_code(), ids.individual_number()
            rows.append((code, number, *template[2:14], template[14].replace(template[0], code).replace(template[1], number)))
        with conn.transaction():
            copy_rows(conn, "identity", IDENTITY_COLUMNS, rows)
        codes += [r[0] for r in rows]
        numbers += [r[1] for r in rows[:: 50]]
        basics += [(r[5], r[6], r[9]) for r in rows[:: 500]]
        print(f"  {len(codes):,}/{count:,} persons loaded", flush=True)
    rate = count / (time.monotonic() - started)
    conn.execute("vacuum analyze identity")
    return codes, numbers, basics, rate


def primary_key_reads(conn: psycopg.Connection, codes: list[str], *, seconds: float = 15.0) -> dict:
    """The baseline: the same primary-key reads the worker makes, without anything around them."""
    rng = random.Random(1)
    figures = {}
    done, started = 0, time.monotonic()
    with conn.cursor() as cur:
        while time.monotonic() - started < seconds:
            batch = rng.sample(codes, 100)
            cur.execute("select resident_code, individual_number, municipality_code, payload from identity where resident_code = any(%s)", (batch,))
            done += len(cur.fetchall())
    figures["batched, 100 codes per `= any(...)` statement (rows/s)"] = done / (time.monotonic() - started)
    done, started = 0, time.monotonic()
    with conn.cursor() as cur:
        while time.monotonic() - started < seconds / 3:
            cur.execute("select resident_code, individual_number, municipality_code, payload from identity where resident_code = %s", (rng.choice(codes),), prepare=True)
            done += len(cur.fetchall())
    figures["one row per statement, prepared (rows/s)"] = done / (time.monotonic() - started)
    return figures


def job_lines(codes: list[str], numbers: list[str], basics: list[tuple], rows: int) -> list[bytes]:
    ids = Identifiers(999)
    known = set(codes)
    rng = random.Random(2)
    lines = []
    for _ in range(rows):
        pick = rng.random()
        if pick < 0.94:  # the affair (pension benefits) does not receive the individual number, so it does not search by it
            row = {"type": "ByResidentCode", "resident_code": rng.choice(codes)}
        elif pick < 0.99:
            code = ids.resident_code()
            while code in known:
                code = ids.resident_code()
            row = {"type": "ByResidentCode", "resident_code": code}
        elif pick < 0.995:
            family, given, born = rng.choice(basics)
            row = {"type": "ByBasicItems", "family_name": family, "given_name": given, "birth_date": born.isoformat()}
        else:
            lines.append(b'{"type": "ByResidentCode", "resident_code": "0000000000"}')
            continue
        lines.append(json.dumps(row, ensure_ascii=False).encode())
    return lines


class Prober:
    """One client issuing interactive lookups back to back, recording each latency."""

    def __init__(self, net: Network, codes: list[str]):
        self._url = f"{net.url(NATIONAL)}/v1/persons/query"
        self._net = net
        self._codes = codes
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self.errors = 0
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        rng = random.Random(3)
        auth = self._net.agency_auth("pension-service")
        with httpx.Client(timeout=30.0, auth=auth) as client:
            while not self._stop.is_set():
                body = {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": rng.choice(self._codes), "reason": "受給資格の確認"}
                started = time.perf_counter()
                response = client.post(self._url, json=body)
                elapsed = time.perf_counter() - started
                if response.status_code == 200:
                    self.latencies.append(elapsed)
                else:
                    self.errors += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        return summary(self.latencies, self.errors)


def summary(latencies: list[float], errors: int) -> dict:
    ordered = sorted(latencies)
    pick = lambda q: 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")  # noqa: E731
    return {
        "lookups": len(ordered),
        "p50 (ms)": 1000 * statistics.median(ordered) if ordered else float("nan"),
        "p99 (ms)": pick(0.99),
        "max (ms)": 1000 * ordered[-1] if ordered else float("nan"),
        "errors": errors,
    }


def main() -> dict:
    figures: dict = {"notes": []}
    with tempfile.TemporaryDirectory(prefix="jukinet-bench-bulk-") as tmp:
        root = Path(tmp)
        net = Network.on_free_ports(root)
        try:
            print("  starting PostgreSQL, the broker and the national server", flush=True)
            net.prepare()
            net.start_node(NATIONAL)
            cred = net.credentials["national"]
            conn = psycopg.connect(host=net.postgres.host, port=net.postgres.port, user=cred.role, password=cred.password, dbname=cred.database, autocommit=True)
            codes, numbers, basics, load_rate = load_persons(conn, PERSONS)
            figures["persons in the national store"] = len(codes)
            figures["bulk load of the store (persons/s, COPY)"] = load_rate

            print("  baseline: primary-key reads", flush=True)
            figures["baseline: primary-key reads on the same database"] = primary_key_reads(conn, codes)

            print(f"  interactive lookups, idle, {IDLE_SECONDS:.0f} s", flush=True)
            warm = Prober(net, codes)
            warm.start()
            time.sleep(3)
            warm.stop()
            idle = Prober(net, codes)
            idle.start()
            time.sleep(IDLE_SECONDS)
            figures["interactive lookups, one client, idle"] = idle.stop()

            print(f"  building a job of {ROWS:,} rows", flush=True)
            lines = job_lines(codes, numbers, basics, ROWS)
            body_bytes = sum(len(line) + 1 for line in lines)
            auth = net.agency_auth("pension-service")  # signed anew before it ends: the job outlasts a token

            def body():
                for start in range(0, len(lines), 10_000):
                    yield b"\n".join(lines[start:start + 10_000]) + b"\n"

            during = Prober(net, codes)
            during.start()
            started = time.monotonic()
            submitted = httpx.post(
                f"{net.url(NATIONAL)}/v1/bulk-jobs", params={"affair": "pension-benefits", "reason": "年次の受給資格確認"}, content=body(),
                headers={"content-type": "application/x-ndjson"}, auth=auth, timeout=600,
            )
            if submitted.status_code != 202:
                raise RuntimeError(f"the job was refused: {submitted.status_code} {submitted.text[:500]}")
            uploaded = time.monotonic()
            job_id = submitted.json()["job_id"]
            print(f"  job {job_id} uploaded in {uploaded - started:.1f} s; answering", flush=True)
            job = submitted.json()
            last_print = 0.0
            while job["status"] not in ("completed", "failed"):
                if time.monotonic() - started > JOB_TIMEOUT_SECONDS:
                    raise RuntimeError(f"the job did not finish within {JOB_TIMEOUT_SECONDS:.0f} s: {job}")
                time.sleep(0.5)
                job = httpx.get(f"{net.url(NATIONAL)}/v1/bulk-jobs/{job_id}", auth=auth, timeout=30).json()
                if time.monotonic() - last_print > 15:
                    last_print = time.monotonic()
                    print(f"  {job['done_rows']:,}/{job['total_rows']:,} rows", flush=True)
            answered = time.monotonic()
            during_figures = during.stop()
            if job["status"] != "completed":
                raise RuntimeError(f"the job failed: {job}")
            fetched_at = time.monotonic()
            with httpx.stream("GET", f"{net.url(NATIONAL)}/v1/bulk-jobs/{job_id}/result", auth=auth, timeout=600) as response:
                result_rows = sum(chunk.count(b"\n") for chunk in response.iter_bytes())
            download = time.monotonic() - fetched_at
            backlog = conn.execute("select count(*) from bulk_outbox where sent_at is null").fetchone()[0]
            statuses = dict(conn.execute("select status, count(*) from bulk_rows where job_id = %s group by status", (job_id,)).fetchall())
            figures[f"bulk job of {ROWS:,} rows"] = {
                "upload (s)": uploaded - started,
                "upload (MB)": body_bytes / 1e6,
                "answering (s)": answered - uploaded,
                "rows answered per second": ROWS / (answered - uploaded),
                "found rows": job["found_rows"],
                "rows by status": ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items())),
                "result download (rows/s)": result_rows / download,
                "provision records still in the outbox when the job completed": backlog,
            }
            figures["interactive lookups, one client, during the bulk job"] = during_figures
            conn.close()
            if ROWS < 1_000_000:
                figures[f"bulk job of {ROWS:,} rows"]["EXTRAPOLATED: 1,000,000 rows at this rate (s)"] = 1_000_000 / figures[f"bulk job of {ROWS:,} rows"]["rows answered per second"]
            if PERSONS < 1_000_000 or ROWS < 1_000_000:
                figures["notes"].append(f"reduced run: {PERSONS:,} persons, {ROWS:,} rows (JUKINET_BENCH_BULK_PERSONS / _ROWS); the 1,000,000-row time is extrapolated, not measured")
            figures["notes"].append("the worker is a separate process at nice 10 (docs/bulk.md), and so is the relay of its provision records: on a busy machine they yield the CPU to interactive lookups, so their rate depends on what else runs")
            figures["notes"].append(
                "rows answered per second counts from the end of the upload to the job's completion; each row is validated, looked up "
                "(one `= any(...)` statement per 100 rows), projected to the affair's items, written back, and every person found gets a "
                "provision record in the bulk outbox (delivered by the worker process's own relay), in transactions of 500 rows"
            )
            figures["notes"].append("the primary-key baseline reads the same columns with psycopg directly: no validation, no projection, no writes")
        finally:
            net.stop()
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), ensure_ascii=False, indent=2, default=str))
