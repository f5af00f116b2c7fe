"""RFC 6962 / RFC 9162 Merkle tree hashing and proofs, pure (no I/O).

Proof *generation* is split in two so that storage stays at the edge: a *plan* names the
complete subtrees ``(level, index)`` whose hashes make up each proof element (a complete
subtree at level L, index i covers leaves ``[i * 2**L, (i + 1) * 2**L)``); the caller fetches
those hashes from wherever it keeps them (memory, SQLite, PostgreSQL) in one go, and
:func:`assemble` folds them into the proof. Verification follows RFC 9162 §2.1.3.2 / §2.1.4.2
with the edge cases of transparency-dev/merkle ``proof/verify.go``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from teegate.errors import LogError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Coord = tuple[int, int]
"""A complete subtree: (level, index)."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 ‖ data): the prefix stops a leaf from posing as an interior node."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over all leaves, computed from scratch (reference and baseline; O(n))."""
    if not hashes:
        return EMPTY_ROOT
    # Bottom-up pairing yields exactly MTH: an odd last node is carried up unchanged.
    level = list(hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# --- plans -------------------------------------------------------------------------------


def subtrees(start: int, end: int) -> list[Coord]:
    """Complete subtrees covering ``[start, end)``, largest first.

    Valid for the ranges the RFC 6962 recursion produces (``start`` aligned to a power of two
    at least ``end - start``), where the right fold of these hashes is MTH(D[start:end]).
    """
    out: list[Coord] = []
    pos = start
    while pos < end:
        level = (end - pos).bit_length() - 1
        while pos % (1 << level):
            level -= 1
        out.append((level, pos >> level))
        pos += 1 << level
    return out


def root_plan(size: int) -> list[Coord]:
    """Subtrees whose right fold is the root of the tree of ``size`` leaves."""
    return subtrees(0, size)


def inclusion_plan(index: int, size: int) -> list[list[Coord]]:
    """PATH(index, D[0:size]) as subtree lists, from the leaf's sibling up (RFC 6962 §2.1.1)."""
    if not 0 <= index < size:
        raise LogError(f"inclusion proof: index {index} is outside a tree of size {size}")
    out: list[list[Coord]] = []
    start, n, m = 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:
            out.append(subtrees(start + k, start + n))
            n = k
        else:
            out.append(subtrees(start, start + k))
            start, n, m = start + k, n - k, m - k
    out.reverse()
    return out


def consistency_plan(size1: int, size2: int) -> list[list[Coord]]:
    """PROOF(size1, D[0:size2]) as subtree lists (RFC 6962 §2.1.2)."""
    if not 0 < size1 <= size2:
        raise LogError(f"consistency proof: need 0 < size1 <= size2, got {size1}, {size2}")
    out: list[list[Coord]] = []
    start, n, m, whole = 0, size2, size1, True
    while m != n:
        k = _split(n)
        if m <= k:
            out.append(subtrees(start + k, start + n))
            n = k
        else:
            out.append(subtrees(start, start + k))
            start, n, m, whole = start + k, n - k, m - k, False
    if not whole:
        out.append(subtrees(start, start + n))
    out.reverse()
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold of complete-subtree hashes (largest first) into their MTH."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def plan_coords(plan: Iterable[list[Coord]]) -> set[Coord]:
    return {c for element in plan for c in element}


def assemble(plan: Sequence[list[Coord]], nodes: Mapping[Coord, bytes]) -> list[bytes]:
    """Turn a plan into proof hashes using the fetched subtree hashes."""
    try:
        return [fold([nodes[c] for c in element]) for element in plan]
    except KeyError as e:
        raise LogError(f"tree storage is missing subtree {e.args[0]}") from None


# --- in-memory tree (tests, bench baseline, audit tooling) -------------------------------


class MemoryTree:
    """All complete-subtree hashes in memory; O(log n) proofs. Good for tests and tools."""

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append_leaf_hash(self, h: bytes) -> None:
        self._levels[0].append(h)
        level, idx = 0, len(self._levels[0]) - 1
        while idx % 2 == 1:
            row = self._levels[level]
            parent = node_hash(row[idx - 1], row[idx])
            if len(self._levels) == level + 1:
                self._levels.append([])
            self._levels[level + 1].append(parent)
            level, idx = level + 1, idx // 2

    def append(self, data: bytes) -> None:
        self.append_leaf_hash(leaf_hash(data))

    def node(self, c: Coord) -> bytes:
        return self._levels[c[0]][c[1]]

    def _get(self, coords: Iterable[Coord]) -> dict[Coord, bytes]:
        return {c: self.node(c) for c in coords}

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if size == 0:
            return EMPTY_ROOT
        plan = root_plan(size)
        return fold([self.node(c) for c in plan])

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        plan = inclusion_plan(index, self.size if size is None else size)
        return assemble(plan, self._get(plan_coords(plan)))

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        plan = consistency_plan(size1, self.size if size2 is None else size2)
        return assemble(plan, self._get(plan_coords(plan)))


