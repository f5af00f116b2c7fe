"""A receipt checked back to the gateway's own attestation (ACI §9.1 then §9.3).

The log key says who wrote the log; it does not say that the key lives in a TEE. The gateway's
``GET /v1/aci/attestation`` does: its quote's report_data is sha256 of the §3.2 statement over
the workload keyset's digest (and the auditor's nonce), and the keyset lists the receipt
signing keys. So a receipt holds against the gateway's attestation when the evidence verifies,
the report data binds exactly that keyset, the receipt names that keyset, and the receipt's
key is one the keyset lists (and signed it). Each step is a named check; no I/O here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any, Protocol

from teegate.attest.policy import Policy
from teegate.errors import TeegateError
from teegate.receipts.aci import aci_report_data
from teegate.receipts.receipt import SignedReceipt, jcs, receipt_key_id

# The checks this module adds, in the order they run.
GATEWAY_CHECKS = ("gateway.keyset_digest", "gateway.report_data", "gateway.evidence",
                  "gateway.receipt_key")


class Reporter(Protocol):
    def add(self, name: str, status: Any, detail: str) -> bool: ...


class GatewayEvidenceVerifier(Protocol):
    """Verify the gateway's quote; return the 64 report-data bytes it carries."""

    def __call__(self, attestation: Mapping[str, Any], *, policy: Policy | None,
                 now: int) -> bytes: ...


def default_gateway_verifier(attestation: Mapping[str, Any], *, policy: Policy | None,
                             now: int) -> bytes:
    """``teegate.attest`` on the ACI evidence (TDX quote + collateral, or SEV-SNP report);
    raises ``TeegateError`` naming the failed checks when it is not accepted."""
    from teegate.attest.report import verify_quote_evidence, verify_snp_evidence

    ev = attestation.get("evidence")
    if not isinstance(ev, Mapping):
        raise TeegateError("the attestation has no evidence object")
    pol = policy or Policy.default()
    tee = attestation.get("tee_type")
    if tee == "tdx" and isinstance(ev.get("quote"), str):
        collateral = ev.get("collateral")
        coll = collateral if isinstance(collateral, str) else (
            jcs(collateral).decode() if isinstance(collateral, Mapping) else None)
        verdict = verify_quote_evidence(ev["quote"], coll, policy=pol, now=now,
                                        event_log=ev.get("event_log"))
    elif tee == "sev_snp" and isinstance(ev.get("report"), str):
        certs = ev.get("certificates")
        verdict = verify_snp_evidence(ev["report"],
                                      certs.encode() if isinstance(certs, str) else None,
                                      policy=pol, now=now)
    else:
        raise TeegateError(f"unsupported evidence for tee_type {tee!r}")
    if not verdict.accepted:
        failed = [f"{c.name}: {c.detail}" for c in verdict.checks if not c.ok]
        raise TeegateError("evidence rejected: " + "; ".join(failed[:3]))
    if verdict.report_data is None:
        raise TeegateError("the verified evidence carries no report data")
    return bytes.fromhex(verdict.report_data)


def audit_gateway(
    rep: Reporter,
    receipt: SignedReceipt,
    report: Mapping[str, Any],
    *,
    nonce: str | None,
    policy: Policy | None = None,
    now: int | None = None,
    verifier: GatewayEvidenceVerifier | None = None,
) -> None:
    """Add the four ``gateway.*`` checks for ``receipt`` against the ACI ``report``
    (``nonce``: the 64-hex nonce the report was fetched with, None for an unchallenged one)."""
    att = report.get("attestation")
    keyset = att.get("workload_keyset") if isinstance(att, Mapping) else None
    if not isinstance(att, Mapping) or not isinstance(keyset, Mapping):
        rep.add("gateway.keyset_digest", "fail",
                "not an ACI attestation (no attestation.workload_keyset)")
        return
    # 1. the keyset the report carries is the one its digest, and the receipt, name
    try:
        digest = "sha256:" + hashlib.sha256(jcs(dict(keyset))).hexdigest()
    except TeegateError as e:
        rep.add("gateway.keyset_digest", "fail", f"keyset cannot be canonicalised: {e}")
        return
    named = receipt.document.get("workload_keyset_digest")
    if report.get("workload_keyset_digest") != digest:
        rep.add("gateway.keyset_digest", "fail",
                f"the report's keyset hashes to {digest}, it says "
                f"{report.get('workload_keyset_digest')}")
        return
    if named != digest:
        rep.add("gateway.keyset_digest", "fail",
                f"the receipt names keyset {named}, the gateway attests {digest}")
        return
    rep.add("gateway.keyset_digest", "ok", f"receipt and attestation name {digest}")
    # 2. report_data is exactly sha256 of the statement over that digest and the nonce
    want = aci_report_data(digest, nonce)
    if att.get("report_data") != want[:32].hex():
        rep.add("gateway.report_data", "fail",
                "report_data is not sha256 of the ACI statement over this keyset digest and "
                + (f"nonce {nonce}" if nonce else "no nonce (give the nonce it was fetched with)"))
        return
    # 3. the evidence verifies, and its quote carries that report data (zero-padded)
    at = now if now is not None else int(time.time())
    try:
        quoted = (verifier or default_gateway_verifier)(att, policy=policy, now=at)
    except TeegateError as e:
        rep.add("gateway.evidence", "fail", str(e))
        return
    if quoted != want:
        rep.add("gateway.report_data", "fail",
                "the quote's report data is not the statement the report claims "
                f"({quoted[:8].hex()}…, want {want[:8].hex()}…)")
        return
    rep.add("gateway.report_data", "ok",
            "the quote binds this keyset" + (f" and nonce {nonce[:16]}…" if nonce else
                                             " (no nonce: not fresh)"))
    rep.add("gateway.evidence", "ok", f"{att.get('tee_type')} evidence verified")
    # 4. the key that signed the receipt is one the attested keyset lists
    key_id = receipt.document.get("key_id")
    entries = keyset.get("receipt_signing_keys")
    listed = [k for k in entries if isinstance(k, Mapping)] if isinstance(entries, list) else []
    pubs: list[bytes] = []
    for k in listed:
        try:
            raw = bytes.fromhex(str(k.get("public_key", "")))
        except ValueError:
            continue
        if (k.get("algo") == "ed25519" and len(raw) == 32 and k.get("key_id") == key_id
                and receipt_key_id(raw) == key_id):
            pubs.append(raw)
    if not pubs:
        rep.add("gateway.receipt_key", "fail",
                f"the receipt's key {key_id} is not a receipt signing key of the attested "
                f"keyset ({', '.join(str(k.get('key_id')) for k in listed) or 'none listed'})")
        return
    not_after = keyset.get("not_after")
    served = receipt.document.get("served_at")
    if isinstance(not_after, int) and isinstance(served, int) and served > not_after:
        rep.add("gateway.receipt_key", "fail",
                f"the receipt was served at {served}, after the keyset's not_after {not_after}")
        return
    try:
        receipt.verify(pubs)
    except TeegateError as e:
        rep.add("gateway.receipt_key", "fail", f"signature under the attested key: {e}")
        return
    rep.add("gateway.receipt_key", "ok", f"{key_id} is attested and signed the receipt")
