"""The verifiable provision log on the running network: a provision shows in
the resident's list with a valid inclusion proof, checkpoints are consistent,
redelivery adds no leaf, residents see only their own records, incidents show
(issue: a verifiable provision log and the resident portal)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from contracts import topics
from services.common.tokens import load_private_key, sign_token
from services.network import REPO_ROOT, Network
from services.provision_log import checkpoint as cp
from tests.conftest import TenantDb, wait_until
from tests.e2e.helpers import produce, query, register, unique_reason

LOG = "provision_log.provision_log"


# --- helpers shared with the other provision-log tests ----------------------------------------


def resident_auth(net: Network, code: str, municipality: str) -> dict:
    credential = httpx.post(f"{net.url(f'municipal_rrs.{municipality}')}/v1/residents/{code}/portal-credential", auth=net.staff_auth(), timeout=10,
                            json={"identity_check": {"method": "mynumber_card", "document_number_last4": "1234"}})
    assert credential.status_code == 200, credential.text
    return {"authorization": f"Bearer {credential.json()['token']}"}


def registered_at_national(net: Network, municipality: str = "131016") -> dict:
    person = register(net, municipality)
    national = TenantDb(net, "national")
    wait_until(lambda: national.value("select count(*) from identity where resident_code = %s", (person["resident_code"],)) == 1, timeout=60, what="the person at the national server")
    return person


def provide(net: Network, code: str, *, reason: str | None = None) -> str:
    """One lookup by the pension service; the record id of the provision."""
    body = {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code, "reason": reason or unique_reason()}
    response = query(net, "pension-service", body)
    assert response.status_code == 200 and response.json()["persons"], response.text
    (record_id,) = response.headers["x-provision-records"].split(",")
    return record_id


def proof_of(net: Network, auth: dict, record_id: str, *, timeout: float = 60) -> dict:
    def fetch():
        response = httpx.get(f"{net.url(LOG)}/v1/me/provisions/{record_id}/proof", headers=auth, timeout=10)
        return response.json() if response.status_code == 200 else None

    return wait_until(fetch, timeout=timeout, what=f"a checkpointed proof of {record_id}")


def verifier(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.provision_log.verify", *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def log_key(net: Network) -> Path:
    return net.public_keys / "provision-log.pub"


def operator_token(net: Network, party: str) -> str:
    return sign_token(load_private_key(net.private_keys / f"{party}.key"), issuer=party, audience="provision-log")


def checkpoint_note(net: Network) -> str:
    return httpx.get(f"{net.url(LOG)}/v1/log/checkpoint", timeout=10).text


# --- tests ----------------------------------------------------------------------------------------


def test_a_provision_shows_in_the_residents_list_with_a_valid_inclusion_proof(network, tmp_path):
    person = registered_at_national(network)
    code = person["resident_code"]
    reason = unique_reason()
    record_id = provide(network, code, reason=reason)
    auth = resident_auth(network, code, "131016")

    listed = wait_until(lambda: httpx.get(f"{network.url(LOG)}/v1/me/log", headers=auth).json()["records"], timeout=30, what="the record in the resident's list")
    assert [r["record"]["record_id"] for r in listed] == [record_id]
    assert listed[0]["record"]["reason"] == reason and listed[0]["leaf_index"] is not None and listed[0]["incidents"] == []
    assert listed[0]["leaf_format"] == "provision/v2" and listed[0]["status"] in ("pending", "verified")

    bundle = proof_of(network, auth, record_id)
    entry = json.loads(bundle["entry"])
    assert entry["record_id"] == record_id and entry["kind"] == "provision/v2"
    assert bundle["record"]["record_id"] == record_id and bundle["record"]["reason"] == reason
    verified = wait_until(lambda: [r for r in httpx.get(f"{network.url(LOG)}/v1/me/log", headers=auth).json()["records"] if r["verified"]], timeout=30, what="the record verified")
    assert verified[0]["status"] == "verified" and verified[0]["logged"]["record_sha256"] == entry["record_sha256"]
    assert code not in bundle["entry"] and person["name"]["family_name"] not in bundle["entry"], "the leaf carries no resident code and no name"
    assert person["address"]["text"] not in bundle["entry"] and reason not in bundle["entry"]
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(bundle, ensure_ascii=False))
    ok = verifier("inclusion", path, "--key", log_key(network), "--resident-code", code)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"leaf {bundle['leaf_index']}" in ok.stdout

    # the proof is the resident's only, and any change to the entry is detected
    other = verifier("inclusion", path, "--key", log_key(network), "--resident-code", "0" * 11)
    assert other.returncode == 1 and "not about resident" in other.stdout
    forged = dict(bundle, entry=bundle["entry"].replace("pension-service", "mofa-passport"))
    path.write_text(json.dumps(forged, ensure_ascii=False))
    assert verifier("inclusion", path, "--key", log_key(network)).returncode == 1
    wrong_reason = dict(bundle, reason="別の理由")
    path.write_text(json.dumps(wrong_reason, ensure_ascii=False))
    assert verifier("inclusion", path, "--key", log_key(network)).returncode == 1
    # a checkpoint signed by another key is refused
    other_key = network.public_keys / "national.pub"
    path.write_text(json.dumps(bundle, ensure_ascii=False))
    assert verifier("inclusion", path, "--key", other_key).returncode == 1


def test_two_checkpoints_are_consistent(network, tmp_path):
    person = registered_at_national(network, "131130")
    first_note = checkpoint_note(network)
    first = cp.parse(first_note)[0]
    provide(network, person["resident_code"])
    second_note = wait_until(lambda: (n := checkpoint_note(network)) and cp.parse(n)[0].size > first.size and n, timeout=60, what="a newer checkpoint")
    second = cp.parse(second_note)[0]
    assert second.signed_at >= first.signed_at
    proof = httpx.get(f"{network.url(LOG)}/v1/log/consistency", params={"first": first.size, "second": second.size}).json()
    (tmp_path / "old").write_text(first_note)
    (tmp_path / "new").write_text(second_note)
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    ok = verifier("consistency", tmp_path / "old", tmp_path / "new", tmp_path / "proof.json", "--key", log_key(network))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the same proof does not make the checkpoints consistent the other way round or with a root changed
    bad = verifier("consistency", tmp_path / "new", tmp_path / "old", tmp_path / "proof.json", "--key", log_key(network))
    assert bad.returncode == 1
    stored = httpx.get(f"{network.url(LOG)}/v1/log/checkpoints/{first.size}").text
    assert stored == first_note, "every signed checkpoint stays available by size"
    refused = httpx.get(f"{network.url(LOG)}/v1/log/consistency", params={"first": second.size + 10**6, "second": second.size + 10**6})
    assert refused.status_code == 400 and refused.headers["content-type"].startswith("application/problem+json")


def test_redelivery_from_kafka_adds_no_second_leaf(network, db):
    person = registered_at_national(network)
    code = person["resident_code"]
    record_id = provide(network, code)
    wait_until(lambda: db("provlog").value("select count(*) from log_leaves where record_id = %s", (record_id,)) == 1, timeout=30, what="the leaf")
    payload = db("provlog").value("select payload from provision_records where record_id = %s", (record_id,))
    provider = json.loads(payload)["provider"]  # delivered again by the node that provided, as after a broker reset
    produce(network, topics.PROVISIONS, key=code, value=payload.encode(), signed_as=provider, kind="provision-record")
    # a later record on the same partition shows the consumer went past the redelivered one
    sentinel = json.loads(payload) | {"record_id": str(uuid.uuid4()), "provided_at": datetime.now(UTC).isoformat()}
    produce(network, topics.PROVISIONS, key=code, value=json.dumps(sentinel).encode(), signed_as=provider, kind="provision-record")
    wait_until(lambda: db("provlog").value("select count(*) from log_leaves where record_id = %s", (sentinel["record_id"],)) == 1, timeout=60, what="the later record's leaf")
    assert db("provlog").value("select count(*) from log_leaves where record_id = %s", (record_id,)) == 1
    assert db("provlog").value("select count(*) from provision_records where record_id = %s", (record_id,)) == 1
    size = db("provlog").value("select size from log_state")
    assert db("provlog").value("select count(*) from log_leaves") == size == db("provlog").value("select max(leaf_index) + 1 from log_leaves")


def test_a_resident_sees_only_their_own_records(network):
    alice, bob = registered_at_national(network), registered_at_national(network, "131130")
    record_id = provide(network, alice["resident_code"])
    alice_auth = resident_auth(network, alice["resident_code"], "131016")
    bob_auth = resident_auth(network, bob["resident_code"], "131130")
    proof_of(network, alice_auth, record_id)
    bob_records = httpx.get(f"{network.url(LOG)}/v1/me/log", headers=bob_auth).json()
    assert bob_records["resident_code"] == bob["resident_code"]
    assert record_id not in [r["record"]["record_id"] for r in bob_records["records"]]
    assert record_id not in [r["record_id"] for r in httpx.get(f"{network.url(LOG)}/v1/me/provisions", headers=bob_auth).json()["records"]]
    stolen = httpx.get(f"{network.url(LOG)}/v1/me/provisions/{record_id}/proof", headers=bob_auth)
    assert stolen.status_code == 404 and stolen.headers["content-type"].startswith("application/problem+json")
    # only a municipality's resident credential opens the list
    agency = httpx.get(f"{network.url(LOG)}/v1/me/log", headers={"authorization": f"Bearer {network.agency_token('pension-service', audience='provision-log')}"})
    assert agency.status_code == 401
    not_resident = sign_token(load_private_key(network.private_keys / "rrs-131016.key"), issuer="rrs-131016", audience="provision-log", subject=alice["resident_code"])
    assert httpx.get(f"{network.url(LOG)}/v1/me/log", headers={"authorization": f"Bearer {not_resident}"}).status_code == 403
    assert httpx.get(f"{network.url(LOG)}/v1/me/log").status_code == 401


def test_incidents_are_recorded_by_a_party_and_shown_to_the_resident(network, db):
    person = registered_at_national(network)
    code = person["resident_code"]
    wrong, fine = provide(network, code), provide(network, code)
    auth = resident_auth(network, code, "131016")
    proof_of(network, auth, fine)
    explanation = "職員が住民票コードを入力し誤り、本来の対象者ではない方の情報を照会しました。照会結果は廃棄しました。"
    body = {"kind": "wrong-lookup", "record_ids": [wrong], "explanation": explanation}

    # only a party to the provision may record it; bad input is a problem document; refusals are recorded
    stranger = httpx.post(f"{network.url(LOG)}/v1/incidents", json=body, headers={"authorization": f"Bearer {operator_token(network, 'agency-mofa-passport')}"})
    assert stranger.status_code == 403 and stranger.json()["type"].endswith("/not-a-party-to-the-provision")
    unknown = httpx.post(f"{network.url(LOG)}/v1/incidents", json=body | {"record_ids": [str(uuid.uuid4())]}, headers={"authorization": f"Bearer {operator_token(network, 'national')}"})
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("application/problem+json")
    invalid = httpx.post(f"{network.url(LOG)}/v1/incidents", json=body | {"kind": "oops", "explanation": ""}, headers={"authorization": f"Bearer {operator_token(network, 'national')}"})
    assert invalid.status_code == 422 and {p["name"] for p in invalid.json()["invalidParams"]} == {"kind", "explanation"}
    resident = httpx.post(f"{network.url(LOG)}/v1/incidents", json=body, headers=auth)
    assert resident.status_code == 401
    assert db("provlog").value("select count(*) from refusals where reason = 'not-a-party-to-the-provision' and caller = 'agency-mofa-passport'") >= 1

    recorded = httpx.post(f"{network.url(LOG)}/v1/incidents", json=body, headers={"authorization": f"Bearer {operator_token(network, 'national')}"})
    assert recorded.status_code == 201, recorded.text
    incident = recorded.json()
    assert incident["record_ids"] == [wrong] and incident["reporter"] == "national"
    by_agency = httpx.post(f"{network.url(LOG)}/v1/incidents", json=body | {"kind": "wrong-provision"}, headers={"authorization": f"Bearer {operator_token(network, 'agency-pension-service')}"})
    assert by_agency.status_code == 201, by_agency.text

    records = {r["record_id"]: r for r in httpx.get(f"{network.url(LOG)}/v1/me/log", headers=auth).json()["records"]}
    assert [i["explanation"] for i in records[wrong]["incidents"]] == [explanation, explanation]
    assert [i["kind"] for i in records[wrong]["incidents"]] == ["wrong-lookup", "wrong-provision"]
    assert {i["status"] for i in records[wrong]["incidents"]} <= {"pending", "verified"}
    assert records[fine]["incidents"] == []
    # the incident itself is a leaf of the log: it cannot be taken back silently
    leaf = db("provlog").rows("select kind, entry from log_leaves where leaf_index = %s", (incident["leaf_index"],))[0]
    assert leaf[0] == "incident" and wrong in leaf[1] and explanation not in leaf[1]


def test_an_auditor_recomputes_the_whole_log_from_its_leaves(network, tmp_path):
    person = registered_at_national(network)
    record_id = provide(network, person["resident_code"])
    proof_of(network, resident_auth(network, person["resident_code"], "131016"), record_id)
    kept = tmp_path / "kept.checkpoint"
    first = verifier("audit", "--url", network.url(LOG), "--key", log_key(network), "--save", kept)
    assert first.returncode == 0, first.stdout + first.stderr
    provide(network, person["resident_code"])
    wait_until(lambda: cp.parse(checkpoint_note(network))[0].size > cp.parse(kept.read_text())[0].size, timeout=60, what="a newer checkpoint")
    second = verifier("audit", "--url", network.url(LOG), "--key", log_key(network), "--previous", kept)
    assert second.returncode == 0 and "extends the kept checkpoint" in second.stdout, second.stdout + second.stderr
    assert httpx.get(f"{network.url(LOG)}/v1/log/key").text == log_key(network).read_text()


@pytest.mark.parametrize("path", ["/v1/log/leaves?start=-1", "/v1/log/consistency?first=x&second=1", "/v1/me/provisions/not-a-uuid/proof"])
def test_bad_input_is_a_problem_document(network, path):
    response = httpx.get(f"{network.url(LOG)}{path}", headers={"authorization": "Bearer x"})
    assert response.status_code in (401, 422) and response.headers["content-type"].startswith("application/problem+json")
