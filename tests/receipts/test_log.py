"""ReceiptLog on real SQLite and PostgreSQL: batching, proofs, checkpoints, restarts, tampering."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teegate.errors import LogError
from teegate.receipts import ReceiptLog, SignedCheckpoint, merkle, open_checkpoint
from teegate.receipts.audit import check_consistency
from teegate.receipts.receipt import jcs

from .conftest import ORIGIN, make_receipt

OpenLog = Callable[..., ReceiptLog]


def _check_all_included(log: ReceiptLog, ids: list[str], cp: SignedCheckpoint) -> None:
    c = open_checkpoint(cp.note, [log.verifier], origin=ORIGIN)
    for rid in ids:
        got = log.get(rid)
        assert got is not None
        got.receipt.verify([log.signer.public_key])
        proof = log.inclusion_proof(got.index, c.size)
        merkle.verify_inclusion(
            merkle.leaf_hash(jcs(got.receipt.document)), got.index, c.size, proof, c.root_hash
        )


def _check_pairwise_consistent(log: ReceiptLog, cps: list[SignedCheckpoint]) -> None:
    for a, b in itertools.combinations(sorted(cps, key=lambda c: c.size), 2):
        if a.size == 0:
            continue
        proof = log.consistency_proof(a.size, b.size)
        merkle.verify_consistency(a.size, b.size, proof, a.root_hash, b.root_hash)


def test_batched_submit_proofs_and_checkpoints(open_log: OpenLog) -> None:
    log = open_log(checkpoint_interval=0)
    ids: list[str] = []
    cps: list[SignedCheckpoint] = []
    n = 0
    for batch in range(5):
        for _ in range(40 + batch):
            ids.append(log.submit(make_receipt(n)))
            n += 1
        cps.append(log.checkpoint())  # on demand: flushes first, so the receipts are in
    assert log.size() == len(ids)
    assert cps[-1].size == len(ids)
    _check_all_included(log, ids, cps[-1])
    _check_pairwise_consistent(log, cps)
    # the proof bundle path picks the smallest checkpoint covering the receipt
    p = log.prove(ids[0])
    assert p is not None
    assert p.checkpoint.size == cps[0].size


def test_submit_is_idempotent_and_get_waits_for_queue(open_log: OpenLog) -> None:
    log = open_log(checkpoint_interval=0, flush_interval=0.2)
    r = make_receipt(1)
    log.submit(r)
    got = log.get(r.receipt_id)  # still queued: get() flushes before reading
    assert got is not None
    assert got.index == 0
    log.submit(r)
    log.append_many([r, make_receipt(2)])
    log.flush()
    assert log.size() == 2


def test_interval_checkpoints_only_cover_committed_receipts(open_log: OpenLog) -> None:
    log = open_log(checkpoint_interval=0.01)
    for i in range(300):
        log.submit(make_receipt(i))
    log.flush()
    cp = log.checkpoint()
    stored = log.store.checkpoints()
    assert len(stored) >= 1
    for s in stored:
        # every signed checkpoint describes a prefix of what is stored
        assert log.store.root(s.size) == s.root
    _check_pairwise_consistent(
        log, [SignedCheckpoint(open_checkpoint(s.note, [log.verifier]), s.note) for s in stored]
    )
    assert cp.size == 300


def test_restart_keeps_one_consistent_history(open_log: OpenLog) -> None:
    log = open_log(checkpoint_interval=0)
    log.append_many([make_receipt(i) for i in range(50)])
    cp1 = log.checkpoint()
    log.close()
    log2 = open_log(checkpoint_interval=0)
    assert log2.size() == 50
    log2.append_many([make_receipt(i) for i in range(50, 130)])
    cp2 = log2.checkpoint()
    _check_pairwise_consistent(log2, [cp1, cp2])
    _check_all_included(log2, [f"rcpt_{i:06d}" for i in range(0, 130, 7)], cp2)


def test_restart_with_another_key_or_origin_is_refused(
    open_log: OpenLog, db: dict[str, Any]
) -> None:
    log = open_log()
    log.append_many([make_receipt(0)])
    log.close()
    with pytest.raises(LogError, match="another key"):
        ReceiptLog(db["url"], origin=ORIGIN, key=Ed25519PrivateKey.generate(), schema=db["schema"])
    with pytest.raises(LogError, match="origin"):
        open_log(origin="other.example/log")


def _sql(log: ReceiptLog, sql: str, params: tuple[Any, ...] = ()) -> None:
    with log.store.db.transaction(lock_head=False):
        log.store.db.execute(sql, params)


def test_rewritten_receipt_is_detected_on_restart(open_log: OpenLog) -> None:
    log = open_log(checkpoint_interval=0)
    log.append_many([make_receipt(i) for i in range(40)])
    log.checkpoint()
    doc = log.get("rcpt_000007")
    assert doc is not None
    forged = dict(doc.receipt.document, model="cheaper-model")
    _sql(log, "UPDATE tlog_leaf SET data = ? WHERE idx = 7", (jcs(forged),))
    log.close()
    with pytest.raises(LogError, match="rewritten"):
        open_log()


def test_rewritten_node_hashes_are_detected_on_restart(open_log: OpenLog) -> None:
    log = open_log(checkpoint_interval=0)
    log.append_many([make_receipt(i) for i in range(40)])
    log.checkpoint()
    _sql(log, "UPDATE tlog_node SET hash = ? WHERE id = 5", (b"\x00" * 32,))  # leaf 5
    log.close()
    with pytest.raises(LogError, match="rewritten"):
        open_log()  # full check: every subtree hash recomputed from the receipts


def test_fast_start_checks_the_signed_roots(open_log: OpenLog) -> None:
    log = open_log(checkpoint_interval=0)
    log.append_many([make_receipt(i) for i in range(40)])
    log.checkpoint()
    # (level 5, index 0) is the left half of the 40-leaf root
    _sql(log, "UPDATE tlog_node SET hash = ? WHERE id = ?", (b"\x01" * 32, 5 << 48))
    log.close()
    with pytest.raises(LogError, match="rewritten"):
        open_log(verify_on_open="fast")


def test_truncated_log_is_refused(open_log: OpenLog) -> None:
    log = open_log(checkpoint_interval=0)
    log.append_many([make_receipt(i) for i in range(20)])
    log.checkpoint()
    _sql(log, "DELETE FROM tlog_leaf WHERE idx >= 10")
    _sql(log, "UPDATE tlog_head SET size = 10 WHERE id = 1")
    log.close()
    with pytest.raises(LogError, match="truncated or rewritten"):
        open_log()


def test_whole_rewrite_is_caught_by_an_auditor_consistency_check(open_log: OpenLog) -> None:
    """An operator who wipes the log (checkpoints too) and rebuilds it cannot fool a monitor."""
    log = open_log(checkpoint_interval=0)
    log.append_many([make_receipt(i) for i in range(30)])
    remembered = log.checkpoint()
    for table in ("tlog_leaf", "tlog_node", "tlog_checkpoint"):
        _sql(log, f"DELETE FROM {table}")
    _sql(log, "UPDATE tlog_head SET size = 0 WHERE id = 1")
    log.close()
    log2 = open_log(checkpoint_interval=0)
    log2.append_many([make_receipt(i, model="other") for i in range(40)])
    new = log2.checkpoint()

    class Client:
        def checkpoint(self) -> str:
            return new.note

        def inclusion(self, receipt_id: str, tree_size: int) -> tuple[int, list[bytes]]:
            raise AssertionError

        def consistency(self, size1: int, size2: int) -> list[bytes]:
            return log2.consistency_proof(size1, size2)

    status, detail = check_consistency(remembered.checkpoint, new.checkpoint, Client())
    assert status == "fail", detail


def test_two_writers_share_one_log(open_log: OpenLog) -> None:
    """Two ReceiptLog instances (as two processes would) append to the same database."""
    a = open_log(checkpoint_interval=0)
    b = open_log(checkpoint_interval=0)
    errors: list[BaseException] = []

    def run(log: ReceiptLog, start: int) -> None:
        try:
            for j in range(10):
                log.append_many([make_receipt(start + j * 10 + k) for k in range(10)])
                log.checkpoint()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ta = threading.Thread(target=run, args=(a, 0))
    tb = threading.Thread(target=run, args=(b, 1000))
    ta.start()
    tb.start()
    ta.join()
    tb.join()
    assert not errors
    assert a.size() == b.size() == 200
    size = a.size()
    roots = a.store.roots_from_leaves(size, [])
    assert roots[size] == a.store.root(size)
    cps = [
        SignedCheckpoint(open_checkpoint(s.note, [a.verifier]), s.note)
        for s in a.store.checkpoints()
    ]
    _check_pairwise_consistent(a, cps)
    _check_all_included(b, [f"rcpt_{i:06d}" for i in (0, 55, 1000, 1099)], b.checkpoint())


def test_backlog_limit_fails_closed(open_log: OpenLog) -> None:
    log = open_log(background=False, max_queue=3)
    for i in range(3):
        log.submit(make_receipt(i))
    with pytest.raises(LogError, match="backlog"):
        log.submit(make_receipt(3))
    log.flush()
    assert log.size() == 3
    log.submit(make_receipt(3))


def test_key_file_and_receipt_ids(tmp_path: Any) -> None:
    from teegate.receipts import load_or_create_log_key, new_receipt_id

    path = tmp_path / "keys" / "log.pem"
    k1 = load_or_create_log_key(path)
    k2 = load_or_create_log_key(path)
    assert k1.private_bytes_raw() == k2.private_bytes_raw()
    assert path.stat().st_mode & 0o777 == 0o600
    ids = {new_receipt_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("rcpt_") for i in ids)


def test_every_stored_proof_up_to_80_leaves(open_log: OpenLog) -> None:
    """Exhaustive: every inclusion and consistency proof the stored tree gives verifies and
    equals the RFC 6962 recursion over all leaves."""
    log = open_log(checkpoint_interval=0)
    log.append_many([make_receipt(i) for i in range(80)])
    leaves = [merkle.leaf_hash(data) for _, _, data in log.store.leaves(0, 80)]
    roots = [merkle.root_from_leaf_hashes(leaves[:n]) for n in range(81)]
    for size in range(1, 81):
        assert log.store.root(size) == roots[size]
        for index in range(size):
            proof = log.inclusion_proof(index, size)
            assert proof == merkle.inclusion_proof_from_leaves(index, leaves[:size])
            merkle.verify_inclusion(leaves[index], index, size, proof, roots[size])
        for size1 in range(1, size + 1):
            proof = log.consistency_proof(size1, size)
            if size1 < size:
                assert proof == merkle.consistency_proof_from_leaves(size1, leaves[:size])
            merkle.verify_consistency(size1, size, proof, roots[size1], roots[size])
    with pytest.raises(LogError):
        log.inclusion_proof(0, 81)


def _writer(url: str, schema: str | None, key: bytes, start: int, n: int) -> int:
    log = ReceiptLog(
        url,
        origin=ORIGIN,
        key=Ed25519PrivateKey.from_private_bytes(key),
        schema=schema,
        checkpoint_interval=0,
        verify_on_open="fast",
    )
    try:
        for j in range(0, n, 10):
            log.append_many([make_receipt(start + j + k) for k in range(10)])
            log.checkpoint()
        return log.size()
    finally:
        log.close()


def test_two_processes_share_one_log(
    open_log: OpenLog, db: dict[str, Any], log_key: Ed25519PrivateKey
) -> None:
    import multiprocessing

    first = open_log(checkpoint_interval=0)  # creates the tables
    raw = log_key.private_bytes_raw()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        runs = [
            pool.apply_async(_writer, (db["url"], db["schema"], raw, start, 60))
            for start in (0, 5000)
        ]
        for r in runs:
            r.get(timeout=120)
    assert first.size() == 120
    size = first.size()
    assert first.store.roots_from_leaves(size, [])[size] == first.store.root(size)
    first.store.verify_all_nodes(size)
    cps = [
        SignedCheckpoint(open_checkpoint(s.note, [first.verifier]), s.note)
        for s in first.store.checkpoints()
    ]
    assert len(cps) >= 2
    _check_pairwise_consistent(first, cps)
