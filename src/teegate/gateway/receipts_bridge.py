"""Receipts of calls: turn a CallRecord into a ``teegate.receipts.Receipt``, sign it and make it
durable in the ReceiptLog's queue (``tlog_queue``) before the answer ends: in the settlement's
own transaction when the ledger shares the log's database, else in a commit of its own. The
log's writer appends queued receipts to the tree in the background."""

from __future__ import annotations

import hashlib
import time

from teegate.gateway.calls import CallRecord
from teegate.ledger import Ledger
from teegate.receipts import AttestationRef, ProviderSignature, Receipt, ReceiptLog
from teegate.receipts.keys import new_receipt_id
from teegate.receipts.store import Tx

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
                             gpu=bool(a.get("gpu")), nonce=a.get("nonce"),
                             model_identity=a.get("model_identity"),
                             model_policy=a.get("model_policy"))
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
        verified_after_delivery=record.verified_after_delivery,
        endpoint=record.endpoint, translation=record.translation,
        channel_id=getattr(record, "channel_id", None),
        voucher_cumulative=getattr(record, "voucher_cumulative", None),
    )


class ReceiptBridge:
    """The gateway's ``Receipts`` on top of a ReceiptLog. With ``ledger`` in the same database
    the log writes through the ledger's group commit (``shared``)."""

    def __init__(self, log: ReceiptLog, *, currency: str, ledger: Ledger | None = None) -> None:
        self.log = log
        self.currency = currency
        self.shared = ledger is not None and same_database(ledger, log)
        self.keyset_digest = log.signer.keyset_digest
        if self.shared:
            assert ledger is not None
            log.use_writer(ledger.backend.run)

    @property
    def stuck(self) -> str | None:
        return self.log.stuck

    def new_id(self) -> str:
        return new_receipt_id()

    def attach(self, tx: Tx, record: CallRecord, receipt_id: str) -> None:
        self.log.enqueue(tx, [self.log.entry(to_receipt(record, receipt_id,
                                                         currency=self.currency))])

    def commit(self, record: CallRecord, receipt_id: str) -> None:
        self.log.commit([to_receipt(record, receipt_id, currency=self.currency)])

    def wake(self) -> None:
        self.log.wake()


def same_database(ledger: Ledger, log: ReceiptLog) -> bool:
    """Whether one transaction can hold the ledger's and the log's rows."""
    backend = ledger.backend
    return bool(backend.url == log.store.db.url
                and getattr(backend, "schema", None) == log.store.db.schema)
