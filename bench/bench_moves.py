"""Moves between municipalities (特例転入): a 転入 committed at the destination B →
the national server shows the person registered at B, and → the origin A has
closed its record after the 転入通知 travelled B's CS → A's CS → A's register.

One private network (the sample topology: 千代田区 and 渋谷区 in 東京都, 豊中市 in
大阪府). Baseline, in the same run and at the same rate: a birth, a change of
one municipality only, from its commit to the national server's row. The
persons born in the baseline are the ones who then move: their 転出 are filed
and their 転出証明書情報 reach the destinations before the clock starts, so the
timed part is the 転入 leg alone. Directions alternate over all six ordered
pairs, two within 東京都 and four across prefectures.

Commit times are the moment the 201 arrived; arrival times are the first poll
of the tenant's database (with that tenant's own role) that shows the result,
one query per poll for every outstanding person. Before the load, a dozen
births and moves at 1/s give the latency of the idle network; after it, each
hop's own database stamps show where the time went, and the services' logs and
outboxes show work done twice (failed relay passes, consumers re-reading).
Rate and duration: JUKINET_BENCH_MOVE_RATE (50/s), JUKINET_BENCH_MOVE_SECONDS (30).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg

from services.network import Network

RATE = int(os.environ.get("JUKINET_BENCH_MOVE_RATE", "50"))  # moves (and births) per second
SECONDS = int(os.environ.get("JUKINET_BENCH_MOVE_SECONDS", "30"))
POLL_SECONDS = 0.05  # resolution of the arrival probes while few persons are outstanding
POLL_SECONDS_BACKLOG = 0.2  # with a backlog the latencies are seconds: poll less, so the probes do not add load
DEADLINE_SECONDS = 300  # after the load stops; what has not arrived by then counts as not completed
PREP_CONCURRENCY = 16
PREP_DEADLINE_SECONDS = 600  # for the 転出 to settle everywhere before the clock starts
REFERENCE_COUNT = 12  # births and moves at 1/s before the load, for the latency of the idle network

CHIYODA, SHIBUYA, TOYONAKA = "131016", "131130", "272035"
PREFECTURE = {CHIYODA: "13", SHIBUYA: "13", TOYONAKA: "27"}
#: Every ordered pair once per round: person i moves along PAIRS[i % 6].
PAIRS = [(CHIYODA, SHIBUYA), (SHIBUYA, TOYONAKA), (TOYONAKA, CHIYODA), (SHIBUYA, CHIYODA), (CHIYODA, TOYONAKA), (TOYONAKA, SHIBUYA)]
NOTICE = "move-in-notice/v1"


@dataclass
class Person:
    code: str
    origin: str
    destination: str
    born_at: float = 0.0  # perf_counter when the birth's 201 arrived
    moved_in_at: float = 0.0  # perf_counter when the 転入's 201 arrived
    moved_in_wall: float = 0.0  # the same moment on the wall clock, to compare with the databases' own stamps
    version: int = 0  # the 転入's version


@dataclass
class Probe:
    """Outstanding persons of one database and when each was first seen done.

    ``query`` gets the list of outstanding codes and returns the codes that are
    done, so a poll costs one query whatever the backlog."""

    database: str
    query: str
    done: Callable[[tuple, Person], bool] = lambda row, person: True
    outstanding: dict[str, Person] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def by_third(timed: list[tuple[float, float]]) -> dict[str, list[float]]:
    """(when, latency) pairs split into the first, middle and last third of the run by when: a rate the network
    sustains shows the same latency late in the run as early; a queue shows it growing."""
    ordered = [latency for _, latency in sorted(timed)]
    third = len(ordered) // 3
    if not third:
        return {}
    return {"first": ordered[:third], "middle": ordered[third:-third], "last": ordered[-third:]}


def _ms(latencies: list[float]) -> dict:
    """Median and p99 in milliseconds of latencies in seconds."""
    if not latencies:
        return {"median ms": float("nan"), "p99 ms": float("nan")}
    return {"median ms": round(1000 * statistics.median(latencies), 1), "p99 ms": round(1000 * _percentile(latencies, 0.99), 1)}


async def _connect(net: Network, database: str) -> psycopg.AsyncConnection:
    cred = net.credentials[database]
    return await psycopg.AsyncConnection.connect(
        host=net.postgres.host, port=net.postgres.port, user=cred.role, password=cred.password, dbname=cred.database, autocommit=True,
    )


async def _watch(net: Network, probe: Probe, stop: asyncio.Event) -> None:
    """Poll one database until stopped; the time a person is seen done is the start of that poll
    (its snapshot already held the row, so the error is at most one poll interval plus the query)."""
    async with await _connect(net, probe.database) as conn:
        while not stop.is_set():
            if probe.outstanding:
                started = time.perf_counter()
                rows = await (await conn.execute(probe.query, (list(probe.outstanding),))).fetchall()
                for row in rows:
                    person = probe.outstanding.get(row[0])
                    if person is not None and probe.done(row, person):
                        probe.seen[row[0]] = started
                        del probe.outstanding[row[0]]
            await asyncio.sleep(POLL_SECONDS if len(probe.outstanding) < 100 else POLL_SECONDS_BACKLOG)


async def _drain(probes: list[Probe], stop: asyncio.Event, watchers: list[asyncio.Task]) -> None:
    """Wait until every probe has seen everything, or the deadline; then stop the watchers."""
    deadline = time.perf_counter() + DEADLINE_SECONDS
    while any(p.outstanding for p in probes) and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*watchers)


async def _paced(count: int, rate: int, fire) -> tuple[float, list[float]]:
    """Start ``fire(i)`` at start + i/rate for every i, wait for all; returns the time the
    last one was started (relative to start) and how late each start was against its slot."""
    tasks, lateness = [], []
    start = time.perf_counter()
    for i in range(count):
        slot = start + i / rate
        await asyncio.sleep(max(0.0, slot - time.perf_counter()))
        lateness.append(time.perf_counter() - slot)
        tasks.append(asyncio.create_task(fire(i)))
    issued = time.perf_counter() - start
    await asyncio.gather(*tasks)
    return issued, lateness


class Driver:
    """A minimal HTTP/1.1 client for the timed requests: one keep-alive connection per request in
    flight, taken from and given back to a free list in O(1), at most ``per_register`` requests in
    flight to one register (as bench_push's 64 connections); the rest wait here, and that wait
    counts in their answer time. Without a bound an overloaded register would hold hundreds of
    requests that all wait for its 10 database connections and fail after 30 s with a 500.

    Why not httpx: its connection pool walks all its connections and queued requests on every
    request. When the registers fall behind, a fixed rate means hundreds of requests in flight, and
    then the client itself used more CPU than its share of the 2 cores and fell seconds behind the
    schedule: the driver, not the network, set the rate. JSON in, (status, JSON) out; nothing else."""

    IDLE_SECONDS = 3.0  # uvicorn closes a keep-alive connection idle for 5 s; never reuse one near that

    def __init__(self, timeout: float = 120.0, per_register: int = 64, headers_for=None):
        self.timeout = timeout
        self.headers_for = headers_for  # url → extra headers (the staff credential of the register called: Network.staff_headers)
        self._idle: dict[tuple[str, int], list] = defaultdict(list)  # (host, port) → [(reader, writer, idle since)]
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_register))

    async def post(self, url: str, body: dict) -> tuple[int, object]:
        """(status, the JSON answer); the answer is None unless the status is 2xx."""
        parts = urlsplit(url)
        async with self._slots[(parts.hostname, parts.port)]:
            status, data = await asyncio.wait_for(self._request("POST", url, json.dumps(body).encode()), self.timeout)
        return status, json.loads(data) if 200 <= status < 300 and data else None

    async def _request(self, method: str, url: str, body: bytes) -> tuple[int, bytes]:
        parts = urlsplit(url)
        where = (parts.hostname, parts.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (self.headers_for(url) if self.headers_for else {}).items())
        head = f"{method} {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
        while True:
            reader, writer, reused = await self._connection(where)
            try:
                writer.write(head.encode() + body)
                try:
                    status_line = await reader.readline()
                except (ConnectionResetError, BrokenPipeError):
                    status_line = b""
                if not status_line and reused:  # the server had closed it while idle: the request was not read
                    writer.close()
                    continue
                if not status_line:
                    raise ConnectionResetError("the server closed the connection without answering")
                status = int(status_line.split()[1])
                length, chunked, close = None, False, False
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    name, value = name.strip().lower(), value.strip().lower()
                    length = int(value) if name == "content-length" else length
                    chunked |= name == "transfer-encoding" and "chunked" in value
                    close |= name == "connection" and "close" in value
                if chunked:
                    data = b""
                    while (size := int((await reader.readline()).split(b";")[0], 16)):
                        data += (await reader.readexactly(size + 2))[:-2]  # each chunk ends with CRLF
                    await reader.readline()
                elif length is not None:
                    data = await reader.readexactly(length)
                else:
                    data, close = await reader.read(), True
            except BaseException:
                writer.close()
                raise
            if close:
                writer.close()
            else:
                self._idle[where].append((reader, writer, time.monotonic()))
            return status, data

    async def _connection(self, where: tuple[str, int]):
        idle = self._idle[where]
        while idle:
            reader, writer, since = idle.pop()
            if time.monotonic() - since < self.IDLE_SECONDS and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(*where)
        return reader, writer, False

    def close(self) -> None:
        for connections in self._idle.values():
            for _, writer, _ in connections:
                writer.close()
        self._idle.clear()


DRIVER_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError)


def _rrs(net: Network, municipality: str) -> str:
    return net.url(f"municipal_rrs.{municipality}")


# --- 1. baseline: births ------------------------------------------------------------------------------------


async def _births(net: Network, driver: Driver, count: int, rate: int) -> tuple[dict, list[Person]]:
    """Births at the origins of the coming moves at ``rate``; commit → row at the national server."""
    from tests.e2e.helpers import birth_body

    national = Probe("national", "select resident_code from identity where resident_code = any(%s)")
    stop = asyncio.Event()
    watchers = [asyncio.create_task(_watch(net, national, stop))]
    people: list[Person] = []
    refused: Counter = Counter()
    answer_times: list[float] = []
    bodies = [birth_body(PAIRS[i % len(PAIRS)][0]) for i in range(count)]

    async def fire(i: int) -> None:
        origin, destination = PAIRS[i % len(PAIRS)]
        sent = time.perf_counter()
        try:
            status, answer = await driver.post(f"{_rrs(net, origin)}/v1/residents", bodies[i])
        except DRIVER_ERRORS as exc:
            refused[type(exc).__name__] += 1
            return
        if status != 201:
            refused[str(status)] += 1
            return
        person = Person(answer["resident_code"], origin, destination, born_at=time.perf_counter())
        answer_times.append(person.born_at - sent)
        people.append(person)
        national.outstanding[person.code] = person

    issued, lateness = await _paced(count, rate, fire)
    await _drain([national], stop, watchers)
    latencies = [national.seen[p.code] - p.born_at for p in people if p.code in national.seen]
    figures = {
        "births committed": len(people),
        "achieved rate /s": round(count / (issued + 1 / rate), 1),
        "refused or failed": sum(refused.values()),
        f"not at the national server {DEADLINE_SECONDS} s after the load stopped": len(national.outstanding),
        **{f"POST /v1/residents answer, {k}": v for k, v in _ms(answer_times).items()},
        **{f"commit → national row, {k}": v for k, v in _ms(latencies).items()},
        "start later than its slot, p99 ms": round(1000 * _percentile(lateness, 0.99), 1),
    }
    if refused:
        figures["refusals by status"] = ", ".join(f"{k}: {v}" for k, v in sorted(refused.items()))
    return figures, [p for p in people if p.code in national.seen]


# --- 2. preparation: 転出 and the certificates at the destinations ---------------------------------------------


async def _prepare_moves(net: Network, client: httpx.AsyncClient, people: list[Person]) -> tuple[list[Person], list[str]]:
    """File every 転出 (not timed) and wait until each destination lists the certificate and the
    national server shows the person in transit, so the network is idle when the clock starts."""
    today = date.today().isoformat()
    from tests.e2e.helpers import address_in

    rng = random.Random(7)
    gate = asyncio.Semaphore(PREP_CONCURRENCY)
    moved_out: list[Person] = []
    notes: list[str] = []

    async def move_out(person: Person) -> None:
        body = {"resident_codes": [person.code], "destination": address_in(person.destination, rng), "planned_date": today, "notified_date": today}
        async with gate:
            try:
                r = await client.post(f"{_rrs(net, person.origin)}/v1/move-outs", json=body)
            except httpx.HTTPError:
                return
        if r.status_code == 201:
            moved_out.append(person)

    await asyncio.gather(*(move_out(p) for p in people))
    if len(moved_out) < len(people):
        notes.append(f"preparation: {len(people) - len(moved_out)} 転出 refused or failed; those persons do not move")

    deadline = time.monotonic() + PREP_DEADLINE_SECONDS
    waiting = {m: {p.code for p in moved_out if p.destination == m} for m in PREFECTURE}
    while any(waiting.values()) and time.monotonic() < deadline:
        for municipality, codes in waiting.items():
            if codes:
                listed = (await client.get(f"{_rrs(net, municipality)}/v1/move-reservations")).json()
                codes.difference_update(c["resident_code"] for c in listed)
        await asyncio.sleep(1.0)
    missing = set().union(*waiting.values())
    if missing:
        notes.append(f"preparation: {len(missing)} certificates never reached their destination within {PREP_DEADLINE_SECONDS} s; those persons do not move")
    ready = [p for p in moved_out if p.code not in missing]

    async with await _connect(net, "national") as conn:
        codes = [p.code for p in ready]
        while True:
            cur = await conn.execute("select count(*) from identity where resident_code = any(%s) and status = 'moving_out'", (codes,))
            in_transit = (await cur.fetchone())[0]
            if in_transit == len(codes):
                break
            if time.monotonic() > deadline:
                notes.append(f"preparation: only {in_transit} of {len(codes)} persons were in transit nationally when the clock started")
                break
            await asyncio.sleep(1.0)
    return ready, notes


# --- 3. the timed 転入 ----------------------------------------------------------------------------------------


async def _moves(net: Network, driver: Driver, movers: list[Person], rate: int) -> tuple[dict, list[Person], dict[str, Probe]]:
    """A 転入 at each destination at ``rate``; commit at B → active at B nationally (a) and → closed at A (b)."""
    today = date.today().isoformat()
    from tests.e2e.helpers import address_in

    rng = random.Random(11)
    national = Probe(
        "national", "select resident_code, municipality_code from identity where resident_code = any(%s) and status = 'active'",
        done=lambda row, person: row[1] == person.destination,
    )
    origins = {m: Probe(f"rrs_{m}", "select resident_code from residents where resident_code = any(%s) and status = 'removed'") for m in PREFECTURE}
    probes = [national, *origins.values()]
    stop = asyncio.Event()
    watchers = [asyncio.create_task(_watch(net, p, stop)) for p in probes]
    committed: list[Person] = []
    refused: Counter = Counter()
    answer_times: list[float] = []
    bodies = [
        {"persons": [{"resident_code": p.code}], "new_address": address_in(p.destination, rng), "move_date": today, "notified_date": today}
        for p in movers
    ]

    async def fire(i: int) -> None:
        person = movers[i]
        sent = time.perf_counter()
        try:
            status, answer = await driver.post(f"{_rrs(net, person.destination)}/v1/move-ins", bodies[i])
        except DRIVER_ERRORS as exc:
            refused[type(exc).__name__] += 1
            return
        if status != 201:
            refused[str(status)] += 1
            return
        person.moved_in_at, person.moved_in_wall = time.perf_counter(), time.time()
        person.version = answer[0]["version"]
        answer_times.append(person.moved_in_at - sent)
        committed.append(person)
        national.outstanding[person.code] = person
        origins[person.origin].outstanding[person.code] = person

    started = time.perf_counter()
    issued, lateness = await _paced(len(movers), rate, fire)
    answered = (max(p.moved_in_at for p in committed) - started) if committed else float("nan")
    await _drain(probes, stop, watchers)

    a, b, end_to_end, by_answer = [], [], [], []
    for p in committed:
        at_national, closed = national.seen.get(p.code), origins[p.origin].seen.get(p.code)
        if at_national is not None:
            a.append(at_national - p.moved_in_at)
        if closed is not None:
            b.append(closed - p.moved_in_at)
        if at_national is not None and closed is not None:
            end_to_end.append(max(at_national, closed) - p.moved_in_at)
            by_answer.append((p.moved_in_at, end_to_end[-1]))
    in_thirds = by_third(by_answer)
    figures = {
        "moves (転入) issued": len(movers),
        "target rate /s": rate,
        "achieved rate, issued /s": round(len(movers) / (issued + 1 / rate), 1),
        "achieved rate, 201 answers /s": round(len(committed) / answered, 1) if committed else 0.0,
        "start later than its slot, p99 ms": round(1000 * _percentile(lateness, 0.99), 1),
        "refused or failed (not 201)": sum(refused.values()),
        f"not completed {DEADLINE_SECONDS} s after the load stopped": len(committed) - len(end_to_end),
        "not completed: not active at B nationally (a)": len(committed) - len(a),
        "not completed: record not closed at A (b)": len(committed) - len(b),
        **{f"POST /v1/move-ins answer, {k}": v for k, v in _ms(answer_times).items()},
        **{f"(a) commit at B → active at B nationally, {k}": v for k, v in _ms(a).items()},
        **{f"(b) commit at B → record closed at A, {k}": v for k, v in _ms(b).items()},
        **{f"end to end max(a, b), {k}": v for k, v in _ms(end_to_end).items()},
        **{f"end to end, median ms, moves answered in the {label} third of the run": _ms(part)["median ms"] for label, part in in_thirds.items()},
    }
    if refused:
        figures["refusals by status"] = ", ".join(f"{k}: {v}" for k, v in sorted(refused.items()))
    return figures, committed, {"national": national, **origins}


def _by_direction(committed: list[Person], probes: dict[str, Probe]) -> dict:
    """The same figures split into moves within 東京都 and moves across prefectures."""
    out = {}
    for label, within in (("within a prefecture (千代田区 ↔ 渋谷区)", True), ("across prefectures (東京都 ↔ 大阪府)", False)):
        group = [p for p in committed if (PREFECTURE[p.origin] == PREFECTURE[p.destination]) == within]
        a = [probes["national"].seen[p.code] - p.moved_in_at for p in group if p.code in probes["national"].seen]
        b = [probes[p.origin].seen[p.code] - p.moved_in_at for p in group if p.code in probes[p.origin].seen]
        out[label] = {"moves": len(group), **{f"(a) {k}": v for k, v in _ms(a).items()}, **{f"(b) {k}": v for k, v in _ms(b).items()}}
    return out


async def _stages(net: Network, committed: list[Person]) -> dict:
    """Where the time goes: each hop's own database stamp (transaction start, so a hop shows
    when it began its work) against the 201 at B, as medians; read once, after the run."""
    hops: dict[str, list[float]] = {}

    async def stamps(label: str, database: str, query: str, persons: list[Person]) -> None:
        if not persons:
            return
        by_code = {p.code: p for p in persons}
        async with await _connect(net, database) as conn:
            rows = await (await conn.execute(query, (list(by_code),))).fetchall()
        hops.setdefault(label, []).extend(stamp.timestamp() - by_code[code].moved_in_wall for code, stamp in rows if stamp is not None)

    # birth v1, 転出 v2, 転入 v3: every mover's 転入 is version 3
    history = "select resident_code, received_at from identity_history where resident_code = any(%s) and version = 3"
    for m in PREFECTURE:
        at_b = [p for p in committed if p.destination == m]
        from_a = [p for p in committed if p.origin == m]
        await stamps("1. B's CS applies the 転入", f"cs_{m}", history, at_b)
        await stamps("2. B's CS relay publishes the 転入通知", f"cs_{m}", f"select key, sent_at from outbox where kind = '{NOTICE}' and key = any(%s)", at_b)
        await stamps("3a. A's CS takes the 転入通知 from its inbox topic", f"cs_{m}", f"select resident_code, received_at from notices where kind = '{NOTICE}' and resident_code = any(%s)", from_a)
        await stamps("3b. A's register pulls and applies it (closes the record)", f"rrs_{m}", f"select resident_code, received_at from incoming_notices where kind = '{NOTICE}' and resident_code = any(%s)", from_a)
    for pref in sorted(set(PREFECTURE.values())):
        await stamps("4a. B's prefecture server applies the 転入", f"pref_{pref}", history, [p for p in committed if PREFECTURE[p.destination] == pref])
    await stamps("4b. the national server applies the 転入", "national", history, committed)
    return {label: round(1000 * statistics.median(values), 1) for label, values in sorted(hops.items()) if values}


async def _retries(net: Network, since: datetime) -> dict:
    """Failed outbox delivery passes since ``since``, per tenant: a pass that timed out is
    delivered again (the receiver drops the duplicates), so each one is work done twice."""
    out = {}
    for node in net.nodes.values():
        if node.node.kind not in ("municipal_rrs", "cs_gateway", "prefecture_server", "national_server"):
            continue
        async with await _connect(net, node.node.database) as conn:
            failed, kinds = await (await conn.execute(
                "select coalesce(sum(attempts - 1), 0), string_agg(distinct split_part(last_error, ':', 1), ', ')"
                " from outbox where attempts > 1 and created_at >= %s", (since,))).fetchone()
        if failed:
            out[node.node.id] = f"{failed} ({kinds})"
    return out


async def _reference(net: Network, client: httpx.AsyncClient, driver: Driver) -> tuple[dict, dict]:
    """The same three steps at 1/s on the idle network: the latency the design itself adds
    (relay and pull intervals, hops), to tell it apart from queueing under load."""
    births, people = await _births(net, driver, REFERENCE_COUNT, 1)
    movers, notes = await _prepare_moves(net, client, people)
    moves, committed, _ = await _moves(net, driver, movers, 1)
    keep = ("commit → national row", "(a)", "(b)", "end to end")
    figures = {"moves": moves["moves (転入) issued"], **{f"birth {k}": v for k, v in births.items() if k.startswith(keep)},
               **{k: v for k, v in moves.items() if k.startswith(keep)}}
    figures["refused, failed or not completed"] = (births["refused or failed"] + moves["refused or failed (not 201)"]
                                                   + moves[f"not completed {DEADLINE_SECONDS} s after the load stopped"] + len(people) - len(movers))
    return figures, await _stages(net, committed)


async def _whereabouts(net: Network, probes: dict[str, Probe]) -> dict:
    """For moves not completed by the deadline: how far their 転入 got, from each tier's own copy."""
    out: dict[str, int] = {}
    stuck_a = list(probes["national"].outstanding.values())
    if stuck_a:
        out["(a) not completed"] = len(stuck_a)
        for label, database_of in (("of which B's CS holds the 転入", lambda p: f"cs_{p.destination}"),
                                   ("of which B's prefecture server holds it", lambda p: f"pref_{PREFECTURE[p.destination]}"),
                                   ("of which the national server holds it", lambda p: "national")):
            held = 0
            for database in {database_of(p) for p in stuck_a}:
                codes = [p.code for p in stuck_a if database_of(p) == database]
                async with await _connect(net, database) as conn:
                    held += (await (await conn.execute("select count(*) from identity where resident_code = any(%s) and version >= 3", (codes,))).fetchone())[0]
            out[label] = held
    stuck_b = [p for m in PREFECTURE for p in probes[m].outstanding.values()]
    if stuck_b:
        out["(b) not completed"] = len(stuck_b)
        for label, database_of, query in (
            ("of which A's CS holds the 転入通知", lambda p: f"cs_{p.origin}", f"select count(*) from notices where kind = '{NOTICE}' and resident_code = any(%s)"),
            ("of which A's register applied it", lambda p: f"rrs_{p.origin}", f"select count(*) from incoming_notices where kind = '{NOTICE}' and resident_code = any(%s)"),
        ):
            held = 0
            for database in {database_of(p) for p in stuck_b}:
                async with await _connect(net, database) as conn:
                    held += (await (await conn.execute(query, ([p.code for p in stuck_b if database_of(p) == database],))).fetchone())[0]
            out[label] = held
    return out


