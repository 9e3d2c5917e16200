"""The Merkle tree of the provision log, as RFC 9162 §2.1 defines it. No I/O.

Hashes: ``leaf = SHA-256(0x00 || entry)``, ``node = SHA-256(0x01 || left || right)``,
the empty tree is ``SHA-256("")``. The tree of *n* leaves splits at *k*, the
largest power of two smaller than *n*; the left part is therefore always a
complete subtree.

Storage is left to the caller, who keeps the hash of every **complete,
aligned subtree**: node ``(level, index)`` covers leaves
``[index·2^level, (index+1)·2^level)``. Appending leaf *i* adds ``(0, i)`` and
one parent for every level at which the new node is a right child. Every root,
inclusion proof and consistency proof of any tree size is computed from
O(log n) of those nodes, read through a ``get(level, index)`` callable.
:func:`needed` tells which nodes a computation reads, so an edge can fetch
them in one query before computing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

Hash = bytes
Coord = tuple[int, int]  # (level, index)
NodeGetter = Callable[[int, int], Hash]

HASH_SIZE = 32
EMPTY_ROOT: Hash = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> Hash:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: Hash, right: Hash) -> Hash:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- appending -----------------------------------------------------------------------


def append_reads(index: int) -> list[Coord]:
    """The stored nodes needed to append leaf ``index``: its left siblings on the way up."""
    reads, level, i = [], 0, index
    while i & 1:
        reads.append((level, i - 1))
        level, i = level + 1, i >> 1
    return reads


def nodes_for_append(index: int, leaf: Hash, get: NodeGetter) -> list[tuple[int, int, Hash]]:
    """The nodes to store when leaf ``index`` (with hash ``leaf``) is appended: (level, index, hash)."""
    out = [(0, index, leaf)]
    level, i, h = 0, index, leaf
    while i & 1:
        h = node_hash(get(level, i - 1), h)
        level, i = level + 1, i >> 1
        out.append((level, i, h))
    return out


# --- roots and proofs from stored complete subtrees -----------------------------------


def subtree_hash(start: int, end: int, get: NodeGetter) -> Hash:
    """MTH of leaves ``[start, end)``."""
    n = end - start
    if n <= 0:
        raise ValueError("empty range")
    if n & (n - 1) == 0 and start % n == 0:
        return get(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(subtree_hash(start, start + k, get), subtree_hash(start + k, end, get))


def root(size: int, get: NodeGetter) -> Hash:
    return EMPTY_ROOT if size == 0 else subtree_hash(0, size, get)


def inclusion_proof(index: int, size: int, get: NodeGetter) -> list[Hash]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")

    def path(m: int, start: int, end: int) -> list[Hash]:
        n = end - start
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return path(m, start, start + k) + [subtree_hash(start + k, end, get)]
        return path(m - k, start + k, end) + [subtree_hash(start, start + k, get)]

    return path(index, 0, size)


def consistency_proof(first: int, second: int, get: NodeGetter) -> list[Hash]:
    """PROOF(first, D[0:second]) of RFC 9162 §2.1.4.1 (empty when first is 0 or equals second)."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []

    def subproof(m: int, start: int, end: int, whole: bool) -> list[Hash]:
        n = end - start
        if m == n:
            return [] if whole else [subtree_hash(start, end, get)]
        k = _split(n)
        if m <= k:
            return subproof(m, start, start + k, whole) + [subtree_hash(start + k, end, get)]
        return subproof(m - k, start + k, end, False) + [subtree_hash(start, start + k, get)]

    return subproof(first, 0, second, True)


def needed(compute: Callable[[NodeGetter], object]) -> set[Coord]:
    """The stored nodes ``compute`` reads (its recursion does not depend on hash values)."""
    seen: set[Coord] = set()

    def record(level: int, index: int) -> Hash:
        seen.add((level, index))
        return bytes(HASH_SIZE)

    compute(record)
    return seen


def getter(nodes: dict[Coord, Hash]) -> NodeGetter:
    def get(level: int, index: int) -> Hash:
        try:
            return nodes[(level, index)]
        except KeyError:
            raise LookupError(f"node ({level}, {index}) is missing from the store") from None

    return get


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ------------------------------------


def verify_inclusion(leaf: Hash, index: int, size: int, proof: Sequence[Hash], expected_root: Hash) -> bool:
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == expected_root


def verify_consistency(first: int, second: int, first_root: Hash, second_root: Hash, proof: Sequence[Hash]) -> bool:
    if not 0 <= first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof  # every tree extends the empty tree
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0


# --- a whole tree in memory (verifier, audits, benchmarks) -----------------------------


class MemoryTree:
    """All complete-subtree nodes in a dict: the same arithmetic as the stored tree."""

    def __init__(self, leaves: Iterable[Hash] = ()):
        self.nodes: dict[Coord, Hash] = {}
        self.size = 0
        for leaf in leaves:
            self.append(leaf)

    def get(self, level: int, index: int) -> Hash:
        return self.nodes[(level, index)]

    def append(self, leaf: Hash) -> int:
        index = self.size
        for level, i, h in nodes_for_append(index, leaf, self.get):
            self.nodes[(level, i)] = h
        self.size += 1
        return index

    def root(self, size: int | None = None) -> Hash:
        return root(self.size if size is None else size, self.get)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[Hash]:
        return inclusion_proof(index, self.size if size is None else size, self.get)

    def consistency_proof(self, first: int, second: int | None = None) -> list[Hash]:
        return consistency_proof(first, self.size if second is None else second, self.get)
