"""DV等支援措置 on the real network (R-DV-1…3): the measure reaches the 本籍地 and, after a move, the new
municipality; perpetrators are refused at home and elsewhere out of band, hearing "under review" exactly like
a request about nobody; third parties are reviewed; agencies without an address-requiring affair get no address; expiry, reminders, extension and
cancellation; a measure that cannot be delivered is retried and raised until it is acknowledged; the online
pre-fill and proxy filings respect the measure."""

from __future__ import annotations

import re
from datetime import date, timedelta

import httpx

from contracts.identifiers import new_resident_code
from services.common.dv_rules import period_end
from tests.conftest import wait_until
from tests.e2e.helpers import address_in, agency_call, birth_body, query, register

CHIYODA, SHIBUYA, TOYONAKA = "131016", "131130", "272035"
NOT_ON_NETWORK = "011011"  # 札幌市中央区: a real code, but no node of this network
def _today() -> date:
    """Today, asked when it is needed: a suite that runs across midnight must not date a measure by yesterday."""
    return date.today()
ADULT = date(1990, 4, 1)
PERPETRATOR = {"name": "加害 太郎", "name_kana": "カガイ タロウ", "birth_date": "1980-02-03"}


def rrs(network, municipality: str) -> str:
    return network.url(f"municipal_rrs.{municipality}")


def adult(network, db, municipality: str, household_id: str | None = None) -> dict:
    person = register(network, municipality, birth_body(municipality, born=ADULT, household_id=household_id))
    wait_until(lambda: db("national").value("select version from identity where resident_code = %s", (person["resident_code"],)) == 1, what="registered nationally")
    return person


def full_name(person: dict) -> str:
    return f"{person['name']['family_name']} {person['name']['given_name']}"


def apply(network, municipality: str, victim: dict, *, family: list[dict] = (), honseki: str | None = None, applied_on: date | None = None) -> dict:
    body = {"victim": victim["resident_code"], "family": [f["resident_code"] for f in family], "kind": "dv", "basis": "police_opinion",
            "basis_issuer": "所轄警察署", "basis_reference": "意見書第1号", "perpetrators": [PERPETRATOR]}
    if honseki:
        body["honseki_municipality_code"] = honseki
    if applied_on:
        body["applied_on"] = applied_on.isoformat()
    response = httpx.post(f"{rrs(network, municipality)}/v1/support-measures", auth=network.staff_auth(), json=body, timeout=20)
    assert response.status_code == 201, response.text
    return response.json()


def decide(network, municipality: str, measure: dict, *, valid_from: date | None = None) -> dict:
    body = {"outcome": "approve", **({"valid_from": valid_from.isoformat()} if valid_from else {})}
    response = httpx.post(f"{rrs(network, municipality)}/v1/support-measures/{measure['measure_id']}/decision", auth=network.staff_auth("supervisor"), json=body, timeout=20)
    assert response.status_code == 200, response.text
    return response.json()


def protect(network, db, municipality: str, victim: dict, **kwargs) -> dict:
    """An active measure, known to the CS (its marker reached the national server)."""
    measure = decide(network, municipality, apply(network, municipality, victim, **kwargs))
    wait_until(lambda: marker(db, "national", victim["resident_code"]) == (True, municipality), what="protection marker at the national server")
    return measure


def measure_at(network, municipality: str, measure_id: str) -> dict | None:
    response = httpx.get(f"{rrs(network, municipality)}/v1/support-measures/{measure_id}", auth=network.staff_auth(), timeout=10)
    return response.json() if response.status_code == 200 else None


def measures_of(network, municipality: str, code: str) -> list[dict]:
    return httpx.get(f"{rrs(network, municipality)}/v1/residents/{code}/support-measures", auth=network.staff_auth(), timeout=10).json()


def alerts(network, municipality: str, *, include_closed: bool = False) -> list[dict]:
    return httpx.get(f"{rrs(network, municipality)}/v1/support-measure-alerts", auth=network.staff_auth(), params={"include_closed": include_closed}, timeout=10).json()


