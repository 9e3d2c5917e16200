"""The synthetic population: valid bodies, realistic shares, deterministic for a seed."""

from __future__ import annotations

import re
from collections import Counter
from itertools import islice

from contracts.identity import IdentityChange
from contracts.register import RegisterResident
from services.common.gazetteer import neighborhoods
from services.population import Identifiers, PopulationSpec, households, materialise, tier_rows

SPEC = PopulationSpec(seed=11, municipalities=("131016", "131130", "272035"))


def people(spec: PopulationSpec, n: int) -> list[dict]:
    return [body for household in households(spec, n) for body in household.members]


def test_same_seed_same_population_and_another_seed_another():
    assert people(SPEC, 500) == people(SPEC, 500)
    other = people(PopulationSpec(seed=12, municipalities=SPEC.municipalities), 500)
    assert other != people(SPEC, 500)


def test_every_person_fits_the_register_contract_with_a_real_address():
    bodies = people(SPEC, 3000)
    assert len(bodies) == 3000
    for body in bodies:
        cmd = RegisterResident.model_validate(body)
        assert cmd.address.municipality_code in SPEC.municipalities
        postal = cmd.address.postal_code
        assert any(postal == p and cmd.address.text.startswith(text) for p, text in neighborhoods(cmd.address.municipality_code[:5]))
        assert cmd.birth_date <= SPEC.as_of


def test_households_names_and_foreign_residents_look_like_japan():
    groups = list(households(SPEC, 20_000))
    sizes = Counter(min(len(h.members), 5) for h in groups)
    shares = {k: sizes[k] / len(groups) for k in sizes}
    assert 0.33 < shares[1] < 0.43 and 0.23 < shares[2] < 0.33 and 0.03 < shares[5] < 0.08, shares
    bodies = [b for h in groups for b in h.members]
    foreign = [b for b in bodies if "foreign_resident" in b]
    assert 0.015 < len(foreign) / len(bodies) < 0.04
    for body in foreign:
        assert re.fullmatch(r"[A-Z]{2}[0-9]{8}[A-Z]{2}", body["foreign_resident"]["residence_card_number"])
        assert re.fullmatch(r"[A-Z ]+", body["name"]["family_name"])
    assert any("alias" in b for b in foreign)
    beyond = [b for b in bodies if any(ord(c) > 0xFFFF or "\uf900" <= c <= "\ufaff" or c == "髙" for c in b["name"]["family_name"])]
    assert beyond, "no names beyond JIS X 0208"
    japanese = [b for b in bodies if "family_register" in b]
    assert all(re.fullmatch("[\u30a1-\u30fc]+", b["name"]["family_name_kana"]) for b in japanese)
    # members of a household share its address and name the household
    for household in groups[:500]:
        head, *rest = household.members
        assert head["household"] == {"relationship": "世帯主"}
        assert all(m["household"]["household_id"] == str(household.id) and m["address"] == head["address"] for m in rest)


def test_bulk_rows_carry_valid_identity_changes_at_version_one():
    from datetime import UTC, datetime

    ids = Identifiers(SPEC.seed)
    changes = []
    for household in islice(households(SPEC, 300), 100):
        changes += materialise(SPEC, household, ids, datetime(2026, 10, 1, tzinfo=UTC))[3]
    rows = tier_rows(changes)
    codes = [r[0] for r in rows.identity]
    assert len(set(codes)) == len(codes)
    for identity, history in zip(rows.identity, rows.history, strict=True):
        change = IdentityChange.model_validate_json(identity[-1])
        assert change.version == 1 and change.resident_code == identity[0] == history[0]
        assert str(change.event_id) == history[2]
