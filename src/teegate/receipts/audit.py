"""Offline audit of receipts and log monitoring (the logic behind ``teegate audit``).

Each step is a named check with a status: ``ok``, ``fail``, ``skip`` (the check applies but
could not run: no evidence in the bundle, no verifier installed) or ``n/a`` (nothing to check,
e.g. a receipt of an unattested call cites no evidence). A receipt is fully verified
(``AuditReport.ok``) only when no check failed and none was skipped; ``holds(allow_skipped=True)``
accepts skips for auditors who knowingly take the gateway's word for those steps. Only keys the
auditor supplies are trusted.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from teegate import safejson
from teegate.attest.policy import Policy
from teegate.errors import TeegateError
from teegate.receipts import merkle
from teegate.receipts.bundle import Bundle
from teegate.receipts.checkpoint import Checkpoint, open_checkpoint
from teegate.receipts.gateway_audit import GatewayEvidenceVerifier, audit_gateway
from teegate.receipts.note import NoteVerifier
from teegate.receipts.receipt import SignedReceipt, body_hashes, jcs

_NONCE = re.compile(r"[0-9a-f]{64}")

Status = Literal["ok", "fail", "skip", "n/a"]
ATTESTED_LEVELS = ("attested", "attested+gpu")


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
    # The model identity the receipt says the call relied on (and, once the evidence is
    # re-verified, that the evidence shows): OS image, compose hash, images, weights.
    model_identity: dict[str, Any] | None = None

    @property
    def failed(self) -> list[AuditCheck]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def skipped(self) -> list[AuditCheck]:
        return [c for c in self.checks if c.status == "skip"]

    def holds(self, allow_skipped: bool = False) -> bool:
        """Something was verified, nothing failed, and (unless allowed) nothing was skipped."""
        if self.failed or not any(c.status == "ok" for c in self.checks):
            return False
        return allow_skipped or not self.skipped

    @property
    def ok(self) -> bool:
        """Fully verified: every applicable check ran and passed."""
        return self.holds(allow_skipped=False)

    def add(self, name: str, status: Status, detail: str) -> bool:
        self.checks.append(AuditCheck(name, status, detail))
        return status != "fail"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "receipt_id": self.receipt_id,
            "ok": self.ok,
            "complete": not self.skipped,
            "failed": [c.name for c in self.failed],
            "skipped": [c.name for c in self.skipped],
            "checks": [c.to_json() for c in self.checks],
            "model_identity": self.model_identity,
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
    for c in (old, new):
        if c.size == 0 and c.root_hash != merkle.EMPTY_ROOT:
            return "fail", "a checkpoint of size 0 signs a root that is not the empty tree's"
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
    gateway_attestation: Mapping[str, Any] | None = None,
    gateway_nonce: str | None = None,
    gateway_verifier: GatewayEvidenceVerifier | None = None,
) -> AuditReport:
    """Every check of one receipt. With ``gateway_attestation`` (the gateway's ACI report,
    fetched with ``gateway_nonce``) also the ``gateway.*`` checks: the receipt's key is the
    one the gateway's own TEE evidence binds (``teegate.receipts.gateway_audit``)."""
    rep = AuditReport(source)
    # 1. the receipt itself
    try:
        receipt = SignedReceipt.from_json(bundle.receipt)
        leaf = merkle.leaf_hash(jcs(receipt.document))
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
    # 1c. what the receipt claims about trust, and the provider's own signature
    _audit_claims(rep, receipt)
    _audit_provider_signature(rep, receipt, observed)
    # 2. the checkpoint we judge inclusion against
    cp = _audit_checkpoint(rep, bundle, log_verifiers, checkpoint, client)
    if cp is not None:
        # 3. inclusion of this receipt's leaf in that checkpoint
        _audit_inclusion(rep, receipt, leaf, bundle, cp, client)
        # 4. consistency with another checkpoint the auditor remembers (older or newer)
        if since is not None:
            try:
                other = _open(since, log_verifiers)
            except TeegateError as e:
                rep.add("checkpoint.consistency", "fail", f"--since checkpoint: {e}")
            else:
                old, new = (other, cp) if other.size <= cp.size else (cp, other)
                status, detail = check_consistency(old, new, client)
                rep.add("checkpoint.consistency", status, detail)
    # 5. attestation evidence the receipt relied on
    _audit_evidence(rep, receipt, bundle, now, policy, evidence_verifier)
    # 6. the gateway's own attestation binds the key that signed the receipt
    if gateway_attestation is not None:
        audit_gateway(rep, receipt, gateway_attestation, nonce=gateway_nonce, policy=policy,
                      now=now, verifier=gateway_verifier)
    return rep


