"""The municipal register: every 住民票 item, history, search, households."""

from __future__ import annotations

from datetime import date

import httpx

from contracts.identifiers import is_valid_individual_number, is_valid_resident_code
from tests.conftest import wait_until
from tests.e2e.helpers import address_in, birth_body, register


def _rrs(network, municipality="131130"):
    return network.url(f"municipal_rrs.{municipality}")


def test_household_birth_and_history(network, db):
    head = register(network, "131130")
    assert is_valid_resident_code(head["resident_code"]) and is_valid_individual_number(head["individual_number"])
    child = register(network, "131130", birth_body("131130", family_name=head["name"]["family_name"], family_kana=head["name"]["family_name_kana"], household_id=head["household_id"]))
    assert child["household_id"] == head["household_id"] and child["relationship"] == "子"
    assert child["head_of_household"]["resident_code"] == head["resident_code"]
    members = httpx.get(f"{_rrs(network)}/v1/households/{head['household_id']}", auth=network.staff_auth()).json()
    assert [m["resident_code"] for m in members] == [head["resident_code"], child["resident_code"]]
    # a second head for the same household is a registry-rule violation
    second_head = birth_body("131130", household_id=head["household_id"])
    second_head["household"]["relationship"] = "世帯主"
    refused = httpx.post(f"{_rrs(network)}/v1/residents", auth=network.staff_auth(), json=second_head)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/registry-rule")

    code = head["resident_code"]
    moved = httpx.post(f"{_rrs(network)}/v1/residents/{code}/move-within", auth=network.staff_auth(), json={"new_address": address_in("131130"), "move_date": date.today().isoformat()}).json()
    assert moved["previous_address"] == head["address"]["text"] and moved["version"] == 2
    renamed = httpx.post(f"{_rrs(network)}/v1/residents/{code}/name-change", auth=network.staff_auth(), json={
        "name": {"family_name": "髙橋", "given_name": head["name"]["given_name"], "family_name_kana": "タカハシ", "given_name_kana": head["name"]["given_name_kana"]},
        "former_surname": head["name"]["family_name"], "former_surname_kana": head["name"]["family_name_kana"], "change_date": date.today().isoformat(),
    }).json()
    assert renamed["name"]["family_name"] == "髙橋" and renamed["former_surname"] == head["name"]["family_name"]
    # a household change stays in the municipality: the identity version does not move
    own = httpx.post(f"{_rrs(network)}/v1/residents/{child['resident_code']}/household", auth=network.staff_auth(), json={"household": {"relationship": "世帯主"}, "change_date": date.today().isoformat()})
    assert own.status_code == 200 and own.json()["version"] == 1 and own.json()["household_id"] != head["household_id"]
    dead = httpx.post(f"{_rrs(network)}/v1/residents/{code}/death", auth=network.staff_auth(), json={"death_date": date.today().isoformat()}).json()
    assert dead["status"] == "deceased"
    again = httpx.post(f"{_rrs(network)}/v1/residents/{code}/death", auth=network.staff_auth(), json={"death_date": date.today().isoformat()})
    assert again.status_code == 409

    history = httpx.get(f"{_rrs(network)}/v1/residents/{code}/history", auth=network.staff_auth()).json()
    assert [h["reason"] for h in history] == ["birth", "move_within", "name_change", "death"]
    assert history[1]["recorded_by"] == "clerk"
    wait_until(lambda: db("national").value("select status from identity where resident_code = %s", (code,)) == "deceased", what="death at national")
    assert db("national").value("select family_name from identity where resident_code = %s", (code,)) == "髙橋"
    assert db("national").value("select count(*) from identity_history where resident_code = %s", (code,)) == 4
    assert db("national").value("select version from identity where resident_code = %s", (child["resident_code"],)) == 1


def test_foreign_resident_with_residence_items_and_alias(network, db):
    body = birth_body("272035")
    body.update({
        "reason": "ex_officio_record",
        "name": {"family_name": "NGUYEN", "given_name": "VAN AN"},
        "alias": "阮文安",
        "birth_date": "1995-04-02",
        "became_resident_on": "2026-04-01",
        "family_register": None,
        "foreign_resident": {"nationality": "ベトナム", "residence_status": "技術・人文知識・国際業務", "period_of_stay": "3年", "period_of_stay_ends": "2029-03-31", "residence_card_number": "AB12345678CD"},
    })
    record = register(network, "272035", body)
    assert record["foreign_resident"]["residence_status"] == "技術・人文知識・国際業務" and record["family_register"] is None
    code = record["resident_code"]
    wait_until(lambda: db("national").value("select count(*) from identity where resident_code = %s", (code,)) == 1, what="foreign resident at national")
    stored = db("national").value("select payload from identity where resident_code = %s", (code,))
    assert "阮文安" in stored, "通称 is part of 本人確認情報"
    assert "技術" not in stored and "AB12345678CD" not in stored, "residence status stays in the municipality"


def test_search_by_name_furigana_birth_date_and_address(network):
    rrs = _rrs(network, "131016")
    person = register(network, "131016", birth_body("131016", family_name="𠮷田", family_kana="ヨシダ", born=date(2025, 2, 3)))
    def codes(**params):
        response = httpx.get(f"{rrs}/v1/residents", auth=network.staff_auth(), params=params)
        assert response.status_code == 200, response.text
        return [r["resident_code"] for r in response.json()["residents"]]
    assert person["resident_code"] in codes(name="𠮷田")
    assert person["resident_code"] in codes(kana="ヨシダ", birth_date="2025-02-03")
    assert person["resident_code"] in codes(address=person["address"]["text"][-8:])
    assert person["resident_code"] not in codes(name="𠮷田", birth_date="2025-02-04")
    assert httpx.get(f"{rrs}/v1/residents", auth=network.staff_auth()).status_code == 400
    assert httpx.get(f"{rrs}/v1/residents/{person['resident_code']}", auth=network.staff_auth()).json()["family_register"]["honseki"]
    assert httpx.get(f"{rrs}/v1/residents/00000000000", auth=network.staff_auth()).status_code == 404