def alert_for(network, municipality: str, measure_id: str, kind: str, *, include_closed: bool = False) -> dict | None:
    return next((a for a in alerts(network, municipality, include_closed=include_closed) if a["measure_id"] == measure_id and a["kind"] == kind), None)


def deliveries(network, municipality: str, measure_id: str) -> list[dict]:
    return httpx.get(f"{rrs(network, municipality)}/v1/support-measures/{measure_id}/deliveries", auth=network.staff_auth(), timeout=10).json()


def delivery_to(network, municipality: str, measure: dict, target: str) -> dict | None:
    """The delivery of the measure's current revision (at its home) to one municipality."""
    current = measure_at(network, municipality, measure["measure_id"])
    return next((d for d in deliveries(network, municipality, measure["measure_id"]) if d["target_municipality_code"] == target and d["revision"] == current["revision"]), None)


def marker(db, database: str, code: str):
    rows = db(database).rows("select protected, municipality_code from protection_markers where resident_code = %s", (code,))
    return tuple(rows[0]) if rows else None


def ask(network, municipality: str, certificate_type: str, subject: dict, requester: dict) -> httpx.Response:
    return httpx.post(f"{rrs(network, municipality)}/v1/certificate-requests", auth=network.staff_auth(), json={"type": certificate_type, "subject": subject, "requester": requester}, timeout=20)