def _audit_checkpoint(
    rep: AuditReport,
    bundle: Bundle,
    log_verifiers: Sequence[NoteVerifier],
    checkpoint: str | None,
    client: LogClient | None,
) -> Checkpoint | None:
    if not log_verifiers:
        rep.add("checkpoint.signature", "fail", "no log key given (--log-key VKEY)")
        return None
    note = checkpoint
    if note is None and bundle.proof is not None:
        note = bundle.proof.checkpoint
    try:
        if note is None and client is not None:
            note = client.checkpoint()
        if note is None:
            rep.add("checkpoint.signature", "fail", "no checkpoint in the bundle and none given")
            return None
        cp = _open(note, log_verifiers)
    except TeegateError as e:
        rep.add("checkpoint.signature", "fail", str(e))
        return None
    rep.add("checkpoint.signature", "ok", f"{cp.origin} size {cp.size}")
    return cp


def _audit_inclusion(
    rep: AuditReport,
    receipt: SignedReceipt,
    leaf: bytes,
    bundle: Bundle,
    cp: Checkpoint,
    client: LogClient | None,
) -> None:
    try:
        if bundle.proof is not None and bundle.proof.checkpoint_size_matches(cp.size):
            index, hashes = bundle.proof.index, bundle.proof.hashes
        elif client is not None:
            index, hashes = client.inclusion(receipt.receipt_id, cp.size)
        elif bundle.proof is None:
            raise TeegateError("the input has no inclusion proof; give --log to fetch one")
        else:
            raise TeegateError(
                f"the bundle's proof is not for tree size {cp.size}; give --log to fetch one"
            )
        merkle.verify_inclusion(leaf, index, cp.size, hashes, cp.root_hash)
        rep.add("receipt.inclusion", "ok", f"leaf {index} of {cp.size}")
    except TeegateError as e:
        rep.add("receipt.inclusion", "fail", str(e))


def _audit_claims(rep: AuditReport, receipt: SignedReceipt) -> None:
    """An attested receipt must cite its verdict and a verified provider signature."""
    call = receipt.event("teegate.call") or {}
    level = call.get("trust_level")
    if level not in ATTESTED_LEVELS:
        rep.add("receipt.trust_claim", "n/a", f"trust level served: {level or 'none'}")
        return
    problems = []
    upstream = receipt.event("upstream.verified") or {}
    if upstream.get("result") != "verified":
        problems.append("upstream.verified is not 'verified'")
    att = receipt.event("teegate.attestation")
    if att is None:
        problems.append("no teegate.attestation event (no verdict cited)")
    elif level == "attested+gpu" and att.get("gpu") is not True:
        problems.append("the cited attestation has no GPU evidence")
    ps = receipt.event("teegate.provider_signature")
    if ps is None or ps.get("verified") is not True:
        problems.append("no verified provider signature")
    if problems:
        rep.add("receipt.trust_claim", "fail", f"claims {level} but " + "; ".join(problems))
    else:
        rep.add("receipt.trust_claim", "ok", f"{level}: verdict and provider signature cited")


