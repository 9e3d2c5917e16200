"""Disaster recovery and reconciliation (issue 7): how long the network takes to give a
municipality back its residents, and to find and heal a few drifted records among a
prefecture's million.

- **Restore.** A municipality of 100,000 residents (the synthetic population,
  written to every tier with COPY) is wiped and restored by the drill
  (`services/drill.py`: lock out, drop, migrate, stream from the prefecture
  server, COPY into the CS and the register, reopen). Baseline, same run, same
  databases: copying the same rows within each database with
  `INSERT … SELECT` into tables of the same shape (indexes included).
  Snapshot figures of the same municipality come with it: the first (full)
  snapshot, one with nothing changed, and one after 100 changes.
- **Reconciliation.** A prefecture of 1,000,000 residents in two
  municipalities (CS and prefecture stores loaded with COPY), of whom 100 drift
  at the prefecture (50 lost, 50 a version behind their CS). One operator run
  of the prefecture server finds and heals them by range digests. Baselines,
  same run: one pass of the digest over the prefecture's rows in SQL (the
  floor any comparison of the whole store pays), and reading every person's
  (code, version, status, municipality) on both sides and comparing them in
  Python (what a naive full-list comparison costs before any transfer).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from services.common.topology import Node
from services.network import Network
from services.population import HISTORY_COLUMNS, IDENTITY_COLUMNS, Identifiers, PopulationSpec, bulk_load, copy_rows, identity_row_pool

MUNICIPALITY = "131016"
RESTORE_PERSONS = int(os.environ.get("JUKINET_BENCH_RESTORE_PERSONS", "100000"))
PREFECTURE_PERSONS = int(os.environ.get("JUKINET_BENCH_RECONCILE_PERSONS", "1000000"))
DRIFTED = 100


def _operator(net: Network, node: str, method: str, path: str) -> httpx.Response:
    from services.cli import _operator_headers

    response = httpx.request(method, f"{net.url(node)}{path}", headers=_operator_headers(net.root, node), timeout=3600)
    response.raise_for_status()
    return response


def _connect(net: Network, database: str) -> psycopg.Connection:
    cred = net.credentials[database]
    return psycopg.connect(host=net.postgres.host, port=net.postgres.port, user=cred.role, password=cred.password, dbname=cred.database, autocommit=True)


def _copy_within(conn: psycopg.Connection, tables: list[str]) -> tuple[float, int]:
    """INSERT … SELECT of whole tables into same-shaped tables (indexes included): the floor of writing those rows."""
    rows = 0
    for t in tables:
        conn.execute(f"drop table if exists bench_copy_{t}")
        conn.execute(f"create table bench_copy_{t} (like {t} including all)")
    started = time.monotonic()
    with conn.transaction():
        for t in tables:
            rows += conn.execute(f"insert into bench_copy_{t} select * from {t}").rowcount
    seconds = time.monotonic() - started
    for t in tables:
        conn.execute(f"drop table bench_copy_{t}")
    return seconds, rows


def restore_figures(root: Path) -> dict:
    net = Network.on_free_ports(root)
    net.extra_env.update({"JUKINET_SNAPSHOT_SECONDS": "0", "JUKINET_RECONCILE_SECONDS": "0"})
    net.prepare()
    try:
        for node in ("national_server.national", "prefecture_server.13", f"cs_gateway.{MUNICIPALITY}", f"municipal_rrs.{MUNICIPALITY}"):
            net.start_node(node)
        net.write_addresses()
        print(f"  loading {RESTORE_PERSONS:,} residents of {MUNICIPALITY} into every tier", flush=True)
        started = time.monotonic()
        bulk_load(lambda db: psycopg.connect(**_kwargs(net, db)), net.topology,
                  PopulationSpec(seed=7, municipalities=(MUNICIPALITY,)), RESTORE_PERSONS)
        load_seconds = time.monotonic() - started
        for db in (f"rrs_{MUNICIPALITY}", f"cs_{MUNICIPALITY}", "pref_13"):
            with _connect(net, db) as conn:
                conn.execute("vacuum analyze")
        print("  snapshots", flush=True)
        snapshots = {}
        for label in ("first snapshot (every person sent)", "next snapshot, nothing changed"):
            t0 = time.monotonic()
            info = _operator(net, f"cs_gateway.{MUNICIPALITY}", "POST", "/internal/v1/operator/snapshot").json()
            snapshots[label] = {"seconds": round(time.monotonic() - t0, 2), "persons": info["persons"], "rows sent": info["rows"], "ranges sent": info["ranges"], "state": info["state"]}
        _hundred_changes_at_the_counter(net)
        t0 = time.monotonic()
        info = _operator(net, f"cs_gateway.{MUNICIPALITY}", "POST", "/internal/v1/operator/snapshot").json()
        snapshots["next snapshot, 100 persons changed"] = {"seconds": round(time.monotonic() - t0, 2), "persons": info["persons"], "rows sent": info["rows"], "ranges sent": info["ranges"], "state": info["state"]}

        print("  baseline: copying the same rows within each database", flush=True)
        with _connect(net, f"cs_{MUNICIPALITY}") as conn:
            cs_seconds, cs_rows = _copy_within(conn, ["identity", "identity_history"])
        with _connect(net, f"rrs_{MUNICIPALITY}") as conn:
            rrs_seconds, rrs_rows = _copy_within(conn, ["households", "residents", "resident_history"])

        print("  the drill: wipe and restore from the prefecture server", flush=True)
        from services.drill import run_drill

        report = run_drill(net.root, MUNICIPALITY, net.topology, verify_against_before=True)
        return {
            "residents": RESTORE_PERSONS,
            "bulk load into register, CS, prefecture, national (s)": round(load_seconds, 1),
            "snapshots of the municipality": snapshots,
            "restore by the drill": {
                "persons restored": report.persons_restored,
                "time from wipe to service (s)": round(report.restore_seconds, 2),
                **{f"{step} (s)": round(seconds, 2) for step, seconds in report.timings.items()},
                "persons/s (restore step)": round(report.persons_restored / report.timings["restore"]) if report.timings.get("restore") else 0,
                "carried items differing from before": len(report.differences),
            },
            "baseline: INSERT … SELECT of the same rows within each database": {
                "CS identity + identity_history rows": cs_rows, "CS (s)": round(cs_seconds, 2),
                "register households + residents + resident_history rows": rrs_rows, "register (s)": round(rrs_seconds, 2),
                "total (s)": round(cs_seconds + rrs_seconds, 2),
            },
        }
    finally:
        _stop(net)


def _hundred_changes_at_the_counter(net: Network) -> None:
    """100 転居 at the register, through the CS to the prefecture server (the real flow)."""
    from datetime import date

    from services.common.gazetteer import neighborhoods

    with _connect(net, f"rrs_{MUNICIPALITY}") as conn:
        codes = [r[0] for r in conn.execute("select resident_code from residents where status = 'active' order by random() limit 100")]
    hoods = neighborhoods(MUNICIPALITY[:5])
    with httpx.Client(timeout=60, auth=net.staff_auth()) as client:
        for i, code in enumerate(codes):
            postal, text = hoods[i % len(hoods)]
            r = client.post(f"{net.url(f'municipal_rrs.{MUNICIPALITY}')}/v1/residents/{code}/move-within",
                            json={"new_address": {"municipality_code": MUNICIPALITY, "postal_code": postal, "text": f"{text}{i % 9 + 1}-{i % 30 + 1}-1"}, "move_date": date.today().isoformat()})
            r.raise_for_status()
    deadline = time.monotonic() + 300
    with _connect(net, "pref_13") as pref:
        while pref.execute("select count(*) from identity where resident_code = any(%s) and version = 2", (codes,)).fetchone()[0] < len(codes):
            if time.monotonic() > deadline:
                raise TimeoutError("the 100 changes did not reach the prefecture server in 300 s")
            time.sleep(0.5)


def _kwargs(net: Network, database: str) -> dict:
    cred = net.credentials[database]
    return {"host": net.postgres.host, "port": net.postgres.port, "user": cred.role, "password": cred.password, "dbname": cred.database}


def _load_prefecture(net: Network, persons: int) -> None:
    """COPY ``persons`` into the CSs of Tokyo (half each) and the prefecture server, identically."""
    municipalities = [m.code for m in net.topology.municipalities if m.prefecture == "13"]
    pools = {m: identity_row_pool(seed=50 + i, size=5000, municipalities=(m,)) for i, m in enumerate(municipalities)}
    events = {m: [json.loads(row[14])["event_id"] for row in pool] for m, pool in pools.items()}
    ids = Identifiers(4711)
    pref = _connect(net, "pref_13")
    cs = {m: _connect(net, f"cs_{m}") for m in municipalities}
    try:
        done, started, batch = 0, time.monotonic(), 50_000
        while done < persons:
            n = min(batch, persons - done)
            per_cs = {m: ([], []) for m in municipalities}
            for i in range(n):
                m = municipalities[(done + i) % len(municipalities)]
                k = (done + i) % len(pools[m])
                row = pools[m][k]
                code, number, event = ids.resident_code(), ids.individual_number(), str(uuid.UUID(int=random.getrandbits(128), version=4))
                raw = row[14].replace(row[0], code).replace(row[1], number).replace(events[m][k], event)
                per_cs[m][0].append((code, number, *row[2:14], raw))
                per_cs[m][1].append((code, 1, event, raw))
            for m, (identity, history) in per_cs.items():
                for conn in (cs[m], pref):
                    with conn.transaction():
                        copy_rows(conn, "identity", IDENTITY_COLUMNS, identity)
                        copy_rows(conn, "identity_history", HISTORY_COLUMNS, history)
            done += n
            print(f"  prefecture of {persons:,}: {done:,} loaded ({done / (time.monotonic() - started):,.0f} persons/s)", flush=True)
        for conn in (pref, *cs.values()):
            conn.execute("vacuum analyze identity")
            conn.execute("vacuum analyze identity_history")
    finally:
        pref.close()
        for conn in cs.values():
            conn.close()


def _drift(net: Network) -> tuple[list[str], list[str]]:
    """50 persons lost at the prefecture, 50 whose CS holds a newer version than the prefecture."""
    from contracts.identity import ChangeReason, IdentityChange

    with _connect(net, "pref_13") as pref:
        codes = [r[0] for r in pref.execute("select resident_code from identity order by random() limit %s", (DRIFTED,))]
        lost, behind = codes[:DRIFTED // 2], codes[DRIFTED // 2:]
        pref.execute("delete from identity_history where resident_code = any(%s)", (lost,))
        pref.execute("delete from identity where resident_code = any(%s)", (lost,))
        placed = dict(pref.execute("select resident_code, municipality_code from identity where resident_code = any(%s)", (behind,)).fetchall())
    for code in behind:
        with _connect(net, f"cs_{placed[code]}") as conn, conn.transaction():
            change = IdentityChange.model_validate_json(conn.execute("select payload from identity where resident_code = %s", (code,)).fetchone()[0])
            ident = change.identity
            moved = change.model_copy(update={"version": 2, "event_id": uuid.uuid4(), "reason": ChangeReason.move_within,
                                              "identity": ident.model_copy(update={"address": ident.address.model_copy(update={"text": ident.address.text + "別館"})})})
            raw = moved.model_dump_json()
            conn.execute("update identity set version = 2, last_reason = 'move_within', address_text = %s, payload = %s where resident_code = %s",
                         (moved.identity.address.text, raw, code))
            conn.execute("insert into identity_history (resident_code, version, event_id, payload) values (%s, 2, %s, %s)", (code, str(moved.event_id), raw))
    return lost, behind


def reconcile_figures(root: Path) -> dict:
    net = Network.on_free_ports(root)
    net.extra_env.update({"JUKINET_SNAPSHOT_SECONDS": "0", "JUKINET_RECONCILE_SECONDS": "0", "JUKINET_RECONCILE_GRACE_SECONDS": "0"})
    net.prepare()
    try:
        for node in ("prefecture_server.13", "cs_gateway.131016", "cs_gateway.131130"):
            net.start_node(node)
        started = time.monotonic()
        _load_prefecture(net, PREFECTURE_PERSONS)
        load_seconds = time.monotonic() - started
        lost, behind = _drift(net)
        print("  reconciliation at the prefecture server", flush=True)
        t0 = time.monotonic()
        runs = _operator(net, "prefecture_server.13", "POST", "/internal/v1/operator/reconcile").json()
        seconds = time.monotonic() - t0
        with _connect(net, "pref_13") as pref:
            still = pref.execute("select count(*) from unnest(%s::text[]) c left join identity i on i.resident_code = c where i.resident_code is null", (lost,)).fetchone()[0]
            still += pref.execute("select count(*) from identity where resident_code = any(%s) and version <> 2", (behind,)).fetchone()[0]
            print("  baselines: one digest pass in SQL, and a full (code, version, status, municipality) comparison", flush=True)
            t0 = time.monotonic()
            pref.execute("select count(*), bit_xor(('x' || substr(md5(resident_code || ':' || version || ':' || status || ':' || municipality_code), 1, 16))::bit(64)::bigint)"
                         " from identity where municipality_code = any(%s)", (["131016", "131130"],)).fetchone()
            digest_pass = time.monotonic() - t0
            t0 = time.monotonic()
            mine = {r[0]: r[1:] for r in pref.execute("select resident_code, version, status, municipality_code from identity")}
        theirs = {}
        for m in ("131016", "131130"):
            with _connect(net, f"cs_{m}") as conn:
                theirs.update({r[0]: r[1:] for r in conn.execute("select resident_code, version, status, municipality_code from identity")})
        differing = sum(1 for code in set(mine) | set(theirs) if mine.get(code) != theirs.get(code))
        naive = time.monotonic() - t0
        naive_bytes = sum(len(c) + 30 for c in theirs)  # what one side would have to send, at about 40 bytes a person
        return {
            "persons in the prefecture": PREFECTURE_PERSONS,
            "drifted records (lost + behind)": f"{len(lost)} + {len(behind)}",
            "load with COPY (s)": round(load_seconds, 1),
            "reconciliation of the prefecture server (s)": round(seconds, 2),
            "healed": sum(r["healed"] for r in runs),
            "still differing afterwards": still,
            **{f"run with {r['truth_node']}": {
                "outcome": r["outcome"], "ranges compared": r["ranges_compared"], "ranges descended": r["ranges_descended"], "persons compared one by one": r["persons_compared"],
                "requests": r["requests"], "bytes exchanged (digests and states)": r["bytes_exchanged"], "healed": r["healed"], "reported": r["reported"],
                "seconds": round((_ts(r["finished_at"]) - _ts(r["started_at"])), 2),
            } for r in runs},
            "baseline: one digest pass over the prefecture's rows in SQL (s)": round(digest_pass, 2),
            "baseline: every person's state read on both sides and compared in Python (s)": round(naive, 2),
            "baseline: persons that comparison finds differing, after the heal (0: both sides agree)": differing,
            "baseline: bytes one side would send for a full comparison (about)": naive_bytes,
        }
    finally:
        _stop(net)


def _stop(net: Network) -> None:
    """Stop the network and wait until PostgreSQL has really gone (its shutdown checkpoint can outlast pg_ctl's wait)."""
    net.stop()
    deadline = time.monotonic() + 600
    while (net.postgres.data / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.5)


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def main() -> dict:
    figures: dict = {"notes": [
        "Services, PostgreSQL and the bench share the same 2 cores (and other work ran on the machine); compare figures within the run.",
        "Grace period of reconciliation set to 0 s for the measurement (default 2 s: a difference is looked at again before it is healed).",
    ]}
    with tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        figures[f"restore of a municipality of {RESTORE_PERSONS:,} residents"] = restore_figures(Path(tmp))
    print(json.dumps(figures, ensure_ascii=False, indent=2, default=str), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        figures[f"reconciliation of a prefecture of {PREFECTURE_PERSONS:,} residents"] = reconcile_figures(Path(tmp))
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), ensure_ascii=False, indent=2, default=str))
