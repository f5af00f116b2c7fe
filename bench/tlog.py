"""Transparency-log benchmark: appends per second and proofs at 10^6 leaves, beside baselines.

Run: ``.venv/bin/python bench/tlog.py [--leaves 1000000] [--receipts 40000]``

1. Appends (SQLite, WAL): pre-signed receipts appended in batches (what the background writer
   does), beside the baseline of one transaction per append; plus the end-to-end rate
   including Ed25519 signing and canonicalisation.
2. A 10^6-leaf tree built by bulk insert (synthetic entries of receipt size: signing 10^6
   receipts would only measure Ed25519), then inclusion/consistency proof generation from the
   stored subtree hashes, beside the baseline of recomputing a proof from all leaf hashes.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teegate.receipts import AttestationRef, ProviderSignature, Receipt, ReceiptSigner, merkle
from teegate.receipts.store import Entry, TreeStore


def receipt(i: int) -> Receipt:
    return Receipt(
        receipt_id=f"rcpt_{i:09d}",
        time_ms=1_750_000_000_000 + i,
        agent=f"agent-{i % 100}",
        conversation=f"conv-{i % 1000}",
        platform="tee-near",
        provider="near-1",
        model="deepseek-v3",
        trust_level="attested",
        trust_required="attested",
        outcome="success",
        request_received_sha256=f"{i:064x}",
        request_forwarded_sha256=f"{i:064x}",
        response_returned_sha256=f"{i + 1:064x}",
        chat_id=f"chatcmpl-{i}",
        provider_signature=ProviderSignature(
            text=f"{i:064x}:{i + 1:064x}",
            signature="0x" + "ab" * 65,
            signing_key="0x" + "cd" * 20,
            algo="ecdsa",
            verified=True,
        ),
        attestation=AttestationRef(verdict_digest="ee" * 32, evidence_ref="ev://1", tee="tdx"),
        usage={"prompt_tokens": 100, "completion_tokens": 200},
        cost=1234,
        currency="USDC",
        transfer_ids=(f"tr-{i}-h", f"tr-{i}-s"),
    )


def bench_appends(tmp: Path, n: int) -> None:
    signer = ReceiptSigner(Ed25519PrivateKey.generate())
    t0 = time.perf_counter()
    signed = [signer.sign(receipt(i)) for i in range(n)]
    t_sign = time.perf_counter() - t0
    entries = [Entry(s.receipt_id, s.agent, s.leaf) for s in signed]
    size = statistics.mean(len(e.data) for e in entries)
    print(f"receipts: {n}, mean signed receipt size {size:.0f} B")
    print(f"  sign + canonicalise only:            {n / t_sign:10.0f} receipts/s")

    store = TreeStore(f"sqlite:///{tmp / 'batched.db'}")
    t0 = time.perf_counter()
    for i in range(0, n, 2000):
        store.append(entries[i : i + 2000])
    t_batch = time.perf_counter() - t0
    store.close()
    print(f"  batched append (2000/txn), SQLite:   {n / t_batch:10.0f} appends/s")
    print(f"  end-to-end sign + batched append:    {n / (t_sign + t_batch):10.0f} receipts/s")

    m = min(n, 3000)
    store = TreeStore(f"sqlite:///{tmp / 'single.db'}")
    t0 = time.perf_counter()
    for e in entries[:m]:
        store.append([e])
    t_one = time.perf_counter() - t0
    store.close()
    print(f"  baseline: one transaction per append: {m / t_one:9.0f} appends/s ({m} appends)")


def bench_request_path(tmp: Path, n: int) -> None:
    """What a request pays: ``submit()`` (queue only) vs a synchronous sign + append."""
    from teegate.receipts import ReceiptLog

    key = Ed25519PrivateKey.generate()
    receipts = [receipt(i) for i in range(n)]
    log = ReceiptLog(f"sqlite:///{tmp / 'submit.db'}", origin="bench/log", key=key)
    lat = []
    t0 = time.perf_counter()
    for r in receipts:
        t = time.perf_counter()
        log.submit(r)
        lat.append(time.perf_counter() - t)
    log.flush(timeout=120)
    t_all = time.perf_counter() - t0
    log.close()
    lat.sort()
    print(f"\nrequest path, {n} receipts through ReceiptLog (signed + appended in background):")
    print(f"  submit() p50 {lat[n // 2] * 1e6:7.1f} us, p99 {lat[int(n * 0.99)] * 1e6:7.1f} us")
    print(f"  background throughput incl. signing: {n / t_all:10.0f} receipts/s")
    m = min(n, 2000)
    log = ReceiptLog(f"sqlite:///{tmp / 'sync.db'}", origin="bench/log", key=key, background=False)
    lat = []
    for r in receipts[:m]:
        t = time.perf_counter()
        log.append_many([r])
        lat.append(time.perf_counter() - t)
    log.close()
    lat.sort()
    print(
        f"  baseline: synchronous sign + append per call p50 {lat[m // 2] * 1e6:7.1f} us, "
        f"p99 {lat[int(m * 0.99)] * 1e6:7.1f} us"
    )


def bench_proofs(tmp: Path, leaves: int) -> None:
    store = TreeStore(f"sqlite:///{tmp / 'big.db'}")
    payload = os.urandom(900)
    t0 = time.perf_counter()
    chunk = 50_000
    for start in range(0, leaves, chunk):
        batch = [
            Entry(f"r{i}", f"a{i % 100}", i.to_bytes(8, "big") + payload)
            for i in range(start, min(leaves, start + chunk))
        ]
        store.append(batch)
    t_build = time.perf_counter() - t0
    print(f"\ntree of {leaves} leaves (~{len(payload) + 8} B each) built in {t_build:.1f} s")

    size = store.size()
    root = store.root(size)
    rng = random.Random(1)
    idxs = [rng.randrange(size) for _ in range(2000)]
    t0 = time.perf_counter()
    proofs = [store.inclusion_proof(i, size) for i in idxs]
    t_incl = (time.perf_counter() - t0) / len(idxs)
    t0 = time.perf_counter()
    for i, p in zip(idxs, proofs, strict=True):
        leaf = merkle.leaf_hash(i.to_bytes(8, "big") + payload)
        merkle.verify_inclusion(leaf, i, size, p, root)
    t_ver = (time.perf_counter() - t0) / len(idxs)
    olds = [rng.randrange(1, size) for _ in range(2000)]
    t0 = time.perf_counter()
    cproofs = [store.consistency_proof(o, size) for o in olds]
    t_cons = (time.perf_counter() - t0) / len(olds)
    old_roots = [store.root(o) for o in olds]
    t0 = time.perf_counter()
    for o, p, r in zip(olds, cproofs, old_roots, strict=True):
        merkle.verify_consistency(o, size, p, r, root)
    t_cver = (time.perf_counter() - t0) / len(olds)
    print(f"  inclusion proof generation (stored subtrees): {t_incl * 1e3:8.3f} ms")
    print(f"  inclusion proof verification:                 {t_ver * 1e3:8.3f} ms")
    print(f"  consistency proof generation:                 {t_cons * 1e3:8.3f} ms")
    print(f"  consistency proof verification:               {t_cver * 1e3:8.3f} ms")

    # baseline: recompute the proof from every leaf hash (leaf hashes already in memory)
    level0 = store.nodes([(0, i) for i in range(0, min(size, 1))])  # warm
    del level0
    rows = store.db.execute("SELECT hash FROM tlog_node WHERE id < ? ORDER BY id", (size,))
    hashes = [bytes(r[0]) for r in rows]
    reps = 3
    t0 = time.perf_counter()
    for i in idxs[:reps]:
        naive = merkle.inclusion_proof_from_leaves(i, hashes)
    t_naive = (time.perf_counter() - t0) / reps
    assert naive == proofs[reps - 1]
    print(f"  baseline: proof recomputed from all leaves:   {t_naive * 1e3:8.1f} ms")
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--receipts", type=int, default=40_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bench_appends(Path(d), args.receipts)
        bench_request_path(Path(d), min(args.receipts, 20_000))
        bench_proofs(Path(d), args.leaves)


if __name__ == "__main__":
    main()