def _audit_provider_signature(
    rep: AuditReport, receipt: SignedReceipt, observed: dict[str, str]
) -> None:
    """Re-check the provider's signature: it must cover the bytes this receipt records."""
    ps = receipt.event("teegate.provider_signature")
    if ps is None or ps.get("verified") is not True:
        rep.add("provider.signature", "n/a", "the receipt claims no verified provider signature")
        return
    from teegate.node.signatures import verify_response_signature

    forwarded = observed.get("request.forwarded")
    response = observed.get("response.received") or observed.get("response.returned")
    want = f"{forwarded}:{response}"
    text, sig, key, algo = (ps.get(k) for k in ("text", "signature", "signing_key", "algo"))
    # A teegate node signs the gateway's per-call nonce as a third field (docs/node.md).
    nonce = text[len(want) + 1:] if isinstance(text, str) and text.startswith(want + ":") \
        else None
    if text != want and (nonce is None or not _NONCE.fullmatch(nonce)):
        rep.add(
            "provider.signature",
            "fail",
            f"signed text {text!r} is not request.forwarded:response hashes {want!r} "
            "(with or without a call nonce)",
        )
        return
    if not all(isinstance(v, str) for v in (sig, key, algo)) or not verify_response_signature(
        str(text), str(sig), str(key), str(algo)
    ):
        rep.add("provider.signature", "fail", f"{algo} signature by {key} does not verify")
        return
    rep.add("provider.signature", "ok", f"{algo} signature by {key} over the recorded hashes")


@dataclass(frozen=True)
class EvidenceResult:
    """What an evidence verifier concluded, and the key the evidence binds (hex, if any)."""

    status: Status
    detail: str
    bound_key: str | None = None
    gpus: int = 0  # accepted NVIDIA GPU components in the verdict
    model: dict[str, Any] | None = None  # the model identity the evidence shows


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
        rep.add("attestation.evidence", "n/a", "receipt cites no attestation")
        return
    recorded = att.get("model_identity")
    rep.model_identity = dict(recorded) if isinstance(recorded, dict) else None
    ev = (bundle.evidence or {}).get("provider_report")
    if ev is None:
        ref = att.get("evidence_ref") or "no reference"
        rep.add(
            "attestation.evidence",
            "skip",
            f"evidence not in the bundle ({ref}): the attestation rests on the gateway's word",
        )
        return
    want = att.get("evidence_sha256")
    nonce_hex = att.get("nonce")
    if want is None and nonce_hex is None:
        rep.add(
            "attestation.evidence",
            "fail",
            "the receipt binds no evidence (neither evidence_sha256 nor nonce): the bundle's "
            "evidence cannot be tied to this call",
        )
        return
    try:
        raw = ev.encode() if isinstance(ev, str) else jcs(ev)
    except (TeegateError, UnicodeEncodeError) as e:
        rep.add("attestation.evidence", "fail", f"bundle evidence cannot be encoded: {e}")
        return
    got = hashlib.sha256(raw).hexdigest()
    if want is not None and got != want:
        rep.add("attestation.evidence_digest", "fail", f"evidence hashes to {got}, receipt {want}")
        return
    if want is not None:
        rep.add("attestation.evidence_digest", "ok", "bundle evidence is what the receipt cites")
    try:
        report = safejson.loads(ev) if isinstance(ev, str) else ev
    except ValueError:
        rep.add("attestation.evidence", "fail", "bundle evidence is not JSON")
        return
    try:
        nonce = bytes.fromhex(nonce_hex) if isinstance(nonce_hex, str) else None
    except ValueError:
        rep.add("attestation.evidence", "fail", "receipt attestation nonce is not hex")
        return
    collateral = (bundle.evidence or {}).get("collateral")
    # Evidence is judged as of the call (its collateral was valid then), unless told otherwise.
    at = now if now is not None else int(receipt.document["served_at"])
    verifier = evidence_verifier or default_evidence_verifier
    res = verifier(
        report,
        nonce=nonce,
        now=at,
        policy=policy,
        collateral=collateral if isinstance(collateral, str) else None,
    )
    rep.add("attestation.evidence", res.status, res.detail)
    if res.status == "ok":
        _audit_model_identity(rep, res.model)
        _audit_key_binding(rep, receipt, res.bound_key)
        level = (receipt.event("teegate.call") or {}).get("trust_level")
        if level == "attested+gpu":
            if res.gpus > 0:
                rep.add("attestation.gpu", "ok", f"{res.gpus} GPU(s) verified for the same nonce")
            else:
                rep.add(
                    "attestation.gpu",
                    "fail",
                    "the receipt claims attested+gpu but the evidence holds no verified GPU",
                )


_IDENTITY_KEYS = ("os_image", "compose_hash", "app_id", "images", "unpinned_images",
                  "weights_sha256")


