"""A certificate request says nothing it should not (issue 18): the answer to anyone not entitled to the
document is the same, byte for byte but the request id, whether the person exists, whether a support measure
protects them, where they live, and whether the requester is the perpetrator — at the home, at the former
address (除票), at the 本籍地 (戸籍の附票), by 広域交付, by resident code and by name; in status, headers and
body, at the request and at its outcome, and in the time it takes.

The setting: P (protected, 本籍地 Toyonaka) and U (unprotected), each with a household member, moved from
Chiyoda to Shibuya; "nobody" is a resident code no one has.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from datetime import date

import httpx
import pytest

from contracts.identifiers import new_resident_code
from tests.conftest import wait_until
from tests.e2e.helpers import address_in
from tests.e2e.test_dv import (
    ADULT, CHIYODA, PERPETRATOR, SHIBUYA, TOYONAKA, adult, ask, full_name, marker, measure_at, outcome_of, protect, rrs, settled, without_id,
)

#: (where, what): the home, the former address (住民票 and 除票), the 本籍地 (住民票 and 附票)
PLACES = [(SHIBUYA, "juminhyo_copy"), (CHIYODA, "juminhyo_copy"), (CHIYODA, "removed_record"), (TOYONAKA, "juminhyo_copy"), (TOYONAKA, "koseki_fuhyo")]
RELATIONS = ["self", "household", "third_party", "perpetrator_as_third_party", "perpetrator_as_household"]
SUBJECTS = ["protected", "unprotected", "nobody"]
THIRD = {"relation": "third_party", "name": "第三 者男", "organisation": "債権回収会社", "purpose": "貸金返還請求訴訟の準備のため"}
PERPETRATOR_AS_THIRD = {"relation": "third_party", **PERPETRATOR, "organisation": "個人", "purpose": "貸金返還請求訴訟の準備のため"}
PERPETRATOR_AS_HOUSEHOLD = {"relation": "household_member", **PERPETRATOR}
#: the target: the medians of the two sides of the timing pairs are closer than this (a request takes tens of ms here)
TIMING_TARGET_SECONDS = 0.005
#: on a loaded machine the noise grows with the request time: the bound is the target or this share of the median, whichever is larger
TIMING_NOISE_SHARE = 0.05
PAIRS = 50
#: a round that misses the bound is measured once more: a real difference misses both, noise rarely does
ROUNDS = 2


def person(record: dict) -> dict:
    return {"name": full_name(record), "birth_date": record["birth_date"], "resident_code": record["resident_code"]}


def move(network, people: list[dict]) -> None:
    codes = [p["resident_code"] for p in people]
    response = httpx.post(f"{rrs(network, CHIYODA)}/v1/move-outs", json={"resident_codes": codes, "planned_date": date.today().isoformat(),
                                                                       "destination": address_in(SHIBUYA)}, auth=network.staff_auth(), timeout=20)
    assert response.status_code == 201, response.text
    wait_until(lambda: {c["resident_code"] for c in httpx.get(f"{rrs(network, SHIBUYA)}/v1/move-reservations", auth=network.staff_auth(), timeout=10).json()} >= set(codes), what="転入予約")
    response = httpx.post(f"{rrs(network, SHIBUYA)}/v1/move-ins", json={"persons": [{"resident_code": c} for c in codes], "new_address": address_in(SHIBUYA),
                                                                      "move_date": date.today().isoformat()}, auth=network.staff_auth(), timeout=20)
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def setting(network, db):
    victim = adult(network, db, CHIYODA)
    victim_member = adult(network, db, CHIYODA, household_id=victim["household_id"])
    other = adult(network, db, CHIYODA)
    other_member = adult(network, db, CHIYODA, household_id=other["household_id"])
    measure = protect(network, db, CHIYODA, victim, honseki=TOYONAKA)
    move(network, [victim, victim_member])
    move(network, [other, other_member])
    everyone = [victim, victim_member, other, other_member]
    code = victim["resident_code"]
    # the measure moved with the victim, and every municipality that holds records of the person holds its new revision
    wait_until(lambda: marker(db, "national", code) == (True, SHIBUYA), what="marker from the new home")
    for place in (CHIYODA, TOYONAKA):
        wait_until(lambda place=place: (measure_at(network, place, measure["measure_id"]) or {}).get("home_municipality_code") == SHIBUYA, what=f"new revision at {place}")
    # the network knows where everyone lives, Chiyoda keeps their 除票, Shibuya's CS their households (広域交付 answers from it)
    for p in everyone:
        wait_until(lambda p=p: db("national").rows("select municipality_code, status from identity where resident_code = %s", (p["resident_code"],))
                   == [(SHIBUYA, "active")], what="registered in Shibuya nationally")
        wait_until(lambda p=p: httpx.get(f"{rrs(network, CHIYODA)}/v1/residents/{p['resident_code']}", auth=network.staff_auth(), timeout=10).json()["status"] == "removed", what="除票 at Chiyoda")

    def same_household(a, b):
        rows = dict(db(f"cs_{SHIBUYA}").rows("select resident_code, household_id from household_members where resident_code = any(%s)",
                                             ([a["resident_code"], b["resident_code"]],)))
        return len(rows) == 2 and len(set(rows.values())) == 1
    for a, b in ((victim, victim_member), (other, other_member)):
        wait_until(lambda a=a, b=b: same_household(a, b), what="the household at Shibuya's CS")
    nobody = new_resident_code()
    return {
        "protected": (victim, victim_member),
        "unprotected": (other, other_member),
        "nobody": ({"resident_code": nobody, "name": {"family_name": "無名", "given_name": "太郎"}, "birth_date": ADULT.isoformat()},
                   {"resident_code": new_resident_code(), "name": {"family_name": "同居", "given_name": "花子"}, "birth_date": ADULT.isoformat()}),
    }


def requester(relation: str, subject: dict, member: dict) -> dict:
    return {
        "self": lambda: {"relation": "self", **person(subject)},
        "household": lambda: {"relation": "household_member", **person(member)},
        "third_party": lambda: THIRD,
        "perpetrator_as_third_party": lambda: PERPETRATOR_AS_THIRD,
        "perpetrator_as_household": lambda: PERPETRATOR_AS_HOUSEHOLD,
    }[relation]()


def subject_forms(relation: str, subject: dict) -> list[tuple[str, dict]]:
    """By resident code always; by name and birth date too for requesters who would not know the code."""
    forms = [("code", {"resident_code": subject["resident_code"]})]
    if relation not in ("self", "household"):
        forms.append(("name", {"name": full_name(subject), "birth_date": subject["birth_date"]}))
    return forms


def entitled(relation: str, who: str) -> bool:
    return relation in ("self", "household") and who != "nobody"


def issued_at_once(relation: str, who: str, place: str, kind: str) -> bool:
    """The person or their household, with the record here: the home's 住民票, the former address's 除票 to the person
    (a former household member is no longer "the household": reviewed)."""
    if not entitled(relation, who):
        return False
    return (place, kind) == (SHIBUYA, "juminhyo_copy") or ((place, kind) == (CHIYODA, "removed_record") and relation == "self")


def issued_by_home(relation: str, who: str, place: str, kind: str) -> bool:
    """広域交付: the person or their household asking elsewhere for a 住民票 or 附票 gets it once the home answered."""
    return entitled(relation, who) and place != SHIBUYA and kind in ("juminhyo_copy", "koseki_fuhyo")


def test_the_answer_depends_on_nothing_but_the_requesters_entitlement(network, setting):
    answers: dict[tuple, httpx.Response] = {}
    cells = list(itertools.product(RELATIONS, SUBJECTS, PLACES))
    random.Random(18).shuffle(cells)  # no order the server could lean on
    for relation, who, (place, kind) in cells:
        subject, member = setting[who]
        for form, body in subject_forms(relation, subject):
            answers[(relation, who, place, kind, form)] = ask(network, place, kind, body, requester(relation, subject, member))
    print(f"\n{len(answers)} requests")

    # 1. everything not issued at once is one answer: "under review", byte for byte but the request id
    waiting = {key: without_id(r) for key, r in answers.items() if r.status_code != 201}
    distinct = set(waiting.values())
    assert len(distinct) == 1, f"{len(distinct)} different answers: " + "; ".join(f"{k}: {v[0]} {v[2][:120]!r}" for k, v in list(waiting.items())[:6])
    [(status, _, body)] = distinct
    assert status == 202 and b'"state":"under_review"' in body

    # 2. issued at once only to the entitled with the record here — a measure changes nothing for them
    for (relation, who, place, kind, form), response in answers.items():
        expected = 201 if issued_at_once(relation, who, place, kind) else 202
        assert response.status_code == expected, (relation, who, place, kind, form, response.text[:300])
    for relation, (place, kind) in itertools.product(("self", "household"), PLACES):
        protected, unprotected = answers[(relation, "protected", place, kind, "code")], answers[(relation, "unprotected", place, kind, "code")]
        assert protected.status_code == unprotected.status_code
        if protected.status_code == 201:
            assert without_id(protected)[:2] == without_id(unprotected)[:2] and protected.json().keys() == unprotected.json().keys()

    # 3. the outcome: the document for the entitled (広域交付 once the home answered), and one "under review" for everyone else
    for (relation, who, place, kind, form), response in answers.items():
        if response.status_code == 202:
            settled(network, place, response.json()["request_id"])
    outcomes = {key: outcome_of(network, key[2], r.json()["request_id"]) for key, r in answers.items()}
    still = set()
    for (relation, who, place, kind, form), outcome in outcomes.items():
        if issued_at_once(relation, who, place, kind) or issued_by_home(relation, who, place, kind):
            assert outcome.status_code == 200, (relation, who, place, kind, outcome.text[:300])
            assert outcome.json()["document"]["issued_by"] == (place if issued_at_once(relation, who, place, kind) else SHIBUYA)
        else:
            still.add(without_id(outcome))
    assert len(still) == 1 and next(iter(still))[0] == 202, still


def test_answers_take_the_same_time_whether_the_person_is_protected_or_nobody(network, setting):
    """Benchmark-style: 50 interleaved pairs per path (the order within each pair drawn at random), the medians printed
    against the 5 ms target. The assertion is generous, never a tight timer: the bound grows with the request time on a
    loaded machine, and a missed round is measured once more (a real difference misses both; the leak of issue 18 was
    24 ms at a median of 99 ms)."""
    victim, _ = setting["protected"]
    stranger = {"relation": "household_member", "name": "同居 主張", "birth_date": ADULT.isoformat(), "resident_code": new_resident_code()}
    paths = {
        # 広域交付 at a municipality that holds nothing of the person (the slow path of issue 18): the home is asked for one, nobody for the other
        "広域交付 (Toyonaka)": (TOYONAKA, "juminhyo_copy", stranger),
        # the perpetrator at the municipalities that hold the measure: the rules refuse one, the other is about nobody
        "perpetrator as third party (home)": (SHIBUYA, "juminhyo_copy", PERPETRATOR_AS_THIRD),
        "perpetrator as household (home)": (SHIBUYA, "juminhyo_copy", PERPETRATOR_AS_HOUSEHOLD),
        "perpetrator as household (former address)": (CHIYODA, "juminhyo_copy", PERPETRATOR_AS_HOUSEHOLD),
    }
    rng = random.Random(1818)
    failures = []
    with httpx.Client(timeout=20, auth=network.staff_auth()) as client:  # a clerk at the counter where the request is made
        def timed(place: str, kind: str, subject_code: str, who: dict) -> float:
            body = {"type": kind, "subject": {"resident_code": subject_code}, "requester": who}
            started = time.perf_counter()
            response = client.post(f"{rrs(network, place)}/v1/certificate-requests", json=body)
            elapsed = time.perf_counter() - started
            assert response.status_code == 202, response.text
            time.sleep(0.3)  # the background ask of the network (made for either side) ends before the next request starts
            settled(network, place, response.json()["request_id"])
            return elapsed

        def round_of_pairs(place: str, kind: str, who: dict) -> tuple[float, float]:
            protected, nobody = [], []
            for _ in range(PAIRS):
                order = [("protected", victim["resident_code"]), ("nobody", new_resident_code())]
                rng.shuffle(order)
                for side, code in order:
                    (protected if side == "protected" else nobody).append(timed(place, kind, code, who))
            return statistics.median(protected), statistics.median(nobody)

        for name, (place, kind, who) in paths.items():
            for _ in range(3):  # warm both paths
                timed(place, kind, victim["resident_code"], who), timed(place, kind, new_resident_code(), who)
            for attempt in range(1, ROUNDS + 1):
                protected, nobody = round_of_pairs(place, kind, who)
                difference = protected - nobody
                bound = max(TIMING_TARGET_SECONDS, TIMING_NOISE_SHARE * min(protected, nobody))
                print(f"\n{name}: median protected {protected * 1000:.1f} ms, nobody {nobody * 1000:.1f} ms, difference {difference * 1000:+.1f} ms "
                      f"({PAIRS} pairs; target < {TIMING_TARGET_SECONDS * 1000:.0f} ms: {'met' if abs(difference) < TIMING_TARGET_SECONDS else 'missed'}; "
                      f"bound {bound * 1000:.1f} ms, round {attempt})")
                if abs(difference) < bound:
                    break
            else:
                failures.append(f"{name}: {difference * 1000:+.1f} ms")
    assert not failures, "the time tells protected from nobody: " + ", ".join(failures)