async def _backlog(net: Network) -> dict:
    """Outbox rows not delivered yet, per tenant: where unfinished moves are waiting."""
    out = {}
    for node in net.nodes.values():
        if node.node.kind in ("municipal_rrs", "cs_gateway", "prefecture_server", "national_server"):
            async with await _connect(net, node.node.database) as conn:
                unsent = (await (await conn.execute("select count(*) from outbox where sent_at is null")).fetchone())[0]
            if unsent:
                out[node.node.id] = unsent
    return out


def _log_warnings(net: Network) -> dict:
    """Warnings in the services' logs that mean work done again or refused: consumers starting their
    topic over ('no longer holds what was read'), failed relay passes, an exhausted connection pool."""
    counts: Counter = Counter()
    for path in (net.root / "logs").glob("*.log"):
        if path.name == "broker.log":
            continue
        with path.open(errors="replace") as lines:
            for line in lines:
                if "no longer holds what was read" in line:
                    counts[f"{path.stem}: inbox partition read again from the beginning"] += 1
                elif line.startswith("sqlalchemy.exc.TimeoutError: QueuePool limit"):
                    counts[f"{path.stem}: no database connection within 30 s (answered 500)"] += 1
                elif "outbox delivery of" in line and "failed" in line:
                    why = ": ".join(line.rsplit("failed: ", 1)[-1].split(": ")[:2]).strip(" :\n")  # e.g. "RuntimeError: CS answered 409"
                    counts[f"{path.stem}: relay pass failed ({why})"] += 1
    return dict(sorted(counts.items()))


