"""With and without the prefecture tier (R-NET-4), measured in the same run.

Two private networks, one per topology (deploy/topology.yaml and
deploy/topology-without-prefectures.yaml), run side by side on the same
machine with the same bulk-loaded population (same seed, so the same persons).
Measurement rounds alternate between them (A B, B A, ...) so that load from
anything else on the machine falls on both alike. Figures:

- cost: service processes, databases, resident memory of the service
  processes, and database size after the load;
- propagation: a 転居 committed at the register → applied at each tier; the
  start is the change's ``recorded_at`` (set by the RRS inside its
  transaction), the end each tier's ``identity_history.received_at``
  (PostgreSQL ``now()``, the start of the applying transaction), same clock;
- copies: how many stores hold each person's current 本人確認情報 besides
  the register itself;
- lookups for a prefectural affair (東京都's driver-licence office, by resident
  code) at whichever node serves it: the prefecture server, or the national
  server without that tier; as a control, a national affair at the national
  server of each network; and whether prefectural lookups are answered while
  the national server is stopped.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import psutil
import psycopg

from contracts.affairs import AFFAIRS, Criterion, criteria_allowed
from contracts.identity import IdentityChange
from services.common.gazetteer import neighborhoods
from services.network import REPO_ROOT, Network
from services.population import PopulationSpec, bulk_load

TOPOLOGIES = {
    "with prefecture tier": REPO_ROOT / "deploy" / "topology.yaml",
    "without prefecture tier": REPO_ROOT / "deploy" / "topology-without-prefectures.yaml",
}
PERSONS = int(os.environ.get("BENCH_TOPOLOGIES_PERSONS", "30000"))
RATE = float(os.environ.get("BENCH_TOPOLOGIES_RATE", "10"))  # 転居 per second during a propagation round
ROUND_SECONDS = int(os.environ.get("BENCH_TOPOLOGIES_ROUND_SECONDS", "20"))
ROUNDS = int(os.environ.get("BENCH_TOPOLOGIES_ROUNDS", "4"))
LOOKUP_SECONDS = int(os.environ.get("BENCH_TOPOLOGIES_LOOKUP_SECONDS", "8"))
CONCURRENCY = 4
MUNICIPALITIES = ("131016", "131130", "272035")
TOKYO = ("131016", "131130")
PREF_AGENCY, PREF_AFFAIR = "tokyo-police-license", "pref-driver-license"
NATIONAL_AGENCY, NATIONAL_AFFAIR = "pension-service", "pension-benefits"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _summary(ms: list[float]) -> dict:
    if not ms:
        return {"samples": 0}
    return {"samples": len(ms), "median ms": round(statistics.median(ms), 1), "p90 ms": round(_percentile(ms, 0.9), 1), "p99 ms": round(_percentile(ms, 0.99), 1), "max ms": round(max(ms), 1)}


def _connect(net: Network, database: str) -> psycopg.Connection:
    cred = net.credentials[database]
    return psycopg.connect(host=net.postgres.host, port=net.postgres.port, user=cred.role, password=cred.password, dbname=cred.database, autocommit=True)


def _identity_databases(net: Network) -> list[str]:
    """Every store of 本人確認情報 above the register: the CSs, prefecture servers (if any), the national server."""
    return [r.node.database for r in net.nodes.values() if r.node.kind in ("cs_gateway", "prefecture_server", "national_server")]


# --- cost ----------------------------------------------------------------------------------------

def _cost(net: Network) -> dict:
    rss = 0
    for running in net.nodes.values():
        process = psutil.Process(running.process.pid)
        rss += sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    with net.postgres.admin_connect() as admin:
        sizes = dict(admin.execute("select datname, pg_database_size(datname) from pg_database where datname = any(%s)", (list(net.credentials),)).fetchall())
    identity_dbs = _identity_databases(net)
    return {
        "service processes": len(net.nodes),
        "processes in all (services + PostgreSQL server + broker)": len(net.nodes) + 2,
        "databases (one per tenant)": len(net.credentials),
        "of them holding 本人確認情報 above the registers": len(identity_dbs),
        "resident memory of the service processes (MB)": round(rss / 2**20),
        "database size, all tenants (MB)": round(sum(sizes.values()) / 2**20),
        "database size, stores above the registers (MB)": round(sum(sizes[d] for d in identity_dbs) / 2**20),
        "Kafka topics the identity changes pass through": 1 + (len(net.topology.prefectures) if net.topology.network.prefecture_tier else 0),
    }


# --- propagation ---------------------------------------------------------------------------------

async def _drive_moves(net: Network, people: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, int]]:
    """転居 at the registers at RATE per second for ROUND_SECONDS; the (code, version) of each commit."""
    addresses = {m: neighborhoods(m[:5]) for m in MUNICIPALITIES}
    committed: list[tuple[str, int]] = []
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32), auth=net.staff_auth()) as client:
        async def move(code: str, municipality: str) -> None:
            postal, text = rng.choice(addresses[municipality])
            body = {"new_address": {"municipality_code": municipality, "postal_code": postal, "text": f"{text}{rng.randint(1, 9)}-{rng.randint(1, 30)}"}, "move_date": date.today().isoformat()}
            r = await client.post(f"{net.url(f'municipal_rrs.{municipality}')}/v1/residents/{code}/move-within", json=body)
            if r.status_code == 200:
                committed.append((code, r.json()["version"]))

        tasks = []
        start = time.perf_counter()
        chosen = rng.sample(people, int(RATE * ROUND_SECONDS))  # each person once per round: versions stay in order
        for i, (code, municipality) in enumerate(chosen):
            await asyncio.sleep(max(0.0, start + i / RATE - time.perf_counter()))
            tasks.append(asyncio.create_task(move(code, municipality)))
        await asyncio.gather(*tasks)
    return committed


def _arrivals(net: Network, database: str, committed: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
    """Seconds from the RRS's ``recorded_at`` to ``received_at`` at this store, per committed change."""
    codes = list({c for c, _ in committed})
    wanted = set(committed)
    with _connect(net, database) as conn:
        rows = conn.execute("select resident_code, version, payload, received_at from identity_history where resident_code = any(%s)", (codes,)).fetchall()
    out = {}
    for code, version, payload, received_at in rows:
        if (code, version) in wanted:
            out[(code, version)] = (received_at - IdentityChange.model_validate_json(payload).recorded_at).total_seconds()
    return out


