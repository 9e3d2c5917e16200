"""Related municipal affairs on the real network (R-REL-1): 住登外者 linked to the 住民票 when they
move in, and 印鑑登録 ending by itself when the holder moves out, dies or is removed."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import httpx

from tests.conftest import wait_until
from tests.e2e.helpers import address_in, birth_body, register

CHIYODA, SHIBUYA, TOYONAKA = "131016", "131130", "272035"
def _today() -> str:
    """Today, asked when it is needed: a suite that runs across midnight must not date a move before a birth."""
    return date.today().isoformat()


def rrs(network, municipality: str) -> str:
    return network.url(f"municipal_rrs.{municipality}")


def adult(network, municipality: str, *, years: int = 40, **names) -> dict:
    """A resident recorded ex officio as an adult (a seal needs the holder to be 15)."""
    born = date.today() - timedelta(days=365 * years + 30)
    body = birth_body(municipality, born=born, **names)
    body.update(reason="ex_officio_record", became_resident_on=_today())
    return register(network, municipality, body)


def seal(network, municipality: str, holder: str, *, staff: str = "seal-clerk") -> httpx.Response:
    return httpx.post(f"{rrs(network, municipality)}/v1/seal-registrations", auth=network.staff_auth(username=staff), timeout=10,
                      json={"holder_resident_code": holder, "impression": "「山田」丸印 直径15mm", "registered_on": _today()})


def seal_state(network, municipality: str, number: int) -> dict:
    response = httpx.get(f"{rrs(network, municipality)}/v1/seal-registrations/{number}", auth=network.staff_auth(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def non_resident_body(person: dict | None = None, *, with_number: bool = True, **overrides) -> dict:
    body = {
        "name": {"family_name": "固定", "given_name": "資産", "family_name_kana": "コテイ", "given_name_kana": "シサン"},
        "birth_date": "1970-04-01", "address_text": "北海道札幌市中央区北1条西2丁目1", "address_municipality_code": "011002",
        "reason": "property_tax", "note": "市内に土地を所有",
    }
    if person is not None:
        body.update(name=person["name"], birth_date=person["birth_date"], sex=person["sex"])
        if with_number:
            body["individual_number"] = person["individual_number"]
    body.update(overrides)
    return body


def test_seal_registration_rules_and_abolition(network, db):
    holder = adult(network, SHIBUYA)
    code = holder["resident_code"]
    created = seal(network, SHIBUYA, code)
    assert created.status_code == 201, created.text
    registration = created.json()
    assert registration["status"] == "registered" and registration["registered_by"] == "seal-clerk"

    # one registered seal per person
    second = seal(network, SHIBUYA, code)
    assert second.status_code == 409 and second.headers["content-type"].startswith("application/problem+json")
    assert second.json()["type"].endswith("/registry-rule") and "one registered seal" in second.json()["detail"]
    # a child under 15 cannot register one
    child = register(network, SHIBUYA)
    young = seal(network, SHIBUYA, child["resident_code"])
    assert young.status_code == 409 and "15" in young.json()["detail"]
    # nobody by that code
    assert seal(network, SHIBUYA, "12345678901").status_code in (404, 422)
    # the register's automatic reasons cannot be chosen by a clerk
    forged = httpx.post(f"{rrs(network, SHIBUYA)}/v1/seal-registrations/{registration['registration_number']}/abolition", auth=network.staff_auth(),
                        json={"reason": "died", "ended_on": _today()}, timeout=10)
    assert forged.status_code == 422 and forged.json()["type"].endswith("/invalid-request")

    ended = httpx.post(f"{rrs(network, SHIBUYA)}/v1/seal-registrations/{registration['registration_number']}/abolition", auth=network.staff_auth(),
                       json={"reason": "abolished", "ended_on": _today(), "explanation": "本人からの廃止申請"}, timeout=10)
    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == "ended" and ended.json()["end_reason"] == "abolished" and ended.json()["ended_by"] == "clerk"
    again = httpx.post(f"{rrs(network, SHIBUYA)}/v1/seal-registrations/{registration['registration_number']}/abolition", auth=network.staff_auth(),
                       json={"reason": "abolished", "ended_on": _today()}, timeout=10)
    assert again.status_code == 409
    # after the abolition a new seal can be registered; the list shows both, newest first
    renewed = seal(network, SHIBUYA, code)
    assert renewed.status_code == 201
    listed = httpx.get(f"{rrs(network, SHIBUYA)}/v1/seal-registrations", auth=network.staff_auth(), params={"holder_resident_code": code}, timeout=10).json()
    assert [s["registration_number"] for s in listed] == [renewed.json()["registration_number"], registration["registration_number"]]
    assert db(f"rrs_{SHIBUYA}").value("select count(*) from seal_registrations where holder_resident_code = %s and status = 'registered'", (code,)) == 1


def test_seal_registration_ends_when_the_holder_moves_out_dies_or_is_removed(network, db):
    mover, deceased, removed, stayer = (adult(network, CHIYODA) for _ in range(4))
    numbers = {}
    for person in (mover, deceased, removed, stayer):
        response = seal(network, CHIYODA, person["resident_code"])
        assert response.status_code == 201, response.text
        numbers[person["resident_code"]] = response.json()["registration_number"]

    out = httpx.post(f"{rrs(network, CHIYODA)}/v1/move-outs", auth=network.staff_auth(), timeout=20, json={
        "resident_codes": [mover["resident_code"]], "destination": address_in(TOYONAKA), "planned_date": _today(), "notified_date": _today()})
    assert out.status_code == 201, out.text
    died = httpx.post(f"{rrs(network, CHIYODA)}/v1/residents/{deceased['resident_code']}/death", auth=network.staff_auth(), json={"death_date": _today()}, timeout=10)
    assert died.status_code == 200, died.text
    gone = httpx.post(f"{rrs(network, CHIYODA)}/v1/residents/{removed['resident_code']}/removal", auth=network.staff_auth("supervisor"),
                      json={"removal_date": _today(), "explanation": "居住の実態がないため"}, timeout=10)
    assert gone.status_code == 200, gone.text

    expected = {mover["resident_code"]: ("moved_out", "clerk"), deceased["resident_code"]: ("died", "clerk"), removed["resident_code"]: ("removed", "supervisor")}
    for code, (reason, by) in expected.items():
        state = seal_state(network, CHIYODA, numbers[code])
        assert (state["status"], state["end_reason"], state["ended_on"], state["ended_by"]) == ("ended", reason, _today(), by), state
    assert seal_state(network, CHIYODA, numbers[stayer["resident_code"]])["status"] == "registered"
    # a holder who left the register cannot register a new seal
    refused = seal(network, CHIYODA, deceased["resident_code"])
    assert refused.status_code == 409 and "not an active resident" in refused.json()["detail"]
    # the seal ended in the same transaction as the register's change: the table agrees with the record
    rows = db(f"rrs_{CHIYODA}").rows(
        "select s.end_reason, r.status from seal_registrations s join residents r on r.resident_code = s.holder_resident_code where s.registration_number = any(%s)",
        ([numbers[c] for c in expected],))
    assert sorted(rows) == sorted([("died", "deceased"), ("moved_out", "moving_out"), ("removed", "removed")])


def test_non_resident_is_linked_to_the_resident_record_when_they_move_in(network, db):
    # a property-tax payer of Toyonaka who lives in Chiyoda, known to Toyonaka's tax office by their 個人番号
    person = adult(network, CHIYODA)
    code = person["resident_code"]
    created = httpx.post(f"{rrs(network, TOYONAKA)}/v1/non-residents", auth=network.staff_auth(), json=non_resident_body(person, address_text=person["address"]["text"],
                         address_municipality_code=CHIYODA), timeout=10)
    assert created.status_code == 201, created.text
    non_resident = created.json()
    assert non_resident["status"] == "active" and non_resident["number"] >= 1 and non_resident["registered_by"] == "clerk"
    # the same person cannot be managed twice
    twice = httpx.post(f"{rrs(network, TOYONAKA)}/v1/non-residents", auth=network.staff_auth(), json=non_resident_body(person, address_municipality_code=CHIYODA), timeout=10)
    assert twice.status_code == 409 and twice.json()["type"].endswith("/registry-rule")

    out = httpx.post(f"{rrs(network, CHIYODA)}/v1/move-outs", auth=network.staff_auth(), timeout=20, json={
        "resident_codes": [code], "destination": address_in(TOYONAKA), "planned_date": _today(), "notified_date": _today()})
    assert out.status_code == 201, out.text
    wait_until(lambda: code in {c["resident_code"] for c in httpx.get(f"{rrs(network, TOYONAKA)}/v1/move-reservations", auth=network.staff_auth(), timeout=10).json()},
               what="転入予約 at Toyonaka")
    moved_in = httpx.post(f"{rrs(network, TOYONAKA)}/v1/move-ins", auth=network.staff_auth(), timeout=20, json={
        "persons": [{"resident_code": code}], "new_address": address_in(TOYONAKA), "move_date": _today(), "notified_date": _today()})
    assert moved_in.status_code == 201, moved_in.text

    linked = httpx.get(f"{rrs(network, TOYONAKA)}/v1/non-residents/{non_resident['non_resident_id']}", auth=network.staff_auth(), timeout=10).json()
    assert linked["status"] == "linked" and linked["linked_resident_code"] == code
    assert linked["linked_by"] == "clerk (転入時に個人番号で自動連携)"
    by_resident = httpx.get(f"{rrs(network, TOYONAKA)}/v1/non-residents", auth=network.staff_auth(), params={"linked_resident_code": code}, timeout=10).json()
    assert [p["non_resident_id"] for p in by_resident] == [non_resident["non_resident_id"]]
    # a resident is not a 住登外者: registering them again is refused
    resident_now = httpx.post(f"{rrs(network, TOYONAKA)}/v1/non-residents", auth=network.staff_auth(), json=non_resident_body(person), timeout=10)
    assert resident_now.status_code == 409 and code in resident_now.json()["detail"]
    assert db(f"rrs_{TOYONAKA}").value("select linked_resident_code from non_residents where id = %s", (uuid.UUID(non_resident["non_resident_id"]),)) == code


def test_non_resident_without_a_number_is_linked_by_staff_not_by_name(network):
    # without a 個人番号 nothing is linked by name: staff see candidates and confirm
    person = adult(network, SHIBUYA)
    created = httpx.post(f"{rrs(network, SHIBUYA)}/v1/non-residents", auth=network.staff_auth(), json=non_resident_body(person, with_number=False), timeout=10)
    assert created.status_code == 201, created.text
    nr = created.json()
    assert nr["status"] == "active" and nr["individual_number"] is None
    candidates = httpx.get(f"{rrs(network, SHIBUYA)}/v1/non-residents/{nr['non_resident_id']}/link-candidates", auth=network.staff_auth(), timeout=10).json()
    assert person["resident_code"] in [c["resident_code"] for c in candidates]

    # a resident with another birth date is not the same person
    other = adult(network, SHIBUYA, years=25)
    wrong = httpx.post(f"{rrs(network, SHIBUYA)}/v1/non-residents/{nr['non_resident_id']}/link", auth=network.staff_auth(), json={"resident_code": other["resident_code"]}, timeout=10)
    assert wrong.status_code == 409 and "birth dates differ" in wrong.json()["detail"]
    linked = httpx.post(f"{rrs(network, SHIBUYA)}/v1/non-residents/{nr['non_resident_id']}/link", auth=network.staff_auth(username="clerk-link"), json={"resident_code": person["resident_code"]},
                        timeout=10)
    assert linked.status_code == 200, linked.text
    assert (linked.json()["status"], linked.json()["linked_resident_code"], linked.json()["linked_by"]) == ("linked", person["resident_code"], "clerk-link")
    again = httpx.post(f"{rrs(network, SHIBUYA)}/v1/non-residents/{nr['non_resident_id']}/link", auth=network.staff_auth(), json={"resident_code": person["resident_code"]}, timeout=10)
    assert again.status_code == 409

    # search by reading and status; unknown ids are 404 problems; a 住登外者 living here is refused
    found = httpx.get(f"{rrs(network, SHIBUYA)}/v1/non-residents", auth=network.staff_auth(), params={"kana": person["name"]["family_name_kana"], "status": "linked"}, timeout=10).json()
    assert nr["non_resident_id"] in [p["non_resident_id"] for p in found]
    missing = httpx.get(f"{rrs(network, SHIBUYA)}/v1/non-residents/{uuid.uuid4()}", auth=network.staff_auth(), timeout=10)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
    local = httpx.post(f"{rrs(network, SHIBUYA)}/v1/non-residents", auth=network.staff_auth(), json=non_resident_body(address_municipality_code=SHIBUYA), timeout=10)
    assert local.status_code == 409 and "outside this municipality" in local.json()["detail"]