def without_id(response: httpx.Response) -> tuple:
    """An answer as the requester sees it, less what differs by design (the request id, also in a problem's instance, and the date):
    status, headers, body."""
    body = re.sub(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", b"<id>", response.content)
    headers = tuple(sorted((k, v) for k, v in response.headers.items() if k not in ("date", "content-length")))
    return response.status_code, headers, body


def outcome_of(network, municipality: str, request_id: str) -> httpx.Response:
    return httpx.get(f"{rrs(network, municipality)}/v1/certificate-requests/{request_id}/outcome", auth=network.staff_auth(), timeout=10)


def settled(network, municipality: str, request_id: str) -> dict:
    """The staff view of a request once a 広域交付 has its home's answer (it is asked in the background)."""
    return wait_until(lambda: (r := httpx.get(f"{rrs(network, municipality)}/v1/certificate-requests/{request_id}", auth=network.staff_auth(), timeout=10).json())["state"] != "asking_home" and r,
                      what="the home municipality's answer")


def requests_about(network, municipality: str, code: str) -> list[dict]:
    return httpx.get(f"{rrs(network, municipality)}/v1/residents/{code}/certificate-requests", auth=network.staff_auth(), timeout=10).json()


def as_perpetrator(relation: str = "household_member") -> dict:
    return {"relation": relation, **PERPETRATOR}


# --- propagation -------------------------------------------------------------------------------------------


def test_the_measure_reaches_the_honseki_and_the_new_municipality_after_a_move(network, db):
    victim = adult(network, db, CHIYODA)
    child = register(network, CHIYODA, birth_body(CHIYODA, household_id=victim["household_id"]))
    code, child_code = victim["resident_code"], child["resident_code"]

    applied = apply(network, CHIYODA, victim, family=[child], honseki=TOYONAKA)
    assert applied["status"] == "applied" and applied["history"][0]["by"] == "clerk"
    assert [p["resident_code"] for p in applied["protected"]] == [code, child_code]
    measure = decide(network, CHIYODA, applied)
    assert measure["status"] == "active" and measure["valid_until"] == period_end(_today()).isoformat()
    assert [(s["action"], s["by"]) for s in measure["history"]] == [("applied", "clerk"), ("approved", "supervisor")]
    mid = measure["measure_id"]

    # the 本籍地 shows it, though the person is not on its register, and raises it to its staff
    wait_until(lambda: any(m["measure_id"] == mid and m["status"] == "active" for m in measures_of(network, TOYONAKA, code)), what="measure at the 本籍地")
    assert any(m["measure_id"] == mid for m in measures_of(network, TOYONAKA, child_code)), "the covered child too"
    received = wait_until(lambda: alert_for(network, TOYONAKA, mid, "measure_received"), what="alert at the 本籍地")
    assert received["open"] and received["resident_code"] == code
    wait_until(lambda: (d := delivery_to(network, CHIYODA, measure, TOYONAKA)) and d["state"] == "acknowledged", what="the 本籍地 acknowledged")

    # the prefecture and national servers mark both persons
    for person in (code, child_code):
        wait_until(lambda person=person: marker(db, "national", person) == (True, CHIYODA), what="marker at the national server")
        if network.topology.network.prefecture_tier:
            wait_until(lambda person=person: marker(db, "pref_13", person) == (True, CHIYODA), what="marker at the prefecture server")

    # Toyonaka's staff acknowledge; Chiyoda sees who
    response = httpx.post(f"{rrs(network, TOYONAKA)}/v1/support-measure-alerts/{received['alert_id']}/acknowledgement", auth=network.staff_auth(), timeout=10)
    assert response.status_code == 200 and not response.json()["open"] and response.json()["acknowledged_by"] == "clerk"
    wait_until(lambda: delivery_to(network, CHIYODA, measure, TOYONAKA)["staff_acknowledged_by"] == "clerk", what="the home hears who saw it")

    # 転出 to Shibuya: the certificate carries the measure, shown from the 転入予約 on
    response = httpx.post(f"{rrs(network, CHIYODA)}/v1/move-outs", auth=network.staff_auth(), json={
        "resident_codes": [code, child_code], "planned_date": _today().isoformat(), "destination": address_in(SHIBUYA)}, timeout=20)
    assert response.status_code == 201, response.text
    wait_until(lambda: any(m["measure_id"] == mid for m in measures_of(network, SHIBUYA, code)), what="measure at the destination before the 転入")
    assert wait_until(lambda: alert_for(network, SHIBUYA, mid, "measure_received"), what="alert at the destination")["open"]
    wait_until(lambda: {c["resident_code"] for c in httpx.get(f"{rrs(network, SHIBUYA)}/v1/move-reservations", auth=network.staff_auth(), timeout=10).json()} >= {code, child_code}, what="転入予約")
    response = httpx.post(f"{rrs(network, SHIBUYA)}/v1/move-ins", auth=network.staff_auth(), json={
        "persons": [{"resident_code": code}, {"resident_code": child_code}], "new_address": address_in(SHIBUYA), "move_date": _today().isoformat()},
        timeout=20)
    assert response.status_code == 201, response.text

    # Shibuya carries it on; Chiyoda (previous address) and Toyonaka (本籍地) hold the new revision; the marker follows
    carried = measure_at(network, SHIBUYA, mid)
    assert carried["home_municipality_code"] == SHIBUYA and carried["history"][-1]["action"] == "taken_over" and carried["history"][-1]["by"] == "clerk"
    for place in (CHIYODA, TOYONAKA):
        wait_until(lambda place=place: (measure_at(network, place, mid) or {}).get("home_municipality_code") == SHIBUYA, what=f"new revision at {place}")
    wait_until(lambda: marker(db, "national", code) == (True, SHIBUYA), what="marker from the new home")
    wait_until(lambda: all(d["state"] == "acknowledged" for d in deliveries(network, SHIBUYA, mid)), what="Shibuya's deliveries acknowledged")
    assert {d["target_municipality_code"]: d["role"] for d in deliveries(network, SHIBUYA, mid)} == {TOYONAKA: "honseki", CHIYODA: "previous_address"}

    # the previous address refuses the perpetrator the 除票 (which names the new address), out of band
    wait_until(lambda: httpx.get(f"{rrs(network, CHIYODA)}/v1/residents/{code}", auth=network.staff_auth(), timeout=10).json()["status"] == "removed", what="Chiyoda closed the record")
    refused = ask(network, CHIYODA, "removed_record", {"resident_code": code}, as_perpetrator())
    assert refused.status_code == 202 and refused.json()["state"] == "under_review"
    assert [r["state"] for r in requests_about(network, CHIYODA, code) if r["type"] == "removed_record"] == ["refusal_pending"]


# --- enforcement ---------------------------------------------------------------------------------------------


def test_a_perpetrators_request_is_refused_out_of_band_at_home_and_elsewhere(network, db):
    victim = adult(network, db, SHIBUYA)
    code = victim["resident_code"]
    protect(network, db, SHIBUYA, victim)
    nobody = new_resident_code()
    by_name = {"name": full_name(victim), "birth_date": ADULT.isoformat()}

    # at home: "under review", the same answer as for a record that does not exist, byte for byte but the request id
    refused = ask(network, SHIBUYA, "juminhyo_copy", {"resident_code": code}, as_perpetrator())
    missing = ask(network, SHIBUYA, "juminhyo_copy", {"resident_code": nobody}, as_perpetrator())
    assert refused.status_code == missing.status_code == 202 and refused.json()["state"] == "under_review"
    assert without_id(refused) == without_id(missing)
    assert without_id(ask(network, SHIBUYA, "juminhyo_copy", by_name, as_perpetrator())) == without_id(missing)
    agent = {"relation": "agent", "name": "代理 花子", "principal": {"name": "加害太郎", "birth_date": "1980-02-03"}}
    assert without_id(ask(network, SHIBUYA, "inspection", {"resident_code": code}, agent)) == without_id(missing)

    # elsewhere (広域交付 at Toyonaka, answered by Shibuya's CS in the background): the same again
    refused_elsewhere = ask(network, TOYONAKA, "juminhyo_copy", {"resident_code": code}, as_perpetrator("self"))
    missing_elsewhere = ask(network, TOYONAKA, "juminhyo_copy", {"resident_code": nobody}, as_perpetrator("self"))
    assert without_id(refused_elsewhere) == without_id(missing_elsewhere) == without_id(missing)
    assert settled(network, TOYONAKA, refused_elsewhere.json()["request_id"])["state"] == "refusal_pending"
    assert settled(network, TOYONAKA, missing_elsewhere.json()["request_id"])["state"] == "under_review"
    # and the outcome says no more than "under review" until a reviewer closes each
    assert without_id(outcome_of(network, TOYONAKA, refused_elsewhere.json()["request_id"])) == without_id(outcome_of(network, TOYONAKA, missing_elsewhere.json()["request_id"]))

    # the person themself is served: at home at once, elsewhere once the home answered
    me = {"relation": "self", "name": full_name(victim), "birth_date": ADULT.isoformat(), "resident_code": code}
    own = ask(network, SHIBUYA, "juminhyo_copy", {"resident_code": code}, me)
    assert own.status_code == 201 and own.json()["document"]["entries"][0]["address"] == victim["address"]["text"]
    own_elsewhere = ask(network, TOYONAKA, "juminhyo_copy", {"resident_code": code}, me)
    assert without_id(own_elsewhere) == without_id(missing), "a 広域交付 is answered before the home is asked"
    assert settled(network, TOYONAKA, own_elsewhere.json()["request_id"])["state"] == "issued"
    issued = outcome_of(network, TOYONAKA, own_elsewhere.json()["request_id"])
    assert issued.status_code == 200 and issued.json()["document"]["issued_by"] == SHIBUYA

    # staff and the record show every attempt, including the one at Toyonaka; the reviewer sees the refusals first
    def attempts():
        rows = requests_about(network, SHIBUYA, code)
        return rows if sum(r["state"] in ("refusal_pending", "refused") for r in rows) >= 4 and any(r["channel"] == "wide_area_at_other" and r["state"] == "issued" for r in rows) else None
    rows = wait_until(attempts, what="every attempt on the record")
    refusals = [r for r in rows if r["state"] in ("refusal_pending", "refused")]
    assert {r["channel"] for r in refusals} == {"counter", "wide_area_at_other"} and all(r["protected"] for r in refusals)
    assert any(r["requesting_municipality_code"] == TOYONAKA for r in refusals)
    assert all("perpetrator" in r["reason"] for r in refusals if r["channel"] == "counter")
    # raised to staff by the housekeeping loop, within a second
    wait_until(lambda: len([a for a in alerts(network, SHIBUYA) if a["kind"] == "request_refused" and a["resident_code"] == code]) >= 4, what="refusals raised")
    queue = httpx.get(f"{rrs(network, SHIBUYA)}/v1/certificate-review-queue", auth=network.staff_auth(), timeout=10).json()
    pending = [q for q in queue if q["subject_resident_code"] == code]
    assert {q["state"] for q in pending} == {"refusal_pending"} and queue[0]["state"] == "refusal_pending", "the rules' refusals come first"
    at_toyonaka = requests_about(network, TOYONAKA, code)
    assert sorted(r["state"] for r in at_toyonaka if r["channel"] == "wide_area") == ["issued", "refusal_pending"]
    assert db("rrs_131130").value("select count(*) from certificate_requests where subject_code = %s", (nobody,)) == 1, "a request about nobody is recorded too"

    # the reviewer can only confirm the refusal; then the requester reads "not issued", as for nobody
    request_id = pending[0]["request_id"]
    issue = httpx.post(f"{rrs(network, SHIBUYA)}/v1/certificate-review-queue/{request_id}/decision", json={"decision": "issue", "reason": "審査"},
                       headers=network.staff_headers(SHIBUYA, "supervisor"), timeout=10)
    assert issue.status_code == 409
    done = httpx.post(f"{rrs(network, SHIBUYA)}/v1/certificate-review-queue/{request_id}/decision", json={"decision": "refuse", "reason": "支援措置"},
                      headers=network.staff_headers(SHIBUYA, "supervisor"), timeout=10)
    assert done.status_code == 200 and done.json()["state"] == "refused"
    nobody_id = missing.json()["request_id"]
    assert httpx.post(f"{rrs(network, SHIBUYA)}/v1/certificate-review-queue/{nobody_id}/decision", json={"decision": "refuse", "reason": "該当なし"},
                      headers=network.staff_headers(SHIBUYA, "supervisor"), timeout=10).status_code == 200
    closed, closed_nobody = outcome_of(network, SHIBUYA, request_id), outcome_of(network, SHIBUYA, nobody_id)
    assert closed.status_code == 404 and without_id(closed) == without_id(closed_nobody)


def test_a_third_partys_request_is_queued_and_its_refusal_reads_like_any_other(network, db):
    victim = adult(network, db, CHIYODA)
    other = adult(network, db, CHIYODA)
    protect(network, db, CHIYODA, victim)
    third = {"relation": "third_party", "name": "第三 者男", "organisation": "債権回収会社", "purpose": "貸金返還請求訴訟の準備のため"}

    asked = {who: ask(network, CHIYODA, "juminhyo_copy", {"resident_code": code}, third)
             for who, code in (("protected", victim["resident_code"]), ("other", other["resident_code"]), ("nobody", new_resident_code()))}
    assert {r.status_code for r in asked.values()} == {202}
    assert {tuple(sorted(r.json())) for r in asked.values()} == {("document", "request_id", "state")}
    assert {r.json()["state"] for r in asked.values()} == {"under_review"}
    ids = {who: r.json()["request_id"] for who, r in asked.items()}

    queue = httpx.get(f"{rrs(network, CHIYODA)}/v1/certificate-review-queue", auth=network.staff_auth(), timeout=10).json()
    flagged = {r["request_id"]: r["protected"] for r in queue}
    assert flagged[ids["protected"]] is True and flagged[ids["other"]] is False and flagged[ids["nobody"]] is False

    def review(which: str, decision: str) -> httpx.Response:
        return httpx.post(f"{rrs(network, CHIYODA)}/v1/certificate-review-queue/{ids[which]}/decision", auth=network.staff_auth("supervisor"), json={"decision": decision, "reason": "審査の結果"}, timeout=10)

    # no override at the counter: a protected person's record is never issued to a third party
    before = db(f"rrs_{CHIYODA}").value("select count(*) from refusals where reason = 'review-refused'")
    overridden = review("protected", "issue")
    assert overridden.status_code == 409 and "support measure" in overridden.json()["detail"]
    assert db(f"rrs_{CHIYODA}").value("select count(*) from refusals where reason = 'review-refused'") == before + 1
    assert review("protected", "refuse").status_code == 200
    assert review("nobody", "refuse").status_code == 200
    assert review("other", "issue").status_code == 200

    def outcome(which: str) -> httpx.Response:
        return httpx.get(f"{rrs(network, CHIYODA)}/v1/certificate-requests/{ids[which]}/outcome", auth=network.staff_auth(), timeout=10)

    assert outcome("protected").status_code == outcome("nobody").status_code == 404
    assert without_id(outcome("protected")) == without_id(outcome("nobody"))
    issued = outcome("other")
    assert issued.status_code == 200 and issued.json()["document"]["entries"][0]["address"] == other["address"]["text"]
    [on_record] = requests_about(network, CHIYODA, victim["resident_code"])
    assert (on_record["state"], on_record["decided_by"], on_record["protected"]) == ("refused", "supervisor", True)


# --- provision -----------------------------------------------------------------------------------------------


def test_an_agency_without_an_address_affair_gets_no_address(network, db):
    person = adult(network, db, CHIYODA)
    code = person["resident_code"]
    follow = agency_call(network, "pension-service", "POST", "/v1/follows", json={"affair": "pension-benefits", "resident_code": code})
    assert follow.status_code == 201, follow.text
    protect(network, db, CHIYODA, person)
    search = {"type": "ByBasicItems", "family_name": person["name"]["family_name"], "given_name": person["name"]["given_name"], "birth_date": ADULT.isoformat()}

    # employment insurance does not need the address: the record comes without it, marked
    response = query(network, "mhlw-employment", {**search, "affair": "employment-insurance"})
    assert response.status_code == 200, response.text
    [provided] = response.json()["persons"]
    assert provided["protected"] is True and provided["address"] is None and provided["name"]["family_name"] == person["name"]["family_name"]
    [record_id] = response.headers["x-provision-records"].split(",")
    recorded = db("national").value("select payload from outbox where kind = 'provision-record' and payload like %s", (f"%{record_id}%",))
    assert '"address"' not in recorded.split('"items"')[1].split("]")[0], "the provision record names only the items given"

    # pensions need it: given, and marked
    response = query(network, "pension-service", {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code})
    [provided] = response.json()["persons"]
    assert provided["protected"] is True and provided["address"]["text"] == person["address"]["text"]

    # a prefectural affair without the address, served by the prefecture server (or the national one without that tier)
    provider = "pref-13" if network.topology.network.prefecture_tier else "national"
    if network.topology.network.prefecture_tier:
        wait_until(lambda: marker(db, "pref_13", code) == (True, CHIYODA), what="marker at the prefecture server")
    response = query(network, "tokyo-police-license", {**search, "affair": "pref-driver-license"}, provider=provider)
    assert response.status_code == 200, response.text
    [provided] = response.json()["persons"]
    assert provided["protected"] is True and provided["address"] is None

    # the follower hears that the protection changed
    def notified():
        feed = agency_call(network, "pension-service", "GET", "/v1/notifications", params={"after": 0, "limit": 1000}).json()["notifications"]
        return [n for n in feed if n["subject"] == code and n["type"] == "protection_status_change"]
    [notification] = wait_until(notified, what="protection_status_change notification")
    assert notification["person"]["protected"] is True


# --- lifecycle -----------------------------------------------------------------------------------------------


def test_expiry_reminder_extension_and_cancellation(network, db):
    # decided long ago (a paper decision recorded late): its year is over, so it expires and the marker drops
    expiring = adult(network, db, TOYONAKA)
    old = decide(network, TOYONAKA, apply(network, TOYONAKA, expiring, applied_on=_today() - timedelta(days=400)), valid_from=_today() - timedelta(days=380))
    assert old["valid_until"] < _today().isoformat()
    ended = wait_until(lambda: (m := measure_at(network, TOYONAKA, old["measure_id"])) and m["status"] == "expired" and m, what="expired")
    assert (ended["history"][-1]["action"], ended["history"][-1]["by"]) == ("expired", "system")
    wait_until(lambda: marker(db, "national", expiring["resident_code"]) == (False, TOYONAKA), what="marker dropped")

    # ending within a month: listed, and staff are reminded
    soon_person = adult(network, db, TOYONAKA)
    soon = decide(network, TOYONAKA, apply(network, TOYONAKA, soon_person, applied_on=_today() - timedelta(days=350)), valid_from=_today() - timedelta(days=340))
    listed = httpx.get(f"{rrs(network, TOYONAKA)}/v1/support-measures", auth=network.staff_auth(), params={"expiring_within_days": 30}, timeout=10).json()
    assert soon["measure_id"] in {m["measure_id"] for m in listed}
    reminder = wait_until(lambda: alert_for(network, TOYONAKA, soon["measure_id"], "expiring"), what="expiry reminder")
    assert reminder["resident_code"] == soon_person["resident_code"]

    # extension: refused while more than a month remains, granted within it, for one more year
    fresh_person = adult(network, db, TOYONAKA)
    fresh = decide(network, TOYONAKA, apply(network, TOYONAKA, fresh_person))
    extension = {"basis": "support_centre_opinion", "basis_issuer": "配偶者暴力相談支援センター"}
    early = httpx.post(f"{rrs(network, TOYONAKA)}/v1/support-measures/{fresh['measure_id']}/extension", auth=network.staff_auth("supervisor"), json=extension, timeout=10)
    assert early.status_code == 409 and "can be filed from" in early.json()["detail"]
    response = httpx.post(f"{rrs(network, TOYONAKA)}/v1/support-measures/{soon['measure_id']}/extension", auth=network.staff_auth("supervisor"), json=extension, timeout=10)
    assert response.status_code == 200, response.text
    longer = response.json()
    assert longer["valid_until"] == period_end(date.fromisoformat(soon["valid_until"]) + timedelta(days=1)).isoformat()
    assert (longer["history"][-1]["action"], longer["history"][-1]["by"], longer["basis"]) == ("extended", "supervisor", "support_centre_opinion")
    assert alert_for(network, TOYONAKA, soon["measure_id"], "expiring") is None, "the reminder is closed by the extension"

    # cancellation: only at the victim's request
    wait_until(lambda: marker(db, "national", fresh_person["resident_code"]) == (True, TOYONAKA), what="marker")
    body = {"requested_by": soon_person["resident_code"], "explanation": "本人からの終了の申出"}
    wrong = httpx.post(f"{rrs(network, TOYONAKA)}/v1/support-measures/{fresh['measure_id']}/cancellation", auth=network.staff_auth("supervisor"), json=body, timeout=10)
    assert wrong.status_code == 409 and "only the victim" in wrong.json()["detail"]
    body["requested_by"] = fresh_person["resident_code"]
    done = httpx.post(f"{rrs(network, TOYONAKA)}/v1/support-measures/{fresh['measure_id']}/cancellation", auth=network.staff_auth("supervisor"), json=body, timeout=10)
    assert done.status_code == 200 and done.json()["status"] == "cancelled" and done.json()["history"][-1]["by"] == "supervisor"
    wait_until(lambda: marker(db, "national", fresh_person["resident_code"]) == (False, TOYONAKA), what="marker dropped on cancellation")


# --- failure handling ---------------------------------------------------------------------------------------


def test_an_undelivered_measure_is_retried_and_raised_until_acknowledged(network, db):
    victim = adult(network, db, CHIYODA)
    honseki_register = f"municipal_rrs.{TOYONAKA}"
    network.stop_node(honseki_register)  # the 本籍地's register is down: nothing there takes the measure
    try:
        measure = decide(network, CHIYODA, apply(network, CHIYODA, victim, honseki=TOYONAKA))
        raised = wait_until(lambda: alert_for(network, CHIYODA, measure["measure_id"], "delivery_failed"), timeout=120, what="failed delivery raised")
        assert TOYONAKA in raised["summary"] and raised["open"]
        pending = wait_until(lambda: (d := delivery_to(network, CHIYODA, measure, TOYONAKA)) and d["attempts"] >= 2 and d, what="sent again")
        assert pending["state"] == "pending" and pending["acknowledged_at"] is None
        # staff seeing it does not close it: only the 本籍地's acknowledgement does
        response = httpx.post(f"{rrs(network, CHIYODA)}/v1/support-measure-alerts/{raised['alert_id']}/acknowledgement", auth=network.staff_auth(), timeout=10)
        assert response.status_code == 200 and response.json()["open"]
    finally:
        network.start_node(honseki_register)
    wait_until(lambda: delivery_to(network, CHIYODA, measure, TOYONAKA)["state"] == "acknowledged", timeout=60, what="acknowledged after the restart")
    closed = alert_for(network, CHIYODA, measure["measure_id"], "delivery_failed", include_closed=True)
    assert closed["resolved_at"] is not None and not closed["open"]
    assert any(m["measure_id"] == measure["measure_id"] for m in measures_of(network, TOYONAKA, victim["resident_code"]))

    # a 本籍地 that is not on the network is raised at once, and kept raised
    elsewhere = adult(network, db, CHIYODA)
    lost = decide(network, CHIYODA, apply(network, CHIYODA, elsewhere, honseki=NOT_ON_NETWORK))
    alert = wait_until(lambda: alert_for(network, CHIYODA, lost["measure_id"], "delivery_failed"), what="unreachable 本籍地 raised")
    assert "not on the network" in alert["summary"]
    assert delivery_to(network, CHIYODA, lost, NOT_ON_NETWORK)["state"] == "unreachable"


# --- online --------------------------------------------------------------------------------------------------


def test_the_online_prefill_drops_protected_relatives_and_nobody_files_for_them(network, db):
    from tests.e2e.test_online import card_for, content, settled, signed, submit

    head = adult(network, db, SHIBUYA)
    spouse = register(network, SHIBUYA, birth_body(SHIBUYA, born=ADULT, household_id=head["household_id"]))
    child = register(network, SHIBUYA, birth_body(SHIBUYA, household_id=head["household_id"]))
    wait_until(lambda: db("national").value("select count(*) from identity where resident_code = any(%s)", ([spouse["resident_code"], child["resident_code"]],)) == 2,
               what="household registered")
    card, certificates = card_for(network, head, SHIBUYA)
    signing = certificates["signing"]

    def prefill() -> httpx.Response:
        return httpx.post(f"{network.url(f'cs_gateway.{SHIBUYA}')}/v1/online/household-prefill", json=signed(signing, card.signing, content("online-prefill")), timeout=20)

    before = prefill()
    assert before.status_code == 200, before.text
    assert {m["resident_code"] for m in before.json()["members"]} == {spouse["resident_code"], child["resident_code"]}

    protect(network, db, SHIBUYA, spouse)
    after = prefill()
    assert after.status_code == 200 and after.json()["filer"] == head["resident_code"]
    assert {m["resident_code"] for m in after.json()["members"]} == {child["resident_code"]}, "the protected spouse is left off, without a trace"

    # the head cannot file for the protected spouse online
    filing = content("online-move-within", members=[spouse["resident_code"]], new_address=address_in(SHIBUYA), move_date=_today().isoformat(), confirmation="landlord")
    response = submit(network, SHIBUYA, signed(signing, card.signing, filing))
    assert response.status_code == 202, response.text
    refused = settled(network, SHIBUYA, filing["nonce"], "refused", "awaiting_confirmation", "completed")
    assert refused["state"] == "refused" and "support measure" in refused["reason"]