def _propagation_round(net: Network, people: list[tuple[str, str]], rng: random.Random) -> dict[str, list[float]]:
    committed = asyncio.run(_drive_moves(net, people, rng))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(_arrivals(net, "national", committed)) == len(committed):
            break
        time.sleep(0.5)
    hops = {"CS": [f"cs_{m}" for m in MUNICIPALITIES], "prefecture server": [f"pref_{p.code}" for p in net.topology.prefectures] if net.topology.network.prefecture_tier else [], "national server": ["national"]}
    out: dict[str, list[float]] = {"committed": [float(len(committed))]}
    for hop, databases in hops.items():
        if not databases:
            continue
        arrived: dict = {}
        for database in databases:
            arrived.update(_arrivals(net, database, committed))  # each change reaches one CS and one prefecture server
        out[hop] = [s * 1000 for s in arrived.values()]
    out["lost"] = [float(len(committed) - len(_arrivals(net, "national", committed)))]
    return out


# --- lookups -------------------------------------------------------------------------------------

def _queries(net: Network, affair: str, codes: list[str]) -> list[dict]:
    """A lookup of each person for the affair: by resident code where the affair may search by it, otherwise
    (a pseudonymous affair: you cannot search by what you cannot see) by name and birth date."""
    if Criterion.resident_code in criteria_allowed(AFFAIRS[affair]):
        return [{"type": "ByResidentCode", "affair": affair, "resident_code": c} for c in codes]
    with _connect(net, "national") as conn:
        rows = conn.execute("select family_name, given_name, birth_date from identity where resident_code = any(%s) order by resident_code", (codes,)).fetchall()
    return [{"type": "ByBasicItems", "affair": affair, "family_name": f, "birth_date": b.isoformat(), **({"given_name": g} if g else {})} for f, g, b in rows]


