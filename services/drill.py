"""Disaster-recovery drill (the 2011 lesson, R-OPS-1): wipe a municipality's register and
CS databases for real, and restore the 本人確認情報 of its residents from the network.

After the 2011 earthquake some municipalities lost their resident-record
systems; the copies the network held were what their registers were rebuilt
from. The drill does exactly that, on purpose:

1. signs a restore authorisation with the **municipality's own key**
   (``rrs-<code>``, scope ``disaster-recovery``) and asks the tier above (its
   prefecture server, or the national server) what it holds — nothing is
   wiped unless the network answers;
2. records what the register and the CS hold now (to prove the restore);
3. locks the two tenant roles out (``NOLOGIN``), ends their sessions, drops
   everything they hold (``DROP SCHEMA public CASCADE``, or with
   ``--drop-database`` the whole databases), creates them empty and runs
   every migration as the tenant role;
4. streams everyone registered in the municipality from the network (the
   newest of the current store and the last snapshot, with history) and
   writes the CS's store and the register's records with COPY; a person the
   network's protection marker says a DV support measure protects is restored
   as protected (``restored_protections``) — the measure's details never left
   the register, so staff re-enter them, and until then every request about
   the person but their own is reviewed;
5. lets the roles log in again (the running services reconnect), and
   reports what was restored, what the network never carried, and how long
   it took.

The CS's position on its inbox topic is set to the end of the log, so
messages received before the disaster are not taken a second time.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from contracts.identity import ChangeReason, IdentityChange
from contracts.recovery import RECOVERY_SCOPE, RecoveredProtection, RecoverySummary
from contracts.register import Relationship
from services.common.topology import Node, Topology

#: Identity items of the register that the network carries (compared by the drill).
CARRIED_RESIDENT_COLUMNS = (
    "resident_code", "individual_number", "version", "status", "municipality_code", "family_name", "given_name", "family_name_kana",
    "given_name_kana", "former_surname", "alias", "birth_date", "sex", "postal_code", "address_text", "last_change", "last_change_date", "pending_move",
)
CS_IDENTITY_COLUMNS = (
    "resident_code", "individual_number", "version", "status", "municipality_code", "family_name", "given_name", "family_name_kana",
    "given_name_kana", "birth_date", "sex", "address_text", "last_reason", "last_change_date", "payload",
)
#: In the register, a record closed by a completed move (転出確定): the network knows the person elsewhere now.
CLOSED_BY_MOVE = "status = 'removed' and last_change = 'move_out' and pending_move is null"

NEVER_CARRIED = (
    "世帯 and 続柄: each restored person heads a provisional household of their own until staff re-form the households",
    "本籍・筆頭者 (family-register items)",
    "foreign residents' 国籍・地域, 在留資格, 在留期間 and its end, 在留カード番号, 特別永住者",
    "the furigana of 旧氏",
    "住民となった年月日 and 前住所 are derived from the network's changes, not restored",
    "changes the network never sees (世帯変更, 転出確定) and the register's history entries of them",
    "history before a person moved in from another municipality (it stays with the municipality of origin)",
    "DV等支援措置: the measures' details (kind, basis, 相手方, history, deliveries) are never carried — only the protection marker is; "
    "each marked person is restored as protected, and staff must re-enter the measure from the victim's application",
    "staff accounts, screen sessions, the access log of record reads and the record of portal-credential identity checks: "
    "the operator enrols the staff again (services.cli staff add)",
)


@dataclass
class DrillReport:
    municipality_code: str
    provider: str
    summary: RecoverySummary | None = None
    persons_restored: int = 0
    from_snapshot: int = 0
    versions_restored: int = 0
    protections_restored: int = 0  # persons the network's marker said a DV support measure protects: protected again, details to re-enter
    timings: dict[str, float] = field(default_factory=dict)
    never_carried: tuple[str, ...] = NEVER_CARRIED
    lost_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # database → table → rows not restored
    not_restorable_persons: dict[str, int] = field(default_factory=dict)
    verification: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)

    @property
    def restore_seconds(self) -> float:
        return sum(v for k, v in self.timings.items() if k in ("wipe", "migrate", "restore", "reopen"))


class DrillRefused(RuntimeError):
    """The drill stopped before anything was wiped."""


@dataclass
class NetworkAccess:
    """What an operator of the local network has: addresses, the superuser, tenant passwords, the municipality's key."""

    data: Path
    nodes: dict[str, str]
    pg_host: str
    pg_port: int
    kafka: str

    @classmethod
    def from_data_dir(cls, data: Path) -> "NetworkAccess":
        addresses = json.loads((data / "network.json").read_text())
        host, port = addresses["postgres"].rsplit(":", 1)
        return cls(data=data, nodes=addresses["nodes"], pg_host=host, pg_port=int(port), kafka=addresses["kafka"])

    def secret(self, name: str) -> str:
        return (self.data / "postgres" / "secrets" / f"{name}.password").read_text().strip()

    def admin(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.pg_host, port=self.pg_port, user="postgres", password=self.secret("postgres"), dbname=database, autocommit=True)

    def as_tenant(self, database: str) -> psycopg.Connection:
        """The superuser acting as the tenant role: what it creates is the tenant's (works while the role may not log in)."""
        return psycopg.connect(host=self.pg_host, port=self.pg_port, user="postgres", password=self.secret("postgres"), dbname=database, options=f"-c role={database}")

    def tenant_url(self, database: str) -> str:
        from urllib.parse import quote

        return f"postgresql+psycopg://postgres:{quote(self.secret('postgres'), safe='')}@{self.pg_host}:{self.pg_port}/{database}?options={quote(f'-c role={database}', safe='')}"

    def municipality_token(self, municipality_code: str, audience: str) -> str:
        from services.common.tokens import load_private_key, sign_token

        key = load_private_key(self.data / "keys" / "private" / f"rrs-{municipality_code}.key")
        return sign_token(key, issuer=f"rrs-{municipality_code}", audience=audience, lifetime_seconds=300, claims={"scope": RECOVERY_SCOPE, "municipality": municipality_code})


