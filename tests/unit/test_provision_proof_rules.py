"""The resident is shown only what the log proves (issue 18): the one canonical
serialisation of a record that its leaf commits to, the judgement of a stored
record against its leaf, the stored digests an auditor compares, the audit of
the proofs a stored tree gives, and the portal's script (run in Node, when
present) rebuilding the same bytes from displayed fields."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.affairs import AFFAIRS
from contracts.identifiers import resident_code_check_digit
from contracts.provision import ProvisionRecord
from contracts.transparency import IncidentKind, InclusionPaths, InclusionProof, IncidentProof, LogLeaf, RecordStatus
from services.provision_log import checkpoint as cp
from services.provision_log import domain, merkle
from services.provision_log.verify import VerificationFailed, check_inclusion, check_log, check_proofs, check_stored

KEY = Ed25519PrivateKey.generate()
CODE = "987654321" + "0"
CODE += resident_code_check_digit(CODE)
NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
SALT = b"\x07" * 32
VERIFY_JS = Path(__file__).resolve().parents[2] / "services" / "provision_log" / "assets" / "verify.js"


def _record(**changes) -> ProvisionRecord:
    affair = AFFAIRS["pension-benefits"]
    fields = dict(
        record_id=uuid.UUID("2b0d6c1e-0000-4000-8000-000000000001"), provided_at=datetime(2026, 12, 7, 11, 59, 58, 123456, tzinfo=UTC),
        provider="national", recipient="pension-service", recipient_name="日本年金機構", affair=affair.id, affair_name=affair.name,
        items=list(affair.items), resident_code=CODE, municipality_code="131016", reason="現況届の省略のため「確認」\n二行目", query_type="ByResidentCode",
    )
    return ProvisionRecord(**(fields | changes))


def _tree(entries: list[bytes]) -> tuple[merkle.MemoryTree, domain.SignedTree]:
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries)
    checkpoint = cp.Checkpoint(origin=cp.DEFAULT_ORIGIN, size=tree.size, root=tree.root(), signed_at=NOW)
    return tree, domain.SignedTree(checkpoint)


def test_the_canonical_record_is_sorted_compact_json_of_every_field():
    record = _record()
    text = domain.canonical_record(record).decode()
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed) and ", " not in text and ": " not in text
    assert parsed["recipient_name"] == "日本年金機構" and "日本年金機構" in text, "UTF-8, not \\u escapes"
    assert parsed["provided_at"] == "2026-12-07T11:59:58.123456Z"
    assert "bulk_job_id" not in parsed, "absent fields are left out"
    assert domain.canonical_record(ProvisionRecord.model_validate_json(record.model_dump_json())) == domain.canonical_record(record), "stable across storage"


def test_a_v2_leaf_commits_to_the_whole_record_under_the_salt():
    record = _record()
    entry = json.loads(domain.provision_entry(record, SALT))
    assert entry["kind"] == "provision/v2"
    assert entry["record_sha256"] == base64.b64encode(hashlib.sha256(SALT + domain.canonical_record(record)).digest()).decode()
    assert entry["record_sha256"] != domain.record_commitment(b"\x08" * 32, record), "salted: a guess cannot be tested without the salt"
    assert CODE not in json.dumps(entry, ensure_ascii=False) and "日本年金機構" not in json.dumps(entry, ensure_ascii=False)
    parsed = domain.parse_provision_entry(domain.provision_entry(record, SALT).decode())
    assert domain.record_problem(parsed, record, SALT) is None
    for field, value in [("recipient_name", "外務省"), ("affair_name", "旅券"), ("reason", "別の理由"), ("municipality_code", "131130"), ("items", [AFFAIRS["pension-benefits"].items[0]])]:
        assert domain.record_problem(parsed, record.model_copy(update={field: value}), SALT) is not None, field


def test_a_v1_leaf_stays_verifiable_under_its_own_rules():
    record = _record()
    v1 = domain.parse_provision_entry(domain.provision_entry(record, SALT, kind=domain.PROVISION_V1).decode())
    assert v1.kind == "provision/v1" and v1.record_sha256 is None
    assert domain.record_problem(v1, record, SALT) is None
    assert domain.record_problem(v1, record.model_copy(update={"recipient": "mofa-passport"}), SALT) is not None
    assert domain.record_problem(v1, record.model_copy(update={"recipient_name": "外務省"}), SALT) is None, "v1 does not commit to names"
    _, tree = _tree([domain.provision_entry(record, SALT, kind=domain.PROVISION_V1)])
    leaf = domain.StoredLeaf(0, str(record.record_id), domain.provision_entry(record, SALT, kind=domain.PROVISION_V1).decode(), SALT, NOW)
    judged = domain.judge_provision(leaf, CODE, record.model_dump_json(), tree, [], NOW)
    assert judged.verified and judged.leaf_format == "provision/v1" and "recipient_name" in judged.unbound_fields


def _judge(record: ProvisionRecord, stored: str | None, *, entries_after: int = 1, tamper_path: bool = False, tree_problem: str | None = None, appended: datetime = NOW):
    entry = domain.provision_entry(record, SALT)
    tree, signed = _tree([b"before", entry, *[b"x"] * entries_after])
    path = tree.inclusion_proof(1)
    if tamper_path:
        path = [bytes(32)] + path[1:]
    if tree_problem:
        signed = domain.SignedTree(None, tree_problem)
    leaf = domain.StoredLeaf(1, str(record.record_id), entry.decode(), SALT, appended)
    return domain.judge_provision(leaf, CODE, stored, signed, path, NOW)


def test_a_record_is_served_only_when_it_matches_its_proven_leaf():
    record = _record()
    ok = _judge(record, record.model_dump_json())
    assert ok.verified and ok.status == RecordStatus.verified and ok.record == record and ok.logged.record_id == record.record_id

    altered = _judge(record, record.model_copy(update={"recipient_name": "外務省"}).model_dump_json())
    assert not altered.verified and altered.status == RecordStatus.record_altered and altered.record is None
    assert altered.logged.recipient == "pension-service", "what the leaf proves is still shown"

    missing = _judge(record, None)
    assert missing.status == RecordStatus.record_missing and missing.record is None and missing.logged is not None

    unproven = _judge(record, record.model_dump_json(), tamper_path=True)
    assert unproven.status == RecordStatus.not_in_signed_log and unproven.record is None and unproven.logged is None

    bad_checkpoint = _judge(record, record.model_dump_json(), tree_problem="the newest checkpoint does not verify")
    assert bad_checkpoint.status == RecordStatus.not_in_signed_log and bad_checkpoint.record is None

    other = _judge(record, record.model_dump_json()).model_copy()
    leaf = domain.StoredLeaf(1, str(record.record_id), domain.provision_entry(record, SALT).decode(), SALT, NOW)
    assert domain.judge_provision(leaf, "0" * 11, record.model_dump_json(), domain.SignedTree(None), None, NOW).status == RecordStatus.index_mismatch
    assert other.verified


def test_a_leaf_waits_for_its_checkpoint_only_briefly():
    record = _record()
    entry = domain.provision_entry(record, SALT)
    _, signed = _tree([b"before"])  # the checkpoint does not cover leaf 1 yet
    fresh = domain.judge_provision(domain.StoredLeaf(1, str(record.record_id), entry.decode(), SALT, NOW - timedelta(seconds=2)), CODE, record.model_dump_json(), signed, None, NOW)
    assert fresh.status == RecordStatus.pending and not fresh.verified and fresh.record == record
    stale = domain.judge_provision(domain.StoredLeaf(1, str(record.record_id), entry.decode(), SALT, NOW - timedelta(minutes=5)), CODE, record.model_dump_json(), signed, None, NOW)
    assert stale.status == RecordStatus.not_in_signed_log and stale.record is None


def test_an_incident_is_shown_as_its_leaf_proves_it():
    record = _record()
    incident_id = uuid.uuid4()
    text = domain.incident_entry(incident_id=incident_id, reported_at=NOW, reporter="national", kind=IncidentKind.wrong_lookup, record_ids=[record.record_id], explanation="取り違えました。")
    tree, signed = _tree([b"a", text])
    leaf = domain.StoredLeaf(1, str(incident_id), text.decode(), None, NOW)
    entry = domain.parse_incident_entry(text.decode())
    stored = domain.StoredIncident(reported_at=NOW, reporter="national", kind="wrong-lookup", explanation="取り違えました。")
    ok = domain.judge_incident(leaf, entry, stored, signed, tree.inclusion_proof(1), NOW)
    assert ok.verified and ok.explanation == "取り違えました。"
    changed = domain.judge_incident(leaf, entry, domain.StoredIncident(NOW, "national", "wrong-lookup", "問題ありません。"), signed, tree.inclusion_proof(1), NOW)
    assert changed.status == RecordStatus.record_altered and changed.explanation is None and changed.kind == IncidentKind.wrong_lookup
    gone = domain.judge_incident(leaf, entry, None, signed, tree.inclusion_proof(1), NOW)
    assert gone.status == RecordStatus.record_missing and gone.reporter == "national", "a removed incident does not vanish"
    assert domain.stored_incident_sha256(stored, incident_id, [record.record_id]) == domain.sha256_b64(text.decode())


def test_the_audit_checks_every_stored_record_against_its_leaf():
    record = _record()
    entry = domain.provision_entry(record, SALT).decode()
    stored = domain.stored_provision_sha256(entry, record.model_dump_json(), SALT, CODE)
    assert stored == domain.sha256_b64(entry)
    leaf = LogLeaf(leaf_index=0, leaf_hash=domain.b64(merkle.leaf_hash(entry.encode())), entry=entry, stored_sha256=stored)
    check_stored([leaf])
    for payload, salt, code in [
        (record.model_copy(update={"recipient_name": "外務省"}).model_dump_json(), SALT, CODE),  # the record altered
        (record.model_dump_json(), SALT, "0" * 11),  # the resident index altered: the leaf would vanish from the resident's view
        (record.model_dump_json(), b"\x09" * 32, CODE),  # the salt altered
    ]:
        with pytest.raises(VerificationFailed, match="not the one the leaf commits to"):
            check_stored([leaf.model_copy(update={"stored_sha256": domain.stored_provision_sha256(entry, payload, salt, code)})])
    with pytest.raises(VerificationFailed, match="stored record is missing"):
        check_stored([leaf.model_copy(update={"stored_sha256": domain.stored_provision_sha256(entry, None, SALT, CODE)})])


def test_the_audit_checks_every_proof_the_stored_tree_gives():
    entries = [f"e{i}".encode() for i in range(7)]
    tree, signed = _tree(entries)
    leaves = [LogLeaf(leaf_index=i, leaf_hash=domain.b64(merkle.leaf_hash(e)), entry=None) for i, e in enumerate(entries)]
    paths = InclusionPaths(tree_size=7, start=0, paths=[[domain.b64(h) for h in tree.inclusion_proof(i)] for i in range(7)])
    check_proofs([paths], leaves, signed.checkpoint)
    bad = [list(p) for p in paths.paths]
    bad[4][0] = domain.b64(b"\x00" * 32)  # a stored node altered: leaf 4's sibling
    with pytest.raises(VerificationFailed, match="leaf 4"):
        check_proofs([paths.model_copy(update={"paths": bad})], leaves, signed.checkpoint)
    with pytest.raises(VerificationFailed, match="6 of 7"):
        check_proofs([paths.model_copy(update={"paths": paths.paths[:6]})], leaves, signed.checkpoint)


def test_erasure_ranges():
    assert domain.index_ranges([5, 1, 2, 3, 9, 10]) == [(1, 4), (5, 6), (9, 11)]
    marker = domain.parse_erasure_entry(domain.erasure_entry(erased_at=NOW, retention_years=7, leaf_indexes=[0, 1, 7]).decode())
    assert marker.leaf_ranges == [(0, 2), (7, 8)]


# --- the portal's script, in Node ------------------------------------------------------------------


def _bundle(record: ProvisionRecord, *, incidents: list[tuple[uuid.UUID, str]] = ()) -> tuple[InclusionProof, list[dict]]:
    entry = domain.provision_entry(record, SALT)
    incident_texts = [
        domain.incident_entry(incident_id=i, reported_at=NOW, reporter="agency-pension-service", kind=IncidentKind.wrong_lookup, record_ids=[record.record_id], explanation=e)
        for i, e in incidents
    ]
    entries = [b"first", entry, *incident_texts]
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries)
    note = cp.sign(cp.Checkpoint(origin=cp.DEFAULT_ORIGIN, size=tree.size, root=tree.root(), signed_at=NOW), KEY)
    bundle = InclusionProof(
        record_id=record.record_id, leaf_index=1, tree_size=tree.size, entry=entry.decode(), resident_code=CODE, resident_tag_salt=domain.b64(SALT),
        reason=record.reason, inclusion_path=[domain.b64(h) for h in tree.inclusion_proof(1)], checkpoint=note, record=record,
        incidents=[
            IncidentProof(incident_id=i, leaf_index=2 + n, entry=t.decode(), inclusion_path=[domain.b64(h) for h in tree.inclusion_proof(2 + n)], explanation=e)
            for n, ((i, e), t) in enumerate(zip(incidents, incident_texts))
        ],
    )
    shown_incidents = [
        {"incident_id": str(i), "kind": "wrong-lookup", "reporter": "agency-pension-service", "reported_at": NOW.isoformat().replace("+00:00", "Z"), "explanation": e}
        for i, e in incidents
    ]
    return bundle, shown_incidents


def _shown(record: ProvisionRecord) -> dict:
    data = record.model_dump(mode="json")
    return {k: data.get(k) for k in ("record_id", "provided_at", "recipient", "recipient_name", "affair", "affair_name", "items", "reason", "provider", "query_type")}


def _node(bundle: InclusionProof, shown: dict, incidents: list[dict]) -> dict:
    raw_key = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    script = f"""
