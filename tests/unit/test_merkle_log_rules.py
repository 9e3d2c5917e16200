"""Signed checkpoints, what a leaf holds, who may record an incident, and
when an entry expires (the provision log's rules, without I/O)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.affairs import AFFAIRS
from contracts.identifiers import resident_code_check_digit
from contracts.provision import ProvisionRecord
from contracts.transparency import InclusionProof
from services.provision_log import checkpoint as cp
from services.provision_log import domain, merkle
from services.provision_log.verify import VerificationFailed, check_inclusion, check_log

KEY = Ed25519PrivateKey.generate()
CODE = "123456789" + "0"
CODE += resident_code_check_digit(CODE)


def _checkpoint(size: int = 5, root: bytes = b"r" * 32) -> cp.Checkpoint:
    return cp.Checkpoint(origin=cp.DEFAULT_ORIGIN, size=size, root=root, signed_at=datetime(2026, 11, 27, 5, 0, 0, tzinfo=UTC))


def test_a_checkpoint_verifies_with_the_log_key_only():
    note = cp.sign(_checkpoint(), KEY)
    lines = note.split("\n")
    assert lines[:4] == [cp.DEFAULT_ORIGIN, "5", base64.b64encode(b"r" * 32).decode(), "time 2026-11-27T05:00:00Z"]
    assert lines[4] == "" and lines[5].startswith("\u2014 provision-log ")
    assert cp.verify(note, KEY.public_key()) == _checkpoint()
    with pytest.raises(cp.CheckpointInvalid):
        cp.verify(note, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(cp.CheckpointInvalid):
        cp.verify(note.replace("\n5\n", "\n6\n"), KEY.public_key())
    with pytest.raises(cp.CheckpointInvalid):
        cp.verify(note, KEY.public_key(), origin="another/log")
    with pytest.raises(cp.CheckpointInvalid):
        cp.verify(note.split("\n\n")[0], KEY.public_key())


def _record(reason: str | None = "受給資格の確認") -> ProvisionRecord:
    affair = AFFAIRS["pension-benefits"]
    return ProvisionRecord(
        record_id=uuid.uuid4(), provided_at=datetime.now(UTC), provider="national", recipient="pension-service", recipient_name="日本年金機構",
        affair=affair.id, affair_name=affair.name, items=list(affair.items), resident_code=CODE, municipality_code="131016",
        reason=reason, query_type="ByResidentCode",
    )


def test_a_leaf_carries_no_resident_code_names_or_reason_but_commits_to_them():
    record, salt = _record(), b"s" * 32
    entry = domain.provision_entry(record, salt).decode()
    assert CODE not in entry and "日本年金機構" not in entry and "受給資格" not in entry and "131016" not in entry
    parsed = json.loads(entry)
    assert parsed["resident_tag"] == domain.resident_tag(salt, CODE) != domain.resident_tag(b"t" * 32, CODE)
    assert parsed["reason_sha256"] == domain.sha256_b64("受給資格の確認")
    assert domain.provision_entry(record, salt) == domain.provision_entry(record, salt), "canonical"
    assert "reason_sha256" not in domain.provision_entry(_record(reason=None), salt).decode()


def test_the_verifier_checks_signature_inclusion_tag_and_reason():
    record, salt = _record(), b"s" * 32
    entries = [b"a", b"b", domain.provision_entry(record, salt), b"d", b"e"]
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries)
    note = cp.sign(_checkpoint(5, tree.root()), KEY)
    bundle = InclusionProof(
        record_id=record.record_id, leaf_index=2, tree_size=5, entry=entries[2].decode(), resident_code=CODE,
        resident_tag_salt=domain.b64(salt), reason=record.reason, inclusion_path=[domain.b64(h) for h in tree.inclusion_proof(2)], checkpoint=note,
        record=record,
    )
    assert check_inclusion(bundle, KEY.public_key()).size == 5
    other = CODE[:-2] + "9" + CODE[-1]
    for bad, message in [
        (bundle.model_copy(update={"resident_code": other}), "not about resident"),
        (bundle.model_copy(update={"reason": "別の理由"}), "reason"),
        (bundle.model_copy(update={"leaf_index": 3}), "not leaf 3"),
        (bundle.model_copy(update={"tree_size": 4}), "tree size"),
        (bundle.model_copy(update={"entry": bundle.entry.replace("national", "pref-13")}), "not leaf 2"),
        (bundle.model_copy(update={"record": record.model_copy(update={"recipient_name": "外務省"})}), "record is not the one in the log.*record_sha256"),
        (bundle.model_copy(update={"record": None}), "record is missing"),
    ]:
        with pytest.raises(VerificationFailed, match=message):
            check_inclusion(bad, KEY.public_key())


def test_a_full_audit_accepts_expired_leaves_by_hash_and_finds_every_tampering():
    from contracts.transparency import LogLeaf

    entries = [f"entry-{i}".encode() for i in range(9)]
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries)
    note = cp.sign(_checkpoint(9, tree.root()), KEY)
    leaves = [LogLeaf(leaf_index=i, leaf_hash=domain.b64(merkle.leaf_hash(e)), entry=e.decode()) for i, e in enumerate(entries)]
    assert check_log(leaves, note, KEY.public_key()).size == 9
    expired = [leaf.model_copy(update={"entry": None}) if leaf.leaf_index < 4 else leaf for leaf in leaves]
    with pytest.raises(VerificationFailed, match="leaf 3 has no content and no erasure leaf names it"):
        check_log(expired, note, KEY.public_key())
    marker = domain.erasure_entry(erased_at=datetime(2033, 1, 1, tzinfo=UTC), retention_years=7, leaf_indexes=[0, 1, 2, 3])
    marked_tree = merkle.MemoryTree([*(merkle.leaf_hash(e) for e in entries), merkle.leaf_hash(marker)])
    marked_note = cp.sign(_checkpoint(10, marked_tree.root()), KEY)
    marked = [*expired, LogLeaf(leaf_index=9, leaf_hash=domain.b64(merkle.leaf_hash(marker)), entry=marker.decode())]
    assert check_log(marked, marked_note, KEY.public_key()).size == 10, "erased by retention: named by the erasure leaf after them"
    with pytest.raises(VerificationFailed, match="leaf 3 is missing"):
        check_log(leaves[:3] + leaves[4:], note, KEY.public_key())
    with pytest.raises(VerificationFailed, match="leaf 5: the entry does not match"):
        check_log([*leaves[:5], leaves[5].model_copy(update={"entry": "forged"}), *leaves[6:]], note, KEY.public_key())
    rehashed = leaves[5].model_copy(update={"entry": "forged", "leaf_hash": domain.b64(merkle.leaf_hash(b"forged"))})
    with pytest.raises(VerificationFailed, match="recomputed root differs"):
        check_log([*leaves[:5], rehashed, *leaves[6:]], note, KEY.public_key())


def test_only_a_party_to_a_provision_may_record_an_incident():
    parties = [domain.ProvisionParties(record_id="r1", provider="national", recipient="pension-service")]
    domain.check_incident_reporter("national", parties)
    domain.check_incident_reporter("agency-pension-service", parties)
    for stranger in ("pref-13", "agency-mofa-passport", "pension-service", "rrs-131016"):
        with pytest.raises(domain.IncidentRefused):
            domain.check_incident_reporter(stranger, parties)


@pytest.mark.parametrize(
    ("provided", "now", "expired"),
    [
        (datetime(2026, 11, 27, 12, tzinfo=UTC), datetime(2033, 11, 27, 11, 59, tzinfo=UTC), False),
        (datetime(2026, 11, 27, 12, tzinfo=UTC), datetime(2033, 11, 27, 12, tzinfo=UTC), True),
        (datetime(2028, 2, 29, 9, tzinfo=UTC), datetime(2035, 2, 28, 23, 59, tzinfo=UTC), False),
        (datetime(2028, 2, 29, 9, tzinfo=UTC), datetime(2035, 3, 1, 9, tzinfo=UTC), True),
    ],
)
def test_entries_expire_seven_years_after_the_provision(provided, now, expired):
    assert domain.is_expired(provided, now=now, years=7) is expired
    assert provided < domain.expiry_candidates_before(now, 7) or not expired, "every expired entry is among the candidates"


def test_retention_is_at_least_a_year():
    with pytest.raises(ValueError):
        domain.expires_at(datetime.now(UTC), 0)