def provider_of(topology: Topology, municipality_code: str) -> str:
    return topology.upstream_of_cs(municipality_code)


# --- reading and comparing ----------------------------------------------------------------------------------


def _table_counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = [r[0] for r in conn.execute("select tablename from pg_tables where schemaname = 'public' and tablename <> 'alembic_version' order by 1")]
    return {t: conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(t))).fetchone()[0] for t in tables}


def read_state(access: NetworkAccess, municipality_code: str) -> dict:
    """What the register and the CS hold of the municipality's residents (the items the network carries)."""
    rrs, cs = Node(kind="municipal_rrs", tenant=municipality_code).database, Node(kind="cs_gateway", tenant=municipality_code).database
    with access.as_tenant(rrs) as conn:
        residents = {r[0]: r for r in conn.execute(
            f"select {', '.join(CARRIED_RESIDENT_COLUMNS)} from residents where not ({CLOSED_BY_MOVE})").fetchall()}
        closed_by_move = conn.execute(f"select count(*) from residents where {CLOSED_BY_MOVE}").fetchone()[0]
        rrs_counts = _table_counts(conn)
    with access.as_tenant(cs) as conn:
        identity = {r[0]: r for r in conn.execute(f"select {', '.join(CS_IDENTITY_COLUMNS)} from identity where municipality_code = %s", (municipality_code,))}
        history = {(r[0], r[1]): (r[2], r[3]) for r in conn.execute(
            "select h.resident_code, h.version, h.event_id, h.payload from identity_history h join identity i using (resident_code) where i.municipality_code = %s", (municipality_code,))}
        elsewhere = conn.execute("select count(*) from identity where municipality_code <> %s", (municipality_code,)).fetchone()[0]
        cs_counts = _table_counts(conn)
    return {"residents": residents, "identity": identity, "history": history, "closed_by_move": closed_by_move, "cs_elsewhere": elsewhere,
            "counts": {rrs: rrs_counts, cs: cs_counts}}


