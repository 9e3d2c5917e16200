"""The resident is shown only what the log proves (issue 18): each table of the
provision log's database is tampered with, one at a time, with SQL as the
log's own role, and each change is found by the resident's API, by the portal
and by `verify audit`; after the change is undone, all three say OK again.
On a network of its own, since the log is damaged on purpose."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import re
from collections.abc import Callable

import httpx
import pytest

from contracts.provision import ProvisionRecord
from services.provision_log import domain, merkle
from tests.conftest import TenantDb, running_network, wait_until
from tests.e2e.test_provision_log import LOG, log_key, operator_token, proof_of, provide, registered_at_national, resident_auth, verifier

UNVERIFIABLE = "この記録は検証できません"
EXPLANATION = "職員が対象者を取り違えて照会しました。照会結果は廃棄しました。"


@pytest.fixture(scope="module")
def own_network(tmp_path_factory):
    with running_network(tmp_path_factory.mktemp("provision-log-tamper")) as net:
        yield net


class Resident:
    """One resident with three provisions (the middle one with an incident), seen through every door."""

    def __init__(self, net):
        self.net = net
        person = registered_at_national(net)
        self.code = person["resident_code"]
        self.records = [provide(net, self.code) for _ in range(3)]
        self.auth = resident_auth(net, self.code, "131016")
        proof_of(net, self.auth, self.records[-1])  # all three are in the log (same partition, in order)
        recorded = httpx.post(f"{net.url(LOG)}/v1/incidents", json={"kind": "wrong-lookup", "record_ids": [self.records[1]], "explanation": EXPLANATION},
                              headers={"authorization": f"Bearer {operator_token(net, 'national')}"}, timeout=10)
        assert recorded.status_code == 201, recorded.text
        self.incident = recorded.json()
        self.portal = httpx.Client(base_url=net.url(LOG), follow_redirects=True, timeout=30)
        login = self.portal.get("/portal/login", params={"credential": self.auth["authorization"].removeprefix("Bearer ")})
        assert login.status_code == 200 and login.url.path == "/portal", login.text[:300]
        self.db = TenantDb(net, "provlog")

    def log(self) -> dict[str, dict]:
        response = httpx.get(f"{self.net.url(LOG)}/v1/me/log", headers=self.auth, timeout=30)
        assert response.status_code == 200, response.text
        return {r["record_id"]: r for r in response.json()["records"]}

    def provisions(self) -> dict:
        response = httpx.get(f"{self.net.url(LOG)}/v1/me/provisions", headers=self.auth, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def page(self) -> dict[str, tuple[str, str]]:
        """Each record of the portal page: (data-status, the item's HTML)."""
        text = self.portal.get("/portal").text
        items = re.findall(r'<li class="card record[^"]*" data-record-id="([^"]+)" data-leaf-index="\d+" data-status="([^"]+)">(.*?)</li>', text, re.S)
        return {record_id: (status, html.unescape(body)) for record_id, status, body in items}

    def audit(self):
        return verifier("audit", "--url", self.net.url(LOG), "--key", log_key(self.net))

    def all_verified(self) -> bool:
        log = self.log()
        return (
            all(log.get(r, {}).get("status") == "verified" for r in self.records)
            and all(i["verified"] for i in log[self.records[1]]["incidents"])
        )


@pytest.fixture(scope="module")
def resident(own_network) -> Resident:
    r = Resident(own_network)
    wait_until(r.all_verified, timeout=60, what="every record and the incident verified")
    assert r.audit().returncode == 0
    return r


@contextlib.contextmanager
def _tampered(resident: Resident, tamper: Callable[[], None], restore: Callable[[], None]):
    """Apply ``tamper``; then ``restore`` and wait until every door says OK again."""
    tamper()
    try:
        yield
    finally:
        restore()
    wait_until(resident.all_verified, timeout=60, what="every record verified again after the restore")
    audit = resident.audit()
    assert audit.returncode == 0, audit.stdout + audit.stderr


def _expect(resident: Resident, record_id: str, status: str, audit_says: str, *, logged: bool = True) -> None:
    """The record is reported (not hidden, not shown as verified) by the API and the portal, and the audit fails."""
    seen = wait_until(lambda: (r := resident.log().get(record_id)) and r["status"] == status and r, timeout=30, what=f"{record_id} reported as {status}")
    assert seen["verified"] is False and seen["record"] is None and seen["problem"]
    assert (seen["logged"] is not None) == logged, "what the leaf proves is shown only when the leaf proves"
    provisions = resident.provisions()
    assert record_id not in [r["record_id"] for r in provisions["records"]]
    assert [w["status"] for w in provisions["withheld"] if w["record_id"] == record_id] == [status]
    page_status, body = resident.page()[record_id]
    assert page_status == status and UNVERIFIABLE in body and "記録を検証済み" not in body
    audit = resident.audit()
    assert audit.returncode == 1 and audit_says in audit.stdout, audit.stdout + audit.stderr


def test_altered_and_removed_records_are_reported_not_shown(resident):
    db, target = resident.db, resident.records[0]
    payload = db.value("select payload from provision_records where record_id = %s", (target,))
    renamed = payload.replace("日本年金機構", "外務省")
    assert renamed != payload
    with _tampered(resident, lambda: db.rows("update provision_records set payload = %s where record_id = %s returning 1", (renamed, target)),
                       lambda: db.rows("update provision_records set payload = %s where record_id = %s returning 1", (payload, target))):
        _expect(resident, target, "record-altered", "its stored record is not the one the leaf commits to")
        assert resident.log()[target]["logged"]["recipient"] == "pension-service", "the leaf's own content is shown instead"
        assert "外務省" not in resident.page()[target][1]

    row = db.rows("select record_id, resident_code, provided_at, provider, recipient, affair, payload from provision_records where record_id = %s", (target,))[0]
    with _tampered(resident, lambda: db.rows("delete from provision_records where record_id = %s returning 1", (target,)),
                       lambda: db.rows("insert into provision_records (record_id, resident_code, provided_at, provider, recipient, affair, payload) values (%s, %s, %s, %s, %s, %s, %s) returning 1", row)):
        _expect(resident, target, "record-missing", "its stored record is missing")


def test_a_record_rewritten_together_with_its_leaf_is_reported(resident):
    """The careful forger: the record renamed, its leaf's commitment recomputed with the stored salt, the leaf's hash too."""
    db, target = resident.db, resident.records[2]
    payload = db.value("select payload from provision_records where record_id = %s", (target,))
    index, entry, leaf_hash, salt = db.rows("select leaf_index, entry, leaf_hash, salt from log_leaves where record_id = %s", (target,))[0]
    forged_record = ProvisionRecord.model_validate_json(payload).model_copy(update={"recipient_name": "外務省"})
    forged_entry = domain.provision_entry(forged_record, bytes(salt)).decode()
    assert json.loads(forged_entry)["record_sha256"] != json.loads(entry)["record_sha256"]

    def forge():
        db.rows("update provision_records set payload = %s where record_id = %s returning 1", (forged_record.model_dump_json(), target))
        db.rows("update log_leaves set entry = %s, leaf_hash = %s where leaf_index = %s returning 1", (forged_entry, merkle.leaf_hash(forged_entry.encode()), index))

    def restore():
        db.rows("update log_leaves set entry = %s, leaf_hash = %s where leaf_index = %s returning 1", (entry, leaf_hash, index))
        db.rows("update provision_records set payload = %s where record_id = %s returning 1", (payload, target))

    with _tampered(resident, forge, restore):
        _expect(resident, target, "not-in-signed-log", "recomputed root differs", logged=False)


def test_an_altered_node_of_the_tree_is_reported(resident):
    db, target = resident.db, resident.records[0]
    index = db.value("select leaf_index from log_leaves where record_id = %s", (target,))
    size = int(httpx.get(f"{resident.net.url(LOG)}/v1/log/checkpoint").text.split("\n")[1])
    level, idx = sorted(merkle.needed(lambda get: merkle.inclusion_proof(index, size, get)))[0]  # a node on the record's proof
    original = db.value("select hash from log_nodes where level = %s and idx = %s", (level, idx))
    with _tampered(resident, lambda: db.rows("update log_nodes set hash = %s where level = %s and idx = %s returning 1", (hashlib.sha256(bytes(original)).digest(), level, idx)),
                       lambda: db.rows("update log_nodes set hash = %s where level = %s and idx = %s returning 1", (original, level, idx))):
        _expect(resident, target, "not-in-signed-log", "stored tree gives an inclusion proof that does not verify", logged=False)


def test_an_altered_checkpoint_is_reported(resident):
    db = resident.db
    size, note = db.rows("select tree_size, note from checkpoints order by tree_size desc limit 1")[0]
    lines = note.split("\n")
    lines[2] = base64.b64encode(hashlib.sha256(lines[2].encode()).digest()).decode()  # another root, the signature kept
    forged = "\n".join(lines)
    with _tampered(resident, lambda: db.rows("update checkpoints set note = %s where tree_size = %s returning 1", (forged, size)),
                       lambda: db.rows("update checkpoints set note = %s where tree_size = %s returning 1", (note, size))):
        _expect(resident, resident.records[0], "not-in-signed-log", "checkpoint", logged=False)
        assert {r["status"] for r in resident.log().values()} == {"not-in-signed-log"}, "every record hangs on the signed checkpoint"


def test_an_altered_or_removed_incident_is_reported(resident):
    db, target, incident_id = resident.db, resident.records[1], resident.incident["incident_id"]
    incident = db.rows("select incident_id, reported_at, reporter, kind, explanation from incidents where incident_id = %s", (incident_id,))[0]
    links = db.rows("select incident_id, record_id from incident_records where incident_id = %s", (incident_id,))

    def incident_of() -> dict:
        [shown] = resident.log()[target]["incidents"]
        return shown

    with _tampered(resident, lambda: db.rows("update incidents set explanation = %s where incident_id = %s returning 1", ("照会に問題はありませんでした。", incident_id)),
                       lambda: db.rows("update incidents set explanation = %s where incident_id = %s returning 1", (incident[4], incident_id))):
        shown = wait_until(lambda: (i := incident_of())["status"] == "record-altered" and i, timeout=30, what="the incident reported as altered")
        assert shown["explanation"] is None and shown["kind"] == "wrong-lookup" and not shown["verified"]
        _, body = resident.page()[target]
        assert "誤った照会" in body and "照会に問題はありませんでした" not in body and "ログに記録された内容と一致しない" in body
        audit = resident.audit()
        assert audit.returncode == 1 and "its stored incident is not the one" in audit.stdout, audit.stdout

    def remove():
        db.rows("delete from incident_records where incident_id = %s returning 1", (incident_id,))
        db.rows("delete from incidents where incident_id = %s returning 1", (incident_id,))

    def restore():
        db.rows("insert into incidents (incident_id, reported_at, reporter, kind, explanation) values (%s, %s, %s, %s, %s) returning 1", incident)
        for link in links:
            db.rows("insert into incident_records (incident_id, record_id) values (%s, %s) returning 1", link)

    with _tampered(resident, remove, restore):
        shown = wait_until(lambda: (i := incident_of())["status"] == "record-missing" and i, timeout=30, what="the removed incident still listed, as missing")
        assert shown["reporter"] == "national" and shown["explanation"] is None
        _, body = resident.page()[target]
        assert "この提供は「誤った照会」として記録されています" in body and "見つかりません" in body
        audit = resident.audit()
        assert audit.returncode == 1 and "its stored incident is missing" in audit.stdout, audit.stdout


def test_a_leaf_filed_under_another_resident_is_found_by_the_audit(resident):
    """The resident index is only where the view looks: moving a leaf away hides it from that view, so the audit checks it."""
    db, target = resident.db, resident.records[0]
    with _tampered(resident, lambda: db.rows("update log_leaves set resident_code = %s where record_id = %s returning 1", ("0" * 11, target)),
                       lambda: db.rows("update log_leaves set resident_code = %s where record_id = %s returning 1", (resident.code, target))):
        audit = resident.audit()
        assert audit.returncode == 1 and "its stored record is not the one the leaf commits to" in audit.stdout, audit.stdout
