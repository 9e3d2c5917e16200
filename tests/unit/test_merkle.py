"""The log's Merkle arithmetic against a naive transcription of RFC 9162 §2.1,
for every tree size up to 70 (and some larger), and tampering of every kind."""

from __future__ import annotations

import hashlib

import pytest

from services.provision_log import merkle


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- the RFC, transcribed literally over the list of entries ------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(d: list[bytes]) -> bytes:
    if not d:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + naive_mth(d[:k]) + naive_mth(d[k:]))


def naive_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return naive_path(m, d[:k]) + [naive_mth(d[k:])]
    return naive_path(m - k, d[k:]) + [naive_mth(d[:k])]


def naive_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [naive_mth(d)]
    k = _k(n)
    if m <= k:
        return naive_subproof(m, d[:k], b) + [naive_mth(d[k:])]
    return naive_subproof(m - k, d[k:], False) + [naive_mth(d[:k])]


def entries(n: int) -> list[bytes]:
    return [f"entry-{i}".encode() for i in range(n)]


SIZES = list(range(1, 71)) + [127, 128, 129, 255, 256, 257, 1000]


def test_hashes_are_domain_separated_as_in_the_rfc():
    assert merkle.leaf_hash(b"a") == _h(b"\x00a")
    assert merkle.node_hash(b"L" * 32, b"R" * 32) == _h(b"\x01" + b"L" * 32 + b"R" * 32)
    assert merkle.MemoryTree().root() == _h(b"") == merkle.EMPTY_ROOT
    # a leaf can never pass for an interior node
    assert merkle.leaf_hash(b"\x01" + b"L" * 32 + b"R" * 32) != merkle.node_hash(b"L" * 32, b"R" * 32)


@pytest.mark.parametrize("n", SIZES)
def test_roots_and_inclusion_proofs_match_the_rfc(n):
    d = entries(n)
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in d)
    for size in {1, n // 2 or 1, n - 1 or 1, n}:
        assert tree.root(size) == naive_mth(d[:size])
    root = tree.root()
    for m in range(n) if n <= 70 else range(0, n, 37):
        proof = tree.inclusion_proof(m)
        assert proof == naive_path(m, d)
        assert merkle.verify_inclusion(merkle.leaf_hash(d[m]), m, n, proof, root)


@pytest.mark.parametrize("n", [s for s in SIZES if s <= 70] + [129, 257])
def test_consistency_proofs_match_the_rfc_and_verify(n):
    d = entries(n)
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in d)
    for m in range(0, n + 1):
        proof = tree.consistency_proof(m)
        if 0 < m < n:
            assert proof == naive_subproof(m, d, True)
        assert merkle.verify_consistency(m, n, tree.root(m), tree.root(), proof), (m, n)


def test_any_two_sizes_are_consistent_and_a_proof_binds_both_roots():
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries(40))
    for first in range(1, 40):
        for second in range(first + 1, 41):
            proof = tree.consistency_proof(first, second)
            assert merkle.verify_consistency(first, second, tree.root(first), tree.root(second), proof)
            assert not merkle.verify_consistency(first, second, tree.root(first), bytes(32), proof)
            assert not merkle.verify_consistency(first, second, bytes(32), tree.root(second), proof)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 31, 64])
def test_an_altered_entry_fails_its_proof_and_changes_every_later_root(n):
    d = entries(n)
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in d)
    for m in range(n):
        proof = tree.inclusion_proof(m)
        assert not merkle.verify_inclusion(merkle.leaf_hash(d[m] + b"!"), m, n, proof, tree.root())
        assert not merkle.verify_inclusion(merkle.leaf_hash(d[m]), (m + 1) % n, n, proof, tree.root()), "a proof is for one position"
        altered = d[:m] + [d[m] + b"!"] + d[m + 1:]
        assert naive_mth(altered) != tree.root()


@pytest.mark.parametrize("n", [2, 3, 7, 16, 33])
def test_a_removed_entry_or_a_reordering_changes_the_root(n):
    d = entries(n)
    root = naive_mth(d)
    for m in range(n):
        assert naive_mth(d[:m] + d[m + 1:]) != root
    if n >= 2:
        assert naive_mth([d[1], d[0], *d[2:]]) != root


def test_tampered_proofs_fail():
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries(21))
    leaf = merkle.leaf_hash(b"entry-6")
    proof = tree.inclusion_proof(6)
    root = tree.root()
    assert merkle.verify_inclusion(leaf, 6, 21, proof, root)
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes(32)
        assert not merkle.verify_inclusion(leaf, 6, 21, bad, root)
    assert not merkle.verify_inclusion(leaf, 6, 21, proof[:-1], root)
    assert not merkle.verify_inclusion(leaf, 6, 21, proof + [bytes(32)], root)
    assert not merkle.verify_inclusion(leaf, 6, 40, proof, root), "a proof has the shape of its tree size"
    assert not merkle.verify_inclusion(leaf, 21, 21, proof, root)
    consistency = tree.consistency_proof(11)
    assert merkle.verify_consistency(11, 21, tree.root(11), root, consistency)
    for i in range(len(consistency)):
        bad = list(consistency)
        bad[i] = bytes(32)
        assert not merkle.verify_consistency(11, 21, tree.root(11), root, bad)
    assert not merkle.verify_consistency(11, 21, tree.root(10), root, consistency)
    assert not merkle.verify_consistency(11, 21, tree.root(11), tree.root(20), consistency)
    assert not merkle.verify_consistency(11, 21, tree.root(11), root, [])
    assert not merkle.verify_consistency(21, 11, root, tree.root(11), consistency)
    # a history rewritten after size 11 cannot be shown consistent with the old checkpoint
    rewritten = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries(10) + [b"forged"] + entries(21)[11:])
    assert not merkle.verify_consistency(11, 21, tree.root(11), rewritten.root(), rewritten.consistency_proof(11))


def test_computations_read_only_a_logarithmic_number_of_stored_nodes():
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries(1000))
    reads = merkle.needed(lambda get: merkle.inclusion_proof(517, 1000, get))
    assert len(reads) <= 2 * 10
    proof = merkle.inclusion_proof(517, 1000, merkle.getter({c: tree.nodes[c] for c in reads}))
    assert proof == tree.inclusion_proof(517)
    reads = merkle.needed(lambda get: merkle.root(1000, get)) | merkle.needed(lambda get: merkle.consistency_proof(300, 1000, get))
    assert len(reads) <= 4 * 10
    with pytest.raises(LookupError):
        merkle.root(1000, merkle.getter({}))
    assert set(merkle.append_reads(7)) == {(0, 6), (1, 2), (2, 0)} and merkle.append_reads(8) == []


def test_proofs_outside_the_tree_are_refused():
    tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries(5))
    with pytest.raises(ValueError):
        tree.inclusion_proof(5)
    with pytest.raises(ValueError):
        tree.consistency_proof(6)
