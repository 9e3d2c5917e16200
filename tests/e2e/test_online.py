"""Online notifications signed on the resident's card (R-ONL-1…5): 転出届 with 転入予約, 転入届 with a
residence confirmation, 転居届, a household head filing for members, refusals with a clear reason,
and identity assurance that does not decay."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import wait_until
from tests.e2e.helpers import Card, address_in, birth_body, register

CHIYODA, SHIBUYA, TOYONAKA = "131016", "131130", "272035"
ADULT = date(1985, 6, 1)


def rrs(network, municipality: str) -> str:
    return network.url(f"municipal_rrs.{municipality}")


def cs(network, municipality: str) -> str:
    return network.url(f"cs_gateway.{municipality}")


def adult(network, db, municipality: str, household_id: str | None = None) -> dict:
    person = register(network, municipality, birth_body(municipality, born=ADULT, household_id=household_id))
    wait_until(lambda: db("national").value("select version from identity where resident_code = %s", (person["resident_code"],)) == 1, what="registered nationally")
    return person


def card_for(network, person: dict, municipality: str) -> tuple[Card, dict]:
    card = Card()
    response = httpx.post(f"{rrs(network, municipality)}/v1/residents/{person['resident_code']}/jpki-certificates", auth=network.staff_auth(), json=card.keys(), timeout=10)
    assert response.status_code == 201, response.text
    return card, {c["kind"]: c for c in response.json()["certificates"]}


def signed(certificate: dict, key, content: dict) -> dict:
    payload = json.dumps(content, ensure_ascii=False).encode()
    return {"certificate_pem": certificate["certificate_pem"], "payload": base64.b64encode(payload).decode(),
            "signature": base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()}


def content(kind: str, **fields) -> dict:
    return {"kind": f"{kind}/v1", "filed_at": datetime.now(UTC).isoformat(), "nonce": str(uuid.uuid4()), **fields}


def submit(network, municipality: str, filing: dict) -> httpx.Response:
    return httpx.post(f"{cs(network, municipality)}/v1/online/filings", json=filing, timeout=20)


def settled(network, municipality: str, filing_id: str, *states: str) -> dict:
    def probe():
        receipt = httpx.get(f"{cs(network, municipality)}/v1/online/filings/{filing_id}", timeout=10).json()
        return receipt if receipt["state"] in states else None
    return wait_until(probe, what=f"filing {filing_id} {states}")


def problem_slug(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.json()["type"].rsplit("/", 1)[-1]


def national(db, code: str):
    rows = db("national").rows("select municipality_code, status from identity where resident_code = %s", (code,))
    return rows[0] if rows else None


def test_a_household_moves_online_across_prefectures_with_a_mailed_code(network, db):
    head = adult(network, db, CHIYODA)
    child = register(network, CHIYODA, birth_body(CHIYODA, household_id=head["household_id"]))
    card, certificates = card_for(network, head, CHIYODA)
    signing = certificates["signing"]

    # 転出届 online, for the head and the child, with a 転入予約 at Toyonaka
    out = content("online-move-out", members=[child["resident_code"]], destination=address_in(TOYONAKA), planned_date=(date.today() + timedelta(days=7)).isoformat())
    response = submit(network, CHIYODA, signed(signing, card.signing, out))
    assert response.status_code == 202, response.text
    done = settled(network, CHIYODA, out["nonce"], "completed", "refused")
    assert done["state"] == "completed", done
    for code in (head["resident_code"], child["resident_code"]):
        wait_until(lambda code=code: national(db, code) == (CHIYODA, "moving_out"), what="in transit nationally")
        wait_until(lambda code=code: any(c["resident_code"] == code for c in httpx.get(f"{rrs(network, TOYONAKA)}/v1/move-reservations", auth=network.staff_auth(), timeout=10).json()), what="転入予約 at Toyonaka")

    # 転入届 online at Toyonaka, residence confirmed by a code mailed to the new address
    new_address = address_in(TOYONAKA)
    inward = content("online-move-in", members=[child["resident_code"]], new_address=new_address, move_date=date.today().isoformat(), confirmation="mailed_code")
    response = submit(network, TOYONAKA, signed(signing, card.signing, inward))
    assert response.status_code == 202, response.text
    waiting = settled(network, TOYONAKA, inward["nonce"], "awaiting_confirmation", "refused")
    assert waiting["state"] == "awaiting_confirmation" and "code" in waiting["next_step"], waiting
    letters = httpx.get(f"{rrs(network, TOYONAKA)}/v1/letters", auth=network.staff_auth(), params={"resident_code": head["resident_code"]}, timeout=10).json()
    [letter] = [l for l in letters if inward["nonce"] in l["body"]]
    assert letter["address_text"] == new_address["text"]
    code = re.search(r"([0-9]{6})", letter["body"].split(":", 1)[1]).group(1)

    wrong = "000000" if code != "000000" else "111111"
    response = httpx.post(f"{cs(network, TOYONAKA)}/v1/online/filings/{inward['nonce']}/confirmation", json={"code": wrong}, timeout=10)
    assert response.status_code == 202, response.text
    retry = wait_until(lambda: (r := httpx.get(f"{cs(network, TOYONAKA)}/v1/online/filings/{inward['nonce']}", timeout=10).json())["reason"] and r, what="wrong code answered")
    assert retry["state"] == "awaiting_confirmation" and "does not match" in retry["reason"]
    response = httpx.post(f"{cs(network, TOYONAKA)}/v1/online/filings/{inward['nonce']}/confirmation", json={"code": code}, timeout=10)
    assert response.status_code == 202, response.text
    assert settled(network, TOYONAKA, inward["nonce"], "completed", "refused")["state"] == "completed"
    for person in (head, child):
        wait_until(lambda p=person: national(db, p["resident_code"]) == (TOYONAKA, "active"), what="registered at Toyonaka")
    record = httpx.get(f"{rrs(network, TOYONAKA)}/v1/residents/{head['resident_code']}", auth=network.staff_auth(), timeout=10).json()
    assert record["address"]["text"] == new_address["text"] and record["relationship"] == "世帯主"

    # the address changed: the old signing certificate is revoked, and a filing signed with it is refused
    wait_until(lambda: httpx.get(f"{network.url('national_server.national')}/v1/jpki/certificates/{signing['serial']}/status", timeout=10).json()["status"] == "revoked", what="revoked")
    again = content("online-move-within", new_address=address_in(TOYONAKA), move_date=date.today().isoformat(), confirmation="landlord")
    response = submit(network, TOYONAKA, signed(signing, card.signing, again))
    assert response.status_code in (403, 422) and "revoked" in problem_slug(response)


def test_refusals_are_clear_and_recorded(network, db):
    person = adult(network, db, SHIBUYA)
    card, certificates = card_for(network, person, SHIBUYA)
    signing = certificates["signing"]

    def refusals(reason: str) -> int:
        return db(f"cs_{SHIBUYA}").value("select count(*) from refusals where reason = %s", (reason,))

    # outside the window: more than 30 days before the move
    early = content("online-move-out", destination=address_in(CHIYODA), planned_date=(date.today() + timedelta(days=40)).isoformat())
    before = refusals("outside-online-rules")
    response = submit(network, SHIBUYA, signed(signing, card.signing, early))
    assert response.status_code == 422 and problem_slug(response) == "outside-online-rules"
    assert "30 days before" in response.json()["detail"]
    assert refusals("outside-online-rules") == before + 1

    # a tampered filing: the signature no longer matches
    fine = content("online-move-out", destination=address_in(CHIYODA), planned_date=date.today().isoformat())
    tampered = signed(signing, card.signing, fine)
    tampered["payload"] = base64.b64encode(json.dumps({**fine, "destination": address_in(TOYONAKA)}, ensure_ascii=False).encode()).decode()
    response = submit(network, SHIBUYA, tampered)
    assert response.status_code in (400, 403, 422) and "signature" in problem_slug(response)

    # the authentication certificate does not sign filings
    response = submit(network, SHIBUYA, signed(certificates["authentication"], card.authentication, fine))
    assert response.status_code == 403 and problem_slug(response) == "signing-certificate-required"

    # filing at a municipality where the person is not registered
    response = submit(network, CHIYODA, signed(signing, card.signing, content("online-move-within", new_address=address_in(CHIYODA), move_date=date.today().isoformat(), confirmation="landlord")))
    assert response.status_code == 409 and problem_slug(response) == "not-registered-here"

    # the same signed filing twice
    assert submit(network, SHIBUYA, signed(signing, card.signing, fine)).status_code == 202
    response = submit(network, SHIBUYA, signed(signing, card.signing, fine))
    assert response.status_code == 409 and problem_slug(response) == "replayed-filing"


def test_only_the_head_of_household_files_for_members(network, db):
    head = adult(network, db, CHIYODA)
    member = adult(network, db, CHIYODA, household_id=head["household_id"])
    card, certificates = card_for(network, member, CHIYODA)
    filing = content("online-move-within", members=[head["resident_code"]], new_address=address_in(CHIYODA), move_date=date.today().isoformat(), confirmation="landlord")
    response = submit(network, CHIYODA, signed(certificates["signing"], card.signing, filing))
    assert response.status_code == 202, response.text
    refused = settled(network, CHIYODA, filing["nonce"], "refused", "awaiting_confirmation", "completed")
    assert refused["state"] == "refused" and "head of household" in refused["reason"]


def test_the_trust_limit_forces_an_in_person_check_which_resets_it(network, db):
    person = adult(network, db, SHIBUYA)
    code = person["resident_code"]
    card, certificates = card_for(network, person, SHIBUYA)

    def assurance() -> dict:
        return httpx.get(f"{rrs(network, SHIBUYA)}/v1/residents/{code}/assurance", auth=network.staff_auth(), timeout=10).json()

    def online_move_within(certificate: dict, key) -> httpx.Response:
        filing = content("online-move-within", new_address=address_in(SHIBUYA), move_date=date.today().isoformat(), confirmation="landlord")
        response = submit(network, SHIBUYA, signed(certificate, key, filing))
        if response.status_code == 202:
            assert settled(network, SHIBUYA, filing["nonce"], "awaiting_confirmation")["next_step"]
            confirmed = httpx.post(f"{rrs(network, SHIBUYA)}/v1/online-filings/{filing['nonce']}/residence-confirmed", auth=network.staff_auth(), timeout=10)
            assert confirmed.status_code == 200 and confirmed.json()["state"] == "completed", confirmed.text
        return response

    assert assurance()["consecutive_online_procedures"] == 0  # the card was issued at the counter
    # 1st online procedure: a 転居; the address changed, so the signing certificate is renewed online with the
    # authentication certificate (2nd online procedure)
    assert online_move_within(certificates["signing"], card.signing).status_code == 202
    wait_until(lambda: assurance()["consecutive_online_procedures"] == 1, what="one online procedure counted")
    renewed_key = ec.generate_private_key(ec.SECP256R1())
    renewal = content("online-certificate-renewal", public_key_pem=Card.public_pem(renewed_key))
    response = httpx.post(f"{cs(network, SHIBUYA)}/v1/online/certificate-renewals", json=signed(certificates["authentication"], card.authentication, renewal), timeout=20)
    assert response.status_code == 201, response.text
    renewed = response.json()
    assert renewed["kind"] == "signing"
    wait_until(lambda: assurance()["consecutive_online_procedures"] == 2, what="two online procedures counted")

    # over the municipality's limit (2): the online path refuses and says why
    response = online_move_within(renewed, renewed_key)
    assert response.status_code == 403 and problem_slug(response) == "in-person-check-required"
    assert "in-person identity check" in response.json()["detail"]

    # the counter checks the person face to face: the count starts again and the online path is open
    checked = httpx.post(f"{rrs(network, SHIBUYA)}/v1/residents/{code}/identity-checks", auth=network.staff_auth(), timeout=10)
    assert checked.status_code in (200, 201), checked.text
    assert assurance()["consecutive_online_procedures"] == 0
    assert online_move_within(renewed, renewed_key).status_code == 202


def test_online_moves_within_a_prefecture_and_abroad(network, db):
    person = adult(network, db, CHIYODA)
    code = person["resident_code"]
    card, certificates = card_for(network, person, CHIYODA)
    signing = certificates["signing"]

    out = content("online-move-out", destination=address_in(SHIBUYA), planned_date=date.today().isoformat())
    assert submit(network, CHIYODA, signed(signing, card.signing, out)).status_code == 202
    assert settled(network, CHIYODA, out["nonce"], "completed", "refused")["state"] == "completed"
    wait_until(lambda: any(c["resident_code"] == code for c in httpx.get(f"{rrs(network, SHIBUYA)}/v1/move-reservations", auth=network.staff_auth(), timeout=10).json()), what="転入予約 at Shibuya")
    inward = content("online-move-in", new_address=address_in(SHIBUYA), move_date=date.today().isoformat(), confirmation="in_person")
    assert submit(network, SHIBUYA, signed(signing, card.signing, inward)).status_code == 202
    assert "visit the counter" in settled(network, SHIBUYA, inward["nonce"], "awaiting_confirmation")["next_step"]
    confirmed = httpx.post(f"{rrs(network, SHIBUYA)}/v1/online-filings/{inward['nonce']}/residence-confirmed", auth=network.staff_auth(), timeout=10)
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "completed", confirmed.text
    wait_until(lambda: national(db, code) == (SHIBUYA, "active"), what="registered at Shibuya")
    wait_until(lambda: httpx.get(f"{rrs(network, CHIYODA)}/v1/residents/{code}", auth=network.staff_auth(), timeout=10).json()["status"] == "removed", what="closed at Chiyoda")

    # abroad: the record closes at once; the signing certificate ends with it
    emigrant = adult(network, db, SHIBUYA)
    card, certificates = card_for(network, emigrant, SHIBUYA)
    away = content("online-move-out", destination_country="ドイツ", planned_date=(date.today() + timedelta(days=20)).isoformat())
    assert submit(network, SHIBUYA, signed(certificates["signing"], card.signing, away)).status_code == 202
    assert settled(network, SHIBUYA, away["nonce"], "completed", "refused")["state"] == "completed"
    wait_until(lambda: national(db, emigrant["resident_code"]) == (SHIBUYA, "removed"), what="emigrated nationally")
