"""Offline audit of receipts and log monitoring (the logic behind ``teegate audit``).

Each step is a named check; a receipt audits only when every check that ran passed. Steps that
cannot run (no evidence in the bundle, no verifier installed) are reported as skipped with the
reason, never silently passed. Only keys the auditor supplies are trusted.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from teegate.attest.policy import Policy
from teegate.errors import TeegateError
from teegate.receipts import merkle
from teegate.receipts.bundle import Bundle
from teegate.receipts.checkpoint import Checkpoint, open_checkpoint
from teegate.receipts.note import NoteVerifier
from teegate.receipts.receipt import SignedReceipt, body_hashes, jcs

Status = Literal["ok", "fail", "skip"]


@dataclass(frozen=True)
class AuditCheck:
    name: str
    status: Status
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class AuditReport:
    source: str
    checks: list[AuditCheck] = field(default_factory=list)
    receipt_id: str | None = None

    @property
    def ok(self) -> bool:
        return any(c.status == "ok" for c in self.checks) and not any(
            c.status == "fail" for c in self.checks
        )

    def add(self, name: str, status: Status, detail: str) -> bool:
        self.checks.append(AuditCheck(name, status, detail))
        return status != "fail"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "receipt_id": self.receipt_id,
            "ok": self.ok,
            "checks": [c.to_json() for c in self.checks],
        }


class LogClient(Protocol):
    """What the auditor may ask a live log for (``--log URL``)."""

    def checkpoint(self) -> str: ...

    def inclusion(self, receipt_id: str, tree_size: int) -> tuple[int, list[bytes]]: ...

    def consistency(self, size1: int, size2: int) -> list[bytes]: ...


def _open(note: str, verifiers: Sequence[NoteVerifier]) -> Checkpoint:
    return open_checkpoint(note, verifiers)


def check_consistency(
    old: Checkpoint, new: Checkpoint, client: LogClient | None
) -> tuple[Status, str]:
    """Is ``new`` an append-only extension of ``old``?"""
    if old.origin != new.origin:
        return "fail", f"origins differ: {old.origin!r} vs {new.origin!r}"
    if new.size < old.size:
        return "fail", f"log went back from size {old.size} to {new.size}"
    if new.size == old.size:
        if new.root_hash != old.root_hash:
            return "fail", f"two different roots signed for size {old.size}: the log forked"
        return "ok", f"same tree (size {old.size})"
    if old.size == 0:
        return "ok", "every tree extends the empty tree"
    if client is None:
        return "fail", "sizes differ and no --log was given to fetch a consistency proof"
    try:
        proof = client.consistency(old.size, new.size)
        merkle.verify_consistency(old.size, new.size, proof, old.root_hash, new.root_hash)
    except TeegateError as e:
        return "fail", str(e)
    return "ok", f"size {old.size} -> {new.size}, {len(proof)} proof hashes"


def audit_bundle(
    bundle: Bundle,
    source: str,
    *,
    log_verifiers: Sequence[NoteVerifier],
    receipt_keys: Sequence[bytes],
    checkpoint: str | None = None,
    since: str | None = None,
    client: LogClient | None = None,
    now: int | None = None,
    policy: Policy | None = None,
    evidence_verifier: EvidenceVerifier | None = None,
    request_bytes: bytes | None = None,
    response_bytes: bytes | None = None,
) -> AuditReport:
    rep = AuditReport(source)
    # 1. the receipt itself
    try:
        receipt = SignedReceipt.from_json(bundle.receipt)
        rep.receipt_id = receipt.receipt_id
        rep.add("receipt.format", "ok", f"aci/1 + teegate-receipt/1, id {receipt.receipt_id}")
    except TeegateError as e:
        rep.add("receipt.format", "fail", str(e))
        return rep
    keys = list(receipt_keys) + [v.public_key for v in log_verifiers]
    try:
        receipt.verify(keys)
        rep.add("receipt.signature", "ok", f"Ed25519 by {receipt.document['key_id']}")
    except TeegateError as e:
        rep.add("receipt.signature", "fail", str(e))
    # 1b. the bytes the auditor holds (ACI §9.3 steps 3-4)
    observed = body_hashes(receipt)
    for name, data, event in (
        ("receipt.request_hash", request_bytes, "request.received"),
        ("receipt.response_hash", response_bytes, "response.returned"),
    ):
        if data is None:
            continue
        got = hashlib.sha256(data).hexdigest()
        if observed.get(event) == got:
            rep.add(name, "ok", f"{event} matches the bytes given")
        else:
            rep.add(
                name, "fail", f"{event} is {observed.get(event)}, the bytes given hash to {got}"
            )
    # 2. the checkpoint we judge inclusion against
    if not log_verifiers:
        rep.add("checkpoint.signature", "fail", "no log key given (--log-key VKEY)")
        return rep
    note = checkpoint
    if note is None and bundle.proof is not None:
        note = bundle.proof.checkpoint
    if note is None and client is not None:
        note = client.checkpoint()
    if note is None:
        rep.add("checkpoint.signature", "fail", "no checkpoint in the bundle and none given")
        return rep
    try:
        cp = _open(note, log_verifiers)
        rep.add("checkpoint.signature", "ok", f"{cp.origin} size {cp.size}")
    except TeegateError as e:
        rep.add("checkpoint.signature", "fail", str(e))
        return rep
    # 3. inclusion of this receipt's leaf in that checkpoint
    leaf = merkle.leaf_hash(jcs(receipt.document))
    try:
        if bundle.proof is not None and bundle.proof.checkpoint_size_matches(cp.size):
            index, hashes = bundle.proof.index, bundle.proof.hashes
        elif client is not None:
            index, hashes = client.inclusion(receipt.receipt_id, cp.size)
        else:
            raise TeegateError(
                f"the bundle's proof is not for tree size {cp.size}; give --log to fetch one"
            )
        merkle.verify_inclusion(leaf, index, cp.size, hashes, cp.root_hash)
        rep.add("receipt.inclusion", "ok", f"leaf {index} of {cp.size}")
    except TeegateError as e:
        rep.add("receipt.inclusion", "fail", str(e))
    # 4. consistency with an older checkpoint the auditor remembers
    if since is not None:
        try:
            old = _open(since, log_verifiers)
        except TeegateError as e:
            rep.add("checkpoint.consistency", "fail", f"--since checkpoint: {e}")
        else:
            status, detail = check_consistency(old, cp, client)
            rep.add("checkpoint.consistency", status, detail)
    # 5. attestation evidence the receipt relied on
    _audit_evidence(rep, receipt, bundle, now, policy, evidence_verifier)
    return rep


def _audit_evidence(
    rep: AuditReport,
    receipt: SignedReceipt,
    bundle: Bundle,
    now: int | None,
    policy: Policy | None,
    evidence_verifier: EvidenceVerifier | None,
) -> None:
    att = receipt.event("teegate.attestation")
    if att is None:
        rep.add("attestation.evidence", "skip", "receipt cites no attestation (not attested)")
        return
    ev = (bundle.evidence or {}).get("provider_report")
    if ev is None:
        ref = att.get("evidence_ref") or "no reference"
        rep.add("attestation.evidence", "skip", f"evidence not available in the bundle ({ref})")
        return
    want = att.get("evidence_sha256")
    raw = ev.encode() if isinstance(ev, str) else jcs(ev)
    got = hashlib.sha256(raw).hexdigest()
    if want is not None and got != want:
        rep.add("attestation.evidence_digest", "fail", f"evidence hashes to {got}, receipt {want}")
        return
    if want is not None:
        rep.add("attestation.evidence_digest", "ok", "bundle evidence is what the receipt cites")
    try:
        report = json.loads(ev) if isinstance(ev, str) else ev
    except ValueError:
        rep.add("attestation.evidence", "fail", "bundle evidence is not JSON")
        return
    nonce_hex = att.get("nonce")
    try:
        nonce = bytes.fromhex(nonce_hex) if isinstance(nonce_hex, str) else None
    except ValueError:
        rep.add("attestation.evidence", "fail", "receipt attestation nonce is not hex")
        return
    collateral = (bundle.evidence or {}).get("collateral")
    # Evidence is judged as of the call (its collateral was valid then), unless told otherwise.
    at = now if now is not None else int(receipt.document["served_at"])
    verifier = evidence_verifier or default_evidence_verifier
    status, detail = verifier(
        report,
        nonce=nonce,
        now=at,
        policy=policy,
        collateral=collateral if isinstance(collateral, str) else None,
    )
    rep.add("attestation.evidence", status, detail)


class EvidenceVerifier(Protocol):
    def __call__(
        self,
        report: dict[str, Any],
        *,
        nonce: bytes | None,
        now: int,
        policy: Policy | None,
        collateral: str | None,
    ) -> tuple[Status, str]: ...


def default_evidence_verifier(
    report: dict[str, Any],
    *,
    nonce: bytes | None,
    now: int,
    policy: Policy | None,
    collateral: str | None,
) -> tuple[Status, str]:
    """Re-verify with ``teegate.attest.report.verify_provider_report`` when it is installed."""
    try:
        attest_report = importlib.import_module("teegate.attest.report")
    except ImportError:
        return "skip", "not available: teegate.attest.report is not installed"
    fn = getattr(attest_report, "verify_provider_report", None)
    if fn is None:
        return "skip", "not available: verify_provider_report is missing"
    try:
        verdict = fn(
            report,
            nonce=nonce,
            policy=policy or Policy.default(),
            now=now,
            collateral=collateral,
        )
    except TeegateError as e:
        return "fail", f"evidence rejected: {e}"
    failed = [c.name for c in getattr(verdict, "checks", ()) if not getattr(c, "ok", True)]
    if bool(getattr(verdict, "accepted", False)):
        dev = " (development roots)" if getattr(verdict, "development", False) else ""
        return "ok", f"provider evidence re-verified{dev}"
    return "fail", "evidence rejected: " + (", ".join(failed) or "not accepted")


def decode_hashes(items: Sequence[str]) -> list[bytes]:
    return [base64.b64decode(h, validate=True) for h in items]