const v = require({json.dumps(str(VERIFY_JS))});
const [bundle, shown, incidents, key, origin, code, record] = JSON.parse(process.argv[1]);
(async () => {{
  const canonical = v.canonical(record);
  try {{ const r = await v.verifyDisplayed(bundle, shown, incidents, Uint8Array.from(Buffer.from(key, "base64")), origin, code); console.log(JSON.stringify({{ok: r, canonical}})); }}
  catch (e) {{ console.log(JSON.stringify({{error: e.message, canonical}})); }}
}})();
"""
    args = json.dumps([bundle.model_dump(mode="json", exclude_none=True), shown, incidents, base64.b64encode(raw_key).decode(), cp.DEFAULT_ORIGIN, CODE, bundle.record.model_dump(mode="json", exclude_none=True)], ensure_ascii=False)
    out = subprocess.run(["node", "-e", script, args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_pages_script_rebuilds_the_record_from_the_displayed_fields():
    record = _record()
    bundle, incidents = _bundle(record, incidents=[(uuid.uuid4(), "職員が対象者を取り違えました。照会結果は廃棄しました。")])
    result = _node(bundle, _shown(record), incidents)
    assert result["canonical"] == domain.canonical_record(record).decode(), "the script's canonical form is the log's"
    assert result.get("ok", {}).get("format") == "provision/v2" and result["ok"]["incidents"] == 1, result

    # what the page displays differs from what the log proves: each is found
    for field, value in [("recipient_name", "外務省"), ("affair_name", "旅券の発給"), ("reason", "別の理由"), ("provided_at", "2026-12-07T11:00:00Z"), ("recipient", "mofa-passport")]:
        assert "error" in _node(bundle, _shown(record) | {field: value}, incidents), field
    assert "error" in _node(bundle, _shown(record), [incidents[0] | {"explanation": "問題ありません。"}])
    assert "error" in _node(bundle, _shown(record), []), "an incident in the log but not displayed"
    # the stored record behind the bundle was altered (a field the page does not display)
    altered = bundle.model_copy(update={"record": record.model_copy(update={"municipality_code": "131130"})})
    assert "error" in _node(altered, _shown(record), incidents)


def test_the_offline_verifier_checks_the_incidents_in_a_bundle():
    record = _record()
    bundle, _ = _bundle(record, incidents=[(uuid.uuid4(), "説明")])
    assert check_inclusion(bundle, KEY.public_key(), resident_code=CODE).size == 3
    changed = bundle.model_copy(update={"incidents": [bundle.incidents[0].model_copy(update={"explanation": "別の説明"})]})
    with pytest.raises(VerificationFailed, match="explanation"):
        check_inclusion(changed, KEY.public_key())
    with pytest.raises(VerificationFailed, match="record is not the one"):
        check_inclusion(bundle.model_copy(update={"record": record.model_copy(update={"affair_name": "x"})}), KEY.public_key())
    assert check_log([LogLeaf(leaf_index=0, leaf_hash=domain.b64(merkle.leaf_hash(b"first")), entry="first")],
                     cp.sign(cp.Checkpoint(origin=cp.DEFAULT_ORIGIN, size=1, root=merkle.leaf_hash(b"first"), signed_at=NOW), KEY), KEY.public_key(), stored=False).size == 1