def verify(before: dict, after: dict) -> tuple[dict[str, int], list[str]]:
    """Every item the network carried equals what was there before the wipe."""
    figures = {"register persons before": len(before["residents"]), "register persons after": len(after["residents"]),
               "CS persons before": len(before["identity"]), "CS persons after": len(after["identity"])}
    differences = []
    for code, row in before["residents"].items():
        restored = after["residents"].get(code)
        if restored is None:
            differences.append(f"register: {code} not restored")
            continue
        for column, old, new in zip(CARRIED_RESIDENT_COLUMNS, row, restored, strict=True):
            if column == "pending_move":
                old, new = (json.loads(old) if old else None), (json.loads(new) if new else None)
            if old != new:
                differences.append(f"register: {code} {column}: {old!r} → {new!r}")
    for code, row in before["identity"].items():
        restored = after["identity"].get(code)
        if restored is None:
            differences.append(f"CS: {code} not restored")
            continue
        for column, old, new in zip(CS_IDENTITY_COLUMNS, row, restored, strict=True):
            if column == "payload":
                old, new = json.loads(old), json.loads(new)
            if old != new:
                differences.append(f"CS: {code} {column} differs")
    missing_versions = [k for k, (event, payload) in before["history"].items()
                        if k not in after["history"] or after["history"][k][0] != event or json.loads(after["history"][k][1]) != json.loads(payload)]
    differences += [f"CS history: {code} v{version} not restored as it was" for code, version in missing_versions]
    figures["CS history versions before"] = len(before["history"])
    figures["CS history versions restored as they were"] = len(before["history"]) - len(missing_versions)
    figures["items differing"] = len(differences)
    return figures, differences


# --- wiping and restoring -----------------------------------------------------------------------------------


def wipe(access: NetworkAccess, databases: list[str], timings: dict[str, float] | None = None, *, whole_database: bool = False) -> None:
    """Lock the tenant roles out and drop everything they had: the ``public`` schema (default) or the whole
    database; then the empty schema, owned and granted as ``ensure_tenant`` leaves it.

    Dropping a database makes PostgreSQL checkpoint the whole cluster (every tenant's dirty pages), which
    took tens of seconds on a busy machine; dropping the schema touches only this tenant.
    """
    timings = timings if timings is not None else {}

    def timed(conn, label: str, statement, params=None) -> None:
        started = time.monotonic()
        conn.execute(statement, params)
        timings[label] = timings.get(label, 0.0) + time.monotonic() - started

    with access.admin() as admin:
        for db in databases:
            role = sql.Identifier(db)
            timed(admin, "wipe: lock the role out", sql.SQL("alter role {} nologin").format(role))
            timed(admin, "wipe: end the role's sessions", "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", (db,))
            if whole_database:
                timed(admin, "wipe: drop database", sql.SQL("drop database if exists {} with (force)").format(role))
                timed(admin, "wipe: create database", sql.SQL("create database {} owner {}").format(role, role))
                admin.execute(sql.SQL("revoke all on database {} from public").format(role))
                admin.execute(sql.SQL("grant connect on database {} to {}").format(role, role))
        for db in databases:
            with access.admin(db) as conn:
                if not whole_database:
                    timed(conn, "wipe: drop schema", "drop schema public cascade")
                    conn.execute("create schema public authorization pg_database_owner")
                conn.execute("revoke all on schema public from public")
                conn.execute(sql.SQL("grant all on schema public to {}").format(sql.Identifier(db)))


def reopen(access: NetworkAccess, databases: list[str]) -> None:
    with access.admin() as admin:
        for db in databases:
            admin.execute(sql.SQL("alter role {} login").format(sql.Identifier(db)))


def migrate(access: NetworkAccess, databases: dict[str, str]) -> None:
    """Every migration of each service, run as the tenant role (database → service kind)."""
    from services.common.db import run_migrations
    from services.network import REPO_ROOT

    for db, kind in databases.items():
        run_migrations(REPO_ROOT / "services" / kind, access.tenant_url(db))


def _previous_and_since(changes: list[IdentityChange], municipality_code: str) -> tuple[str | None, date]:
    """前住所 and 住民となった年月日, as far as the network's changes tell."""
    previous = None
    for before, after in zip(changes, changes[1:]):
        if before.identity.address.text != after.identity.address.text:
            previous = before.identity.address.text
    arrivals = [c for c in changes if c.municipality_code == municipality_code and c.reason in (ChangeReason.birth, ChangeReason.move_in, ChangeReason.ex_officio_record)]
    since = arrivals[-1].change_date if arrivals else changes[0].change_date
    return previous, since


