"""Receipts of calls: turn a CallRecord into a ``teegate.receipts.Receipt`` and submit it to the
ReceiptLog (non-blocking; signed and appended in the log's background thread)."""

from __future__ import annotations

import hashlib
import time

from teegate.gateway.calls import CallRecord
from teegate.receipts import AttestationRef, ProviderSignature, Receipt, ReceiptLog
from teegate.receipts.keys import new_receipt_id

_OUTCOMES = {"success": "success", "refused": "refused", "voided": "voided"}
_EMPTY = hashlib.sha256(b"").hexdigest()


def to_receipt(record: CallRecord, receipt_id: str, *, currency: str) -> Receipt:
    """The receipt of one call. A client disconnect is a ``failed`` outcome with the cost of
    what the provider produced; a refusal never forwarded has no forwarded hash."""
    outcome = _OUTCOMES.get(record.outcome, "failed")
    sig = None
    if record.signature and record.signature_check is not None:
        s = record.signature
        sig = ProviderSignature(
            text=s.get("text") or s.get("x-teegate-text", ""),
            signature=s.get("signature") or s.get("x-teegate-signature", ""),
            signing_key=s.get("signing_address") or s.get("x-teegate-signing-address", ""),
            algo=s.get("signing_algo") or s.get("x-teegate-signing-algo", ""),
            verified=record.signature_check == "verified")
    att = None
    if record.attestation is not None:
        a = record.attestation
        att = AttestationRef(verdict_digest=a["verdict_digest"],
                             evidence_sha256=a.get("evidence_sha256") or None,
                             evidence_ref=f"/v1/providers/{record.provider}/attestation",
                             tee=a.get("tee"), tcb_status=a.get("tcb_status"),
                             gpu=bool(a.get("gpu")), nonce=a.get("nonce"))
    usage = {k: int(v) for k, v in (record.usage or {}).items()
             if isinstance(v, int) and not isinstance(v, bool)}
    error = record.error
    if record.outcome == "disconnected":
        error = "client disconnected mid-stream"
    forwarded = record.forwarded_sha256 or record.request_sha256
    served = record.provider is not None
    return Receipt(
        receipt_id=receipt_id, time_ms=int(time.time() * 1000), agent=record.agent,
        conversation=record.conversation, platform=record.platform or "",
        provider=record.provider, model=record.model or None,
        trust_level=record.served_trust if served else None,
        trust_required=record.required_trust, outcome=outcome,  # type: ignore[arg-type]
        request_received_sha256=record.request_sha256,
        request_forwarded_sha256=forwarded if served else None,
        response_received_sha256=record.response_sha256 if (
            record.response_sha256 != record.returned_sha256) else None,
        response_returned_sha256=record.returned_sha256 or _EMPTY,
        chat_id=record.chat_id, provider_signature=sig, attestation=att, usage=usage,
        cost=max(record.cost or 0, 0), currency=currency,
        transfer_ids=tuple(record.transfer_ids), error=error,
    )


class ReceiptBridge:
    """The gateway's ``Receipts`` on top of a ReceiptLog."""

    def __init__(self, log: ReceiptLog, *, currency: str) -> None:
        self.log = log
        self.currency = currency

    def new_id(self) -> str:
        return new_receipt_id()

    def submit(self, record: CallRecord, receipt_id: str) -> None:
        self.log.submit(to_receipt(record, receipt_id, currency=self.currency))