def _audit_model_identity(rep: AuditReport, shown: dict[str, Any] | None) -> None:
    """The identity the receipt records must be the one the re-verified evidence shows (the
    gateway's word is not taken for it); the policy's model pins were applied in the
    re-verification itself."""
    recorded = rep.model_identity
    if recorded is None:
        rep.add("attestation.model_identity", "n/a", "the receipt records no model identity")
        if shown is not None:
            rep.model_identity = shown
        return
    if shown is None:
        rep.add("attestation.model_identity", "skip",
                "the evidence verifier reported no model identity to compare")
        return
    differ = [k for k in _IDENTITY_KEYS if recorded.get(k) != shown.get(k)]
    if differ:
        rep.add("attestation.model_identity", "fail",
                f"the receipt records another model identity than the evidence shows "
                f"({', '.join(differ)})")
        return
    compose = recorded.get("compose_hash") or "no compose hash"
    images = recorded.get("images") or []
    rep.add("attestation.model_identity", "ok",
            f"the evidence shows the recorded identity: compose {compose}, "
            f"{len(images)} pinned image(s)"
            + (f", weights {str(recorded['weights_sha256'])[:16]}…"
               if recorded.get("weights_sha256") else ""))


def _audit_key_binding(rep: AuditReport, receipt: SignedReceipt, bound: str | None) -> None:
    """The attested key must be the key that signed the response this receipt records."""
    ps = receipt.event("teegate.provider_signature")
    if ps is None:
        rep.add("attestation.key_binding", "n/a", "the receipt records no provider signature")
        return
    from teegate.node.signatures import normalize_signing_address

    key = ps.get("signing_key")
    algo = ps.get("algo")
    signer = normalize_signing_address(key, algo) if isinstance(key, str) and isinstance(
        algo, str
    ) else None
    attested = normalize_signing_address(bound, algo) if bound and isinstance(algo, str) else None
    if signer is not None and attested is not None and signer == attested:
        rep.add("attestation.key_binding", "ok", f"evidence binds {key}, which signed the response")
    else:
        rep.add(
            "attestation.key_binding",
            "fail",
            f"the evidence binds {bound or 'no key'}, the response was signed by {key}",
        )


class EvidenceVerifier(Protocol):
    def __call__(
        self,
        report: dict[str, Any],
        *,
        nonce: bytes | None,
        now: int,
        policy: Policy | None,
        collateral: str | None,
    ) -> EvidenceResult: ...


def default_evidence_verifier(
    report: dict[str, Any],
    *,
    nonce: bytes | None,
    now: int,
    policy: Policy | None,
    collateral: str | None,
) -> EvidenceResult:
    """Re-verify with ``teegate.attest.report.verify_provider_report`` when it is installed."""
    try:
        attest_report = importlib.import_module("teegate.attest.report")
    except ImportError:
        return EvidenceResult("skip", "not available: teegate.attest.report is not installed")
    fn = getattr(attest_report, "verify_provider_report", None)
    if fn is None:
        return EvidenceResult("skip", "not available: verify_provider_report is missing")
    try:
        verdict = fn(
            report,
            nonce=nonce,
            policy=policy or Policy.default(),
            now=now,
            collateral=collateral,
        )
    except TeegateError as e:
        return EvidenceResult("fail", f"evidence rejected: {e}")
    except Exception as e:  # a verifier bug must not pass, nor crash the audit
        return EvidenceResult("fail", f"evidence verifier crashed: {type(e).__name__}: {e}")
    failed = [c.name for c in getattr(verdict, "checks", ()) if not getattr(c, "ok", True)]
    bound = getattr(verdict, "bound_key", None)
    gpus = sum(
        1
        for c in getattr(verdict, "components", ())
        if getattr(c, "tee", None) == "nvidia-gpu" and getattr(c, "accepted", False)
    )
    model = getattr(verdict, "model", None)
    model = dict(model) if isinstance(model, Mapping) else None
    if bool(getattr(verdict, "accepted", False)):
        dev = " (development roots)" if getattr(verdict, "development", False) else ""
        return EvidenceResult("ok", f"provider evidence re-verified{dev}", bound, gpus, model)
    return EvidenceResult("fail", "evidence rejected: " + (", ".join(failed) or "not accepted"))


def decode_hashes(items: Sequence[str]) -> list[bytes]:
    return [base64.b64decode(h, validate=True) for h in items]
