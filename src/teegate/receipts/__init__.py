"""Signed receipts of every call and the transparency log they are appended to.

Receipts are aci/1 documents signed with Ed25519 over their JCS form (``receipt``); the log is
an RFC 6962 Merkle tree in the ledger's database with C2SP signed checkpoints (``log``,
``store``, ``merkle``, ``note``, ``checkpoint``); ``http`` mounts the routes, ``bundle`` makes
offline proof bundles and ``audit`` checks them. The format is documented in docs/receipts.md.
"""

from __future__ import annotations

from teegate.receipts.audit import AuditCheck, AuditReport, audit_bundle, check_consistency
from teegate.receipts.bundle import Bundle, TlogProof, make_bundle, parse_bundle, parse_tlog_proof
from teegate.receipts.checkpoint import (
    Checkpoint,
    open_checkpoint,
    parse_checkpoint_body,
    sign_checkpoint,
)
from teegate.receipts.keys import load_or_create_log_key, new_receipt_id
from teegate.receipts.log import LoggedReceipt, ReceiptLog, ReceiptProof, SignedCheckpoint
from teegate.receipts.merkle import (
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from teegate.receipts.note import (
    NoteSigner,
    NoteVerifier,
    parse_note,
    parse_skey,
    parse_vkey,
    sign_note,
    verify_note,
)
from teegate.receipts.receipt import (
    AttestationRef,
    ProviderSignature,
    Receipt,
    ReceiptSigner,
    SignedReceipt,
    sha256_hex,
    verdict_digest,
)
from teegate.receipts.startup import CheckpointVerificationError, StartupCheck

__all__ = [
    "AttestationRef",
    "AuditCheck",
    "AuditReport",
    "Bundle",
    "Checkpoint",
    "CheckpointVerificationError",
    "LoggedReceipt",
    "NoteSigner",
    "NoteVerifier",
    "ProviderSignature",
    "Receipt",
    "ReceiptLog",
    "ReceiptProof",
    "ReceiptSigner",
    "SignedCheckpoint",
    "SignedReceipt",
    "StartupCheck",
    "TlogProof",
    "audit_bundle",
    "check_consistency",
    "leaf_hash",
    "load_or_create_log_key",
    "make_bundle",
    "new_receipt_id",
    "node_hash",
    "open_checkpoint",
    "parse_bundle",
    "parse_checkpoint_body",
    "parse_note",
    "parse_skey",
    "parse_tlog_proof",
    "parse_vkey",
    "root_from_inclusion_proof",
    "sha256_hex",
    "sign_checkpoint",
    "sign_note",
    "verdict_digest",
    "verify_consistency",
    "verify_inclusion",
    "verify_note",
]