class CompactRange:
    """The right edge of a tree: enough state to append and compute the root in O(log n).

    ``append`` returns every complete subtree the new leaf finishes, so a store can persist
    exactly the nodes it will later need for proofs.
    """

    def __init__(self, size: int = 0, edge: Sequence[bytes] = ()) -> None:
        if len(edge) != bin(size).count("1"):
            raise LogError("compact range: edge does not match size")
        self.size = size
        self._edge = list(edge)  # hashes of root_plan(size), largest first

    @staticmethod
    def plan(size: int) -> list[Coord]:
        return root_plan(size)

    def append(self, h: bytes) -> list[tuple[int, int, bytes]]:
        created = [(0, self.size, h)]
        idx, level, acc = self.size, 0, h
        while idx & 1:
            acc = node_hash(self._edge.pop(), acc)
            idx >>= 1
            level += 1
            created.append((level, idx, acc))
        self._edge.append(acc)
        self.size += 1
        return created

    def root(self) -> bytes:
        return fold(self._edge) if self._edge else EMPTY_ROOT

    def copy(self) -> CompactRange:
        return CompactRange(self.size, list(self._edge))


# --- naive generation from all leaves (baseline for the benchmark; reference in tests) ---


def _mth(hashes: Sequence[bytes]) -> bytes:
    return root_from_leaf_hashes(hashes)


def inclusion_proof_from_leaves(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 PATH computed by recursion over all leaves: O(n) per proof."""
    if not 0 <= index < len(hashes):
        raise LogError(f"inclusion proof: index {index} is outside a tree of size {len(hashes)}")

    def path(m: int, d: Sequence[bytes]) -> list[bytes]:
        if len(d) <= 1:
            return []
        k = _split(len(d))
        if m < k:
            return [*path(m, d[:k]), _mth(d[k:])]
        return [*path(m - k, d[k:]), _mth(d[:k])]

    return path(index, hashes)


def consistency_proof_from_leaves(size1: int, hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 PROOF computed by recursion over all leaves."""
    if not 0 < size1 <= len(hashes):
        raise LogError(f"consistency proof: bad sizes {size1}, {len(hashes)}")

    def sub(m: int, d: Sequence[bytes], whole: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if whole else [_mth(d)]
        k = _split(n)
        if m <= k:
            return [*sub(m, d[:k], whole), _mth(d[k:])]
        return [*sub(m - k, d[k:], False), _mth(d[:k])]

    return sub(size1, hashes, True)


# --- verification ------------------------------------------------------------------------


def _decomp(index: int, size: int) -> tuple[int, int]:
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def _check_hashes(proof: Sequence[bytes], what: str) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise LogError(f"{what}: proof hash {i} has {len(h)} bytes, expected {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof; raises LogError if the proof's shape is wrong."""
    if index < 0 or size <= 0 or index >= size:
        raise LogError(f"inclusion proof: index {index} is outside a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise LogError(f"inclusion proof: leaf hash has {len(leaf)} bytes, expected {HASH_SIZE}")
    _check_hashes(proof, "inclusion proof")
    inner, border = _decomp(index, size)
    if len(proof) != inner + border:
        raise LogError(
            f"inclusion proof: {len(proof)} hashes, a tree of size {size} needs {inner + border}"
        )
    res = _chain_inner(leaf, proof[:inner], index)
    return _chain_border_right(res, proof[inner:])


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise LogError unless ``proof`` shows leaf hash ``leaf`` at ``index`` under ``root``."""
    got = root_from_inclusion_proof(index, size, leaf, proof)
    if got != root:
        raise LogError(
            f"inclusion proof: computed root {got.hex()} does not match {root.hex()} "
            f"(index {index}, size {size})"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise LogError unless ``proof`` shows tree (size1, root1) is a prefix of (size2, root2)."""
    if size1 < 0 or size2 < 0:
        raise LogError("consistency proof: negative size")
    if size2 < size1:
        raise LogError(f"consistency proof: size2 {size2} < size1 {size1}")
    if size1 == 0:
        raise LogError("consistency proof from an empty tree is meaningless")
    if size1 == size2:
        if proof:
            raise LogError("consistency proof: sizes are equal but the proof is not empty")
        if root1 != root2:
            raise LogError("consistency proof: same size, different roots (a fork)")
        return
    if not proof:
        raise LogError("consistency proof: empty proof")
    _check_hashes(proof, "consistency proof")
    if len(root1) != HASH_SIZE or len(root2) != HASH_SIZE:
        raise LogError("consistency proof: root hashes must be 32 bytes")
    inner, border = _decomp(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    if size1 == 1 << shift:
        seed, rest = root1, list(proof)
    else:
        seed, rest = proof[0], list(proof[1:])
    if len(rest) != inner + border:
        want = inner + border + (len(proof) - len(rest))
        raise LogError(f"consistency proof: {len(proof)} hashes, expected {want}")
    mask = (size1 - 1) >> shift
    h1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if h1 != root1:
        raise LogError(f"consistency proof: does not reproduce root1 of size {size1}")
    h2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if h2 != root2:
        raise LogError(f"consistency proof: does not reproduce root2 of size {size2}")


NodeFetcher = Callable[[Iterable[Coord]], Mapping[Coord, bytes]]
