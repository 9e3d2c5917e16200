"""The synthetic population (issue 8): how fast the generator fills the whole
sample network with 1,000,000 persons, and what the population it made looks like.

The generator is ``services.population`` with seed 1, the same code behind
``services.cli seed N --bulk``: households through the register's domain and
mapping code, written with COPY to every tier (register, CS, prefecture and
national server). Baseline, same run: generating the first 100,000 of the same
persons in memory only (no database), which shows how much of the time is the
generator itself and how much is writing. The composition is read back from
the registers' databases afterwards. JUKINET_BENCH_POPULATION sets the size.
"""

from __future__ import annotations

import collections
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from services.common.topology import Node
from services.network import Network
from services.population import Identifiers, PopulationSpec, bulk_load, households, materialise, tier_rows

PERSONS = int(os.environ.get("JUKINET_BENCH_POPULATION", "1000000"))
BASELINE_PERSONS = min(100_000, PERSONS)
SEED = 1


def _generate_only(spec: PopulationSpec, persons: int) -> float:
    """Persons per second through the generator and the domain code, nothing written."""
    ids = Identifiers(spec.seed)
    recorded_at = datetime(2026, 1, 1, tzinfo=UTC)
    started = time.monotonic()
    made = 0
    for household in households(spec, persons):
        _, _, _, changes = materialise(spec, household, ids, recorded_at)
        tier_rows(changes)
        made += len(household.members)
    return made / (time.monotonic() - started)


def _not_in_jis_x_0208(text: str) -> bool:
    """A name the old Juki-net character set (JIS X 0208) cannot carry."""
    try:
        text.encode("iso2022_jp")
        return False
    except UnicodeEncodeError:
        return True


def _composition(conns: list[psycopg.Connection]) -> dict:
    sizes: collections.Counter[int] = collections.Counter()
    persons = foreign = beyond = special = aliases = 0
    for conn in conns:
        for (size,) in conn.execute("select count(*) from residents group by household_id"):
            sizes[size] += 1
        for family, given, nationality, special_permanent, alias in conn.execute(
            "select family_name, given_name, nationality, special_permanent_resident, alias from residents"
        ):
            persons += 1
            foreign += nationality is not None
            special += bool(special_permanent)
            aliases += alias is not None
            beyond += _not_in_jis_x_0208(family + (given or ""))
    households_total = sum(sizes.values())
    figures = {
        "persons": persons,
        "households": households_total,
        "mean household size": round(persons / households_total, 2),
        "foreign residents (%)": round(100 * foreign / persons, 2),
        "special permanent residents (%)": round(100 * special / persons, 2),
        "with an alias (通称) (%)": round(100 * aliases / persons, 2),
        "names outside JIS X 0208 (%)": round(100 * beyond / persons, 2),
    }
    shown = sorted(sizes)[:6]
    figures["households by size (%)"] = {f"{s} person{'s' if s > 1 else ''}": round(100 * sizes[s] / households_total, 1) for s in shown}
    rest = households_total - sum(sizes[s] for s in shown)
    if rest:
        figures["households by size (%)"][f"more than {shown[-1]}"] = round(100 * rest / households_total, 1)
    return figures


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="jukinet-bench-") as tmp:
        net = Network.on_free_ports(Path(tmp))
        try:
            print("  starting PostgreSQL and the register, CS, prefecture and national nodes (each migrates its database)", flush=True)
            net.extra_env.update({"JUKINET_SNAPSHOT_SECONDS": "0", "JUKINET_RECONCILE_SECONDS": "0"})  # no snapshot or reconciliation during the load
            net.prepare()
            for node_id, running in net.nodes.items():
                if running.node.kind in ("national_server", "prefecture_server", "cs_gateway", "municipal_rrs"):
                    net.start_node(node_id)
            spec = PopulationSpec(seed=SEED, municipalities=tuple(m.code for m in net.topology.municipalities))

            def connect(database: str) -> psycopg.Connection:
                cred = net.credentials[database]
                return psycopg.connect(host=net.postgres.host, port=net.postgres.port, user=cred.role, password=cred.password, dbname=cred.database)

            print(f"  baseline: generating {BASELINE_PERSONS:,} persons in memory", flush=True)
            generated_per_second = _generate_only(spec, BASELINE_PERSONS)
            print(f"  writing {PERSONS:,} persons to every tier", flush=True)
            written = 0
            started = time.monotonic()

            def progress(n: int) -> None:
                nonlocal written
                written += n
                if written % 100_000 < n:
                    print(f"  {written:,}/{PERSONS:,} ({written / (time.monotonic() - started):,.0f}/s)", flush=True)

            bulk_load(connect, net.topology, spec, PERSONS, on_progress=progress)
            seconds = time.monotonic() - started
            registers = [connect(Node(kind="municipal_rrs", tenant=m.code).database) for m in net.topology.municipalities]
            try:
                composition = _composition(registers)
            finally:
                for conn in registers:
                    conn.close()
        finally:
            net.stop()
    return {
        f"{PERSONS:,} persons written to every tier": {
            "seconds": round(seconds, 1),
            "persons/s": round(PERSONS / seconds),
        },
        f"baseline: the generator alone, first {BASELINE_PERSONS:,} persons, nothing written": {
            "persons/s": round(generated_per_second),
        },
        "the population written": composition,
        "notes": [
            f"Sample topology ({', '.join(m.name for m in net.topology.municipalities)}), seed {SEED}: the same seed gives the same persons.",
            "Each person is written to the register (resident, history, household) and to the identity and history tables of the CS, the prefecture server and the national server, one transaction per database per 5,000 persons.",
            "Names outside JIS X 0208: family and given name together cannot be encoded in ISO-2022-JP (MJ characters, supplementary-plane ideographs, IVS).",
        ],
    }
