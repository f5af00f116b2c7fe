"""Property tests: every proof the tree produces verifies; any single-bit change is rejected."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.errors import LogError
from teegate.receipts import merkle

_BIG = merkle.MemoryTree()
for _i in range(2400):
    _BIG.append(_i.to_bytes(4, "big"))


def _tree(n: int) -> merkle.MemoryTree:
    """One shared 2400-leaf tree; proofs and roots for any smaller size come from it."""
    assert n <= _BIG.size
    return _BIG


def _flip(b: bytes, bit: int) -> bytes:
    bit %= len(b) * 8
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def _incl(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, 300))
    return draw(st.integers(0, size - 1)), size


@st.composite
def _cons(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(1, 300))
    return draw(st.integers(1, size2)), size2


@settings(max_examples=300, deadline=None)
@given(_incl(), st.integers(0, 10_000), st.sampled_from(["proof", "root", "leaf", "size", "index"]))
def test_inclusion_proofs_verify_and_tampering_fails(
    case: tuple[int, int], bit: int, what: str
) -> None:
    index, size = case
    tree = _tree(size)
    leaf = merkle.leaf_hash(index.to_bytes(4, "big"))
    root = tree.root(size)
    proof = tree.inclusion_proof(index, size)
    assert proof == merkle.inclusion_proof_from_leaves(
        index, [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    )
    merkle.verify_inclusion(leaf, index, size, proof, root)
    if what == "proof" and not proof:
        what = "root"

    def tampered() -> None:
        if what == "proof":
            j = bit % len(proof)
            bad = [*proof[:j], _flip(proof[j], bit // len(proof)), *proof[j + 1 :]]
            merkle.verify_inclusion(leaf, index, size, bad, root)
        elif what == "root":
            merkle.verify_inclusion(leaf, index, size, proof, _flip(root, bit))
        elif what == "leaf":
            merkle.verify_inclusion(_flip(leaf, bit), index, size, proof, root)
        elif what == "size":
            # A size is only meaningful with the root the log signed for it.
            other = size ^ (1 << (bit % 11))
            merkle.verify_inclusion(leaf, index, other, proof, tree.root(other))
        else:
            merkle.verify_inclusion(leaf, index ^ (1 << (bit % 11)), size, proof, root)

    with pytest.raises(LogError):
        tampered()


@settings(max_examples=300, deadline=None)
@given(
    _cons(), st.integers(0, 10_000), st.sampled_from(["proof", "root1", "root2", "size1", "size2"])
)
def test_consistency_proofs_verify_and_tampering_fails(
    case: tuple[int, int], bit: int, what: str
) -> None:
    size1, size2 = case
    tree = _tree(size2)
    r1, r2 = tree.root(size1), tree.root(size2)
    proof = tree.consistency_proof(size1, size2)
    assert proof == merkle.consistency_proof_from_leaves(
        size1, [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size2)]
    )
    merkle.verify_consistency(size1, size2, proof, r1, r2)
    if what == "proof" and not proof:
        what = "root2"

    def tampered() -> None:
        if what == "proof":
            j = bit % len(proof)
            bad = [*proof[:j], _flip(proof[j], bit // len(proof)), *proof[j + 1 :]]
            merkle.verify_consistency(size1, size2, bad, r1, r2)
        elif what == "root1":
            merkle.verify_consistency(size1, size2, proof, _flip(r1, bit), r2)
        elif what == "root2":
            merkle.verify_consistency(size1, size2, proof, r1, _flip(r2, bit))
        elif what == "size1":
            other = size1 ^ (1 << (bit % 11))
            merkle.verify_consistency(other, size2, proof, tree.root(other), r2)
        else:
            other = size2 ^ (1 << (bit % 11))
            merkle.verify_consistency(size1, other, proof, r1, tree.root(other))

    with pytest.raises(LogError):
        tampered()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 600))
def test_compact_range_matches_reference(n: int) -> None:
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    cr = merkle.CompactRange()
    created = 0
    for h in hashes:
        created += len(cr.append(h))
    assert cr.root() == merkle.root_from_leaf_hashes(hashes)
    # every complete subtree is produced exactly once: n leaves + (n - popcount(n)) parents
    assert created == 2 * n - bin(n).count("1")