def register_rows(municipality_code: str, changes: list[IdentityChange]):
    """The register's household, record and history rows of one person rebuilt from the network's changes."""
    from contracts.register import ResidentRecord
    from services.municipal_rrs.domain import Resident
    from services.municipal_rrs.mapping import to_row_values

    current = changes[-1]
    ident = current.identity
    household_id = uuid.uuid4()
    previous, since = _previous_and_since(changes, municipality_code)

    def resident_at(change: IdentityChange, sequence: int) -> Resident:
        i = change.identity
        return Resident(
            resident_code=change.resident_code, individual_number=i.individual_number, municipality_code=change.municipality_code, name=i.name,
            birth_date=i.birth_date, sex=i.sex, address=i.address, household_id=household_id, relationship=Relationship.head,
            became_resident_on=max(since, i.birth_date), former_surname=i.former_surname, alias=i.alias, previous_address=previous,
            status=change.status, version=change.version, sequence=sequence, last_change=change.reason, last_change_date=change.change_date,
            pending_move=change.move if change.reason is ChangeReason.move_out and change.status.value in ("moving_out", "removed") else None,
        )

    resident = resident_at(current, len(changes))
    # every item comes from a change validated above: the record is assembled, not validated again
    record = ResidentRecord.model_construct(**{f: getattr(resident, f) for f in ResidentRecord.model_fields if hasattr(resident, f)}, head_of_household=None)
    history = []
    for n, c in enumerate(changes, start=1):
        i = c.identity
        at = record if c is current else record.model_copy(update={
            "version": c.version, "status": c.status, "name": i.name, "former_surname": i.former_surname, "alias": i.alias, "birth_date": i.birth_date,
            "sex": i.sex, "address": i.address, "last_change": c.reason, "last_change_date": c.change_date,
            "pending_move": c.move if c.reason is ChangeReason.move_out and c.status.value in ("moving_out", "removed") else None,
        })
        history.append((c.resident_code, n, c.version, c.reason.value, c.change_date, c.notified_date, c.recorded_at, "disaster-recovery", at.model_dump_json()))
    assert ident.resident_code == resident.resident_code
    return (household_id,), to_row_values(resident), history


def inbox_end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Where the CS's inbox topic ends now (messages before the disaster are not taken again)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from services.common.broker_security import broker_client_options

    async def ends() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **broker_client_options())
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()} if tps else {}
        finally:
            await consumer.stop()

    return asyncio.run(ends())


Progress = Callable[[str, int, int | None], None]  # (step, done, total)


def restore(access: NetworkAccess, municipality_code: str, provider: str, token: str, *, on_progress: Progress, report: DrillReport) -> None:
    """Stream the network's copy and write the CS's store and the register's records (one transaction each)."""
    from services.common.identity_store import _current_values
    from services.population import HISTORY_COLUMNS, RRS_HISTORY_COLUMNS, copy_rows

    rrs, cs = Node(kind="municipal_rrs", tenant=municipality_code).database, Node(kind="cs_gateway", tenant=municipality_code).database
    batch: list[tuple[dict, list[IdentityChange]]] = []
    with access.as_tenant(rrs) as register, access.as_tenant(cs) as gateway, register.transaction(), gateway.transaction():
        identity_columns = None

        def flush() -> None:
            nonlocal identity_columns
            households, residents, history, ident_rows, ident_history, protections = [], [], [], [], [], []
            for line, changes in batch:
                if (protection := line.get("protection")) is not None:
                    marker = RecoveredProtection.model_validate(protection)
                    if marker.resident_code != changes[-1].resident_code:
                        raise DrillRefused(f"{provider} sent a protection marker of {marker.resident_code} with the record of {changes[-1].resident_code}")
                    protections.append((marker.resident_code, marker.valid_until, marker.as_of, provider))
                household, values, entries = register_rows(municipality_code, changes)
                households.append(household)
                residents.append(values)
                history += entries
                current = changes[-1]
                row = _current_values(current, current.model_dump_json())
                identity_columns = identity_columns or tuple(row)
                ident_rows.append(tuple(row[c] for c in identity_columns))
                ident_history += [(c.resident_code, c.version, str(c.event_id), c.model_dump_json()) for c in changes]
            columns = tuple(residents[0])
            copy_rows(register, "households", ("id",), households)
            copy_rows(register, "residents", columns, [tuple(v[c] for c in columns) for v in residents])
            copy_rows(register, "resident_history", RRS_HISTORY_COLUMNS, history)
            copy_rows(gateway, "identity", identity_columns, ident_rows)
            copy_rows(gateway, "identity_history", HISTORY_COLUMNS, ident_history)
            if protections:
                copy_rows(register, "restored_protections", ("resident_code", "valid_until", "marker_as_of", "restored_from"), protections)
            report.versions_restored += len(ident_history)
            report.protections_restored += len(protections)
            batch.clear()

        url = f"{access.nodes[provider]}/internal/v1/recovery/{municipality_code}/export"
        total = max(report.summary.persons_current, report.summary.persons_in_snapshot) if report.summary else None
        with httpx.stream("GET", url, headers={"authorization": f"Bearer {token}"}, timeout=httpx.Timeout(60.0, read=600.0)) as response:
            if response.status_code != 200:
                response.read()
                raise DrillRefused(f"{provider} answered {response.status_code}: {response.text[:500]}")
            for line in response.iter_lines():
                if not line:
                    continue
                person = json.loads(line)
                changes = [IdentityChange.model_validate(c) for c in person["history"]]
                if not changes or changes[-1].version != person["current"]["version"]:
                    changes.append(IdentityChange.model_validate(person["current"]))
                batch.append((person, changes))
                report.persons_restored += 1
                report.from_snapshot += person["source"] == "snapshot"
                if len(batch) >= 2000:
                    flush()
                    on_progress("restore", report.persons_restored, total)
            if batch:
                flush()
            on_progress("restore", report.persons_restored, report.persons_restored)
        topic = f"jukinet.cs.{municipality_code}.inbox"
        try:
            ends = inbox_end_offsets(access.kafka, topic)
        except Exception:  # the broker may be down as well: the CS then reads its inbox again from the start
            ends = {}
        for partition, offset in ends.items():
            if offset > 0:
                gateway.execute("insert into consumer_offsets (topic, partition, next_offset, fingerprint, updated_at) values (%s, %s, %s, null, now())", (topic, partition, offset))