async def _run(net: Network, rate: int, seconds: int) -> dict:
    driver = Driver(headers_for=lambda url: net.staff_headers(net.municipality_at(url)))
    try:
        async with httpx.AsyncClient(timeout=60, auth=net.staff_auth()) as client:  # the untimed requests
            reference, reference_stages = await _reference(net, client, driver)
            births, people = await _births(net, driver, rate * seconds, rate)
            movers, notes = await _prepare_moves(net, client, people)
            moves_started = datetime.now(UTC)
            load_before, cpu_before, wall_before = os.getloadavg()[0], time.process_time(), time.perf_counter()
            moves, committed, probes = await _moves(net, driver, movers, rate)
            cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
    finally:
        driver.close()
    notes.append(f"Machine load during the moves: 1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
                 f"(on {os.cpu_count()} cores; other work on the machine shares them). The benchmark's own process used {cpu:.0f} CPU-s "
                 f"of the {wall:.0f} s the move phase took (driver and probes).")
    stages = await _stages(net, committed)
    retries = await _retries(net, moves_started)
    whereabouts = await _whereabouts(net, probes)
    if whereabouts:
        notes.append(f"Outbox rows still undelivered when the benchmark gave up: {await _backlog(net) or 'none'}.")
    return {"whereabouts": whereabouts, "births": births, "moves": moves, "directions": _by_direction(committed, probes), "reference": reference,
            "stages": {"idle network, 1/s": reference_stages, f"{rate}/s": stages}, "retries": retries, "notes": notes}


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-moves-") as tmp:
        net = Network.on_free_ports(Path(tmp))
        try:
            net.start()
            run = asyncio.run(_run(net, RATE, SECONDS))
            run["log warnings"] = _log_warnings(net)
        finally:
            net.stop()
    moves = run["moves"]
    notes = [
        f"Births and moves alike at {RATE}/s for {SECONDS} s; person i is born at A and moves A → B along the i-th of the six ordered pairs "
        "(a third within 東京都, two thirds between 東京都 and 大阪府). The 転出 and the certificates' trip to B happen before the clock starts.",
        "Commit = the 201 answer arriving at the client. (a) = first poll of the national database showing the person active at B; "
        "(b) = first poll of A's register database showing the record removed (closed on the 転入通知). "
        f"Polls every {int(POLL_SECONDS * 1000)} ms ({int(POLL_SECONDS_BACKLOG * 1000)} ms while 100 or more persons are outstanding), "
        "one query per database for all outstanding persons, so each figure includes up to one poll interval.",
        "'Where the time goes' reads each hop's own database stamp after the run (PostgreSQL now(), the start of that hop's transaction) "
        "minus the 201 at B, median over all moves; same machine, same clock.",
        *run["notes"],
    ]
    held = moves["achieved rate, issued /s"] >= 0.95 * RATE and moves["start later than its slot, p99 ms"] < 1000
    if moves["moves (転入) issued"] == 0:
        notes.append("No move was timed: the preparation did not get any person ready (see above).")
    elif not held:
        notes.append(f"The driver could not hold {RATE}/s on this machine: it issued {moves['achieved rate, issued /s']}/s "
                     f"(p99 {moves['start later than its slot, p99 ms']} ms late against the schedule).")
    if moves["refused or failed (not 201)"] or moves[f"not completed {DEADLINE_SECONDS} s after the load stopped"]:
        notes.append("Some moves were refused or did not complete: see the counts above (zero are expected).")
    return {
        "birth (baseline)": run["births"],
        "move (特例転入)": moves,
        "move, by direction": run["directions"],
        f"moves not completed {DEADLINE_SECONDS} s after the load stopped: how far they got": run["whereabouts"] or {"none": 0},
        f"reference: births and moves at 1/s on the idle network ({REFERENCE_COUNT} each)": run["reference"],
        "where the time goes: median ms after the 201 at B": run["stages"],
        "failed outbox delivery passes during the moves (retried)": run["retries"] or {"none": 0},
        "warnings in the services' logs, whole run": run["log warnings"] or {"none": 0},
        "notes": notes,
    }


if __name__ == "__main__":
    print(json.dumps(main(), ensure_ascii=False, indent=1))