async def _lookups(url: str, auth: httpx.Auth, queries: list[dict], *, seconds: float, concurrency: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    rng = random.Random(len(queries))
    async with httpx.AsyncClient(timeout=30, auth=auth) as client:  # a token signed anew before it ends
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                body = {**rng.choice(queries), "reason": "免許の更新"}
                started = time.perf_counter()
                r = await client.post(url, json=body)
                if r.status_code == 200 and len(r.json()["persons"]) == 1:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return latencies, errors, elapsed


def _lookup_round(net: Network, tokyo_codes: list[str]) -> dict[str, tuple[list[float], int, float]]:
    serving = net.topology.prefecture_node("13")
    pref_url = f"{net.url(serving.id)}/v1/persons/query"
    pref_token = net.agency_auth(PREF_AGENCY, audience=serving.party)
    national_url = f"{net.url('national_server.national')}/v1/persons/query"
    national_token = net.agency_auth(NATIONAL_AGENCY)
    prefectural, national = _queries(net, PREF_AFFAIR, tokyo_codes), _queries(net, NATIONAL_AFFAIR, tokyo_codes)
    return {
        "prefectural affair, 1 client": asyncio.run(_lookups(pref_url, pref_token, prefectural, seconds=LOOKUP_SECONDS, concurrency=1)),
        f"prefectural affair, {CONCURRENCY} clients": asyncio.run(_lookups(pref_url, pref_token, prefectural, seconds=LOOKUP_SECONDS, concurrency=CONCURRENCY)),
        "control: national affair at the national server, 1 client": asyncio.run(_lookups(national_url, national_token, national, seconds=LOOKUP_SECONDS, concurrency=1)),
    }


def _during_national_outage(net: Network, tokyo_codes: list[str]) -> dict:
    """Prefectural lookups while the national server is stopped: who can still answer them."""
    serving = net.topology.prefecture_node("13")
    auth = net.agency_auth(PREF_AGENCY, audience=serving.party)
    answered = failed = 0
    queries = _queries(net, PREF_AFFAIR, tokyo_codes[:20])
    net.stop_node("national_server.national")
    try:
        with httpx.Client(timeout=5, auth=auth) as client:
            for body in queries:
                try:
                    r = client.post(f"{net.url(serving.id)}/v1/persons/query", json=body)
                    answered += r.status_code == 200
                    failed += r.status_code != 200
                except httpx.HTTPError:
                    failed += 1
    finally:
        net.start_node("national_server.national")
    return {"prefectural lookups tried": answered + failed, "answered": answered, "failed": failed}


# --- copies --------------------------------------------------------------------------------------

def _copies(net: Network, codes_by_municipality: dict[str, list[str]]) -> dict:
    """How many stores above the register hold each person's current version (the register's)."""
    counts: list[int] = []
    for municipality, codes in codes_by_municipality.items():
        with _connect(net, f"rrs_{municipality}") as conn:
            truth = dict(conn.execute("select resident_code, version from residents where resident_code = any(%s)", (codes,)).fetchall())
        holding = {c: 0 for c in codes}
        for database in _identity_databases(net):
            with _connect(net, database) as conn:
                for code, version in conn.execute("select resident_code, version from identity where resident_code = any(%s)", (codes,)).fetchall():
                    if truth.get(code) == version:
                        holding[code] += 1
        counts += holding.values()
    return {
        "persons sampled": len(counts), "stores holding the current version, fewest": min(counts), "median": statistics.median(counts), "most": max(counts),
        "copies including the register": statistics.median(counts) + 1,
    }


# --- the run -------------------------------------------------------------------------------------

def _people(net: Network) -> list[tuple[str, str]]:
    people = []
    for municipality in MUNICIPALITIES:
        with _connect(net, f"rrs_{municipality}") as conn:
            people += [(code, municipality) for (code,) in conn.execute("select resident_code from residents where status = 'active' order by resident_code").fetchall()]
    return people


def main() -> dict:
    rng = random.Random(2026)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-topologies-") as tmp:
        nets = {name: Network.on_free_ports(Path(tmp) / name.replace(" ", "-"), topology_path=path) for name, path in TOPOLOGIES.items()}
        try:
            started = {}
            for name, net in nets.items():
                print(f"  starting the network {name}", flush=True)
                t = time.monotonic()
                net.start()
                started[name] = round(time.monotonic() - t, 1)
            spec = PopulationSpec(seed=4711, municipalities=MUNICIPALITIES)
            loaded = {}
            for name, net in nets.items():
                print(f"  bulk-loading {PERSONS:,} persons into {name}", flush=True)
                t = time.monotonic()
                bulk_load(lambda database, net=net: _connect(net, database), net.topology, spec, PERSONS, batch=5000)
                loaded[name] = round(time.monotonic() - t, 1)
                for database in _identity_databases(net):
                    with _connect(net, database) as conn:
                        conn.execute("vacuum analyze identity")
            people = {name: _people(net) for name, net in nets.items()}
            assert len({tuple(p) for p in people.values()}) == 1, "the same seed gives the same persons in both networks"
            everyone = people[next(iter(nets))]
            tokyo_codes = [c for c, m in everyone if m in TOKYO]

            for net in nets.values():  # warm-up
                asyncio.run(_lookups(f"{net.url('national_server.national')}/v1/persons/query", net.agency_auth(NATIONAL_AGENCY), _queries(net, NATIONAL_AFFAIR, tokyo_codes), seconds=2, concurrency=2))

            propagation: dict[str, dict[str, list[float]]] = {name: {} for name in nets}
            lookups: dict[str, dict[str, list]] = {name: {} for name in nets}
            for r in range(ROUNDS):
                order = list(nets) if r % 2 == 0 else list(reversed(nets))
                for name in order:
                    net = nets[name]
                    print(f"  round {r + 1}/{ROUNDS}: {name}", flush=True)
                    for hop, values in _propagation_round(net, everyone, random.Random(r)).items():
                        propagation[name].setdefault(hop, []).extend(values)
                    for what, (latencies, errors, elapsed) in _lookup_round(net, tokyo_codes).items():
                        acc = lookups[name].setdefault(what, [[], 0, 0.0])
                        acc[0].extend(latencies)
                        acc[1] += errors
                        acc[2] += elapsed

            sample = {m: [c for c, mm in rng.sample(everyone, 600) if mm == m] for m in MUNICIPALITIES}
            costs = {name: _cost(net) for name, net in nets.items()}
            copies = {name: _copies(net, sample) for name, net in nets.items()}
            outage = {name: _during_national_outage(net, tokyo_codes) for name, net in nets.items()}
            figures: dict = {}
            for name, net in nets.items():
                prop = propagation[name]
                figures[name] = {
                    "cost": {**costs[name], "start-up of the whole network (s)": started[name], f"bulk load of {PERSONS:,} persons into every tier (s)": loaded[name]},
                    f"propagation: 転居 committed at the register → applied, {RATE:g}/s, {ROUNDS} rounds of {ROUND_SECONDS} s": {
                        "changes committed": int(sum(prop.pop("committed"))), "not at the national server 120 s after the round": int(sum(prop.pop("lost"))),
                        **{f"at the {hop}": _summary(values) for hop, values in prop.items()},
                    },
                    "copies of 本人確認情報 (sampled persons, after the rounds)": copies[name],
                    "while the national server is stopped": outage[name],
                    f"lookups for a prefectural affair ({PREF_AGENCY}, {PREF_AFFAIR})": {
                        "served by": net.topology.prefecture_node("13").id,
                        **{what: {**_summary(latencies), "lookups/s": round(len(latencies) / elapsed, 1) if elapsed else 0, "errors": errors}
                        for what, (latencies, errors, elapsed) in lookups[name].items()},
                    },
                }
        finally:
            for net in nets.values():
                net.stop()
    figures["notes"] = notes = [
        f"Population: {PERSONS:,} synthetic persons (services/population.py, seed 4711) bulk-loaded into every tier of each network, 3 municipalities (2 in 東京都).",
        "Rounds alternate between the networks (A B, B A, ...); both networks run all the time, so each one's idle background work loads the other alike.",
        "Propagation latency starts at the RRS's recorded_at (inside its transaction) and ends at the start of the transaction that applied the change at the tier; the client is not in the path.",
        "The prefecture-server hop exists only with the tier; the same moves pass RRS → CS → national without it.",
        f"Load average (1/5/15 min) at the start: {' / '.join(f'{x:.2f}' for x in load_before)}; at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}.",
    ]
    write_report(figures, notes)
    return figures


REPORT = REPO_ROOT / "docs" / "topologies.md"


def _leaves(figures: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in figures.items():
        name = f"{prefix} — {key}" if prefix else key
        if isinstance(value, dict):
            out.update(_leaves(value, name))
        else:
            out[name] = value
    return out


def write_report(figures: dict, notes: list[str]) -> None:
    """docs/topologies.md: the two topologies side by side, from this run (R-NET-4)."""
    from bench.__main__ import _fmt, machine

    names = [n for n in figures if n != "notes"]
    leaves = {n: _leaves(figures[n]) for n in names}
    rows = list(dict.fromkeys(k for n in names for k in leaves[n]))
    facts = machine()
    lines = [
        "# With and without prefecture servers (R-NET-4)",
        "",
        "Written by `python -m bench topologies` (`bench/bench_topologies.py`, also part of `make bench`):",
        "both networks ran side by side in one run on this machine, with the same synthetic population.",
        "What changes between them and how to run either one: [recovery.md](recovery.md#without-prefecture-servers).",
        "",
        f"Measured {facts['date']} on {facts['cores']} cores ({facts['CPU']}, {facts['RAM']}); PostgreSQL {facts['PostgreSQL']}.",
        "",
        "| figure | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(_fmt(leaves[n][row]) if row in leaves[n] else "—" for n in names) + " |")
    lines += ["", "## How the run was made", ""] + [f"- {note}" for note in notes]
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    import json

    result = main()
    print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    out = os.environ.get("BENCH_TOPOLOGIES_JSON")
    if out:
        Path(out).write_text(json.dumps(result, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