def run_drill(data: Path, municipality_code: str, topology: Topology, *, provider: str | None = None, verify_against_before: bool = True,
              whole_database: bool = False, on_progress: Progress = lambda step, done, total: None) -> DrillReport:
    """Wipe the municipality's register and CS databases and restore them from the network; the report says what came back."""
    if topology.municipality(municipality_code) is None:
        raise DrillRefused(f"{municipality_code} is not a municipality of this network")
    access = NetworkAccess.from_data_dir(data)
    provider = provider or provider_of(topology, municipality_code)
    report = DrillReport(municipality_code=municipality_code, provider=provider)
    provider_node = Node(kind=provider.split(".", 1)[0], tenant=provider.split(".", 1)[1])
    def token() -> str:  # signed for each request, when it is made: the wipe and the migration before the restore can outlast a token
        return access.municipality_token(municipality_code, provider_node.party)

    rrs, cs = Node(kind="municipal_rrs", tenant=municipality_code).database, Node(kind="cs_gateway", tenant=municipality_code).database

    def timed(step: str, work):
        on_progress(step, 0, None)
        started = time.monotonic()
        result = work()
        report.timings[step] = time.monotonic() - started
        on_progress(step, 1, 1)
        return result

    def ask() -> RecoverySummary:
        response = httpx.get(f"{access.nodes[provider]}/internal/v1/recovery/{municipality_code}", headers={"authorization": f"Bearer {token()}"}, timeout=30.0)
        if response.status_code != 200:
            raise DrillRefused(f"{provider} refused to say what it holds ({response.status_code}): {response.text[:500]}")
        return RecoverySummary.model_validate_json(response.content)

    report.summary = timed("ask the network", ask)
    before = timed("record before", lambda: read_state(access, municipality_code)) if verify_against_before else None
    details: dict[str, float] = {}
    timed("wipe", lambda: wipe(access, [rrs, cs], details, whole_database=whole_database))
    try:
        timed("migrate", lambda: migrate(access, {rrs: "municipal_rrs", cs: "cs_gateway"}))
        started = time.monotonic()
        restore(access, municipality_code, provider, token(), on_progress=on_progress, report=report)
        report.timings["restore"] = time.monotonic() - started
    finally:
        timed("reopen", lambda: reopen(access, [rrs, cs]))
    report.timings.update(details)
    if before is not None:
        after = timed("verify", lambda: read_state(access, municipality_code))
        report.verification, report.differences = verify(before, after)
        for db, counts in before["counts"].items():
            lost = {t: n - after["counts"][db].get(t, 0) for t, n in counts.items() if n > after["counts"][db].get(t, 0)}
            if lost:
                report.lost_rows[db] = lost
        report.not_restorable_persons = {
            "register records closed by a completed 転出 (known to the network in their new municipality)": before["closed_by_move"],
            "CS copies of persons who moved away": before["cs_elsewhere"],
        }
    return report
