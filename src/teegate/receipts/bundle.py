"""Offline proof bundles: a receipt plus its C2SP ``tlog-proof`` (index, hashes, checkpoint).

The proof itself is exactly ``c2sp.org/tlog-proof@v1`` text; since that format leaves the
entry out, the bundle is a small JSON envelope (``teegate-receipt-bundle/1``)::

    {"format": "teegate-receipt-bundle/1",
     "receipt": {...signed receipt document...},
     "tlog_proof": "c2sp.org/tlog-proof@v1\\nindex 7\\n<base64 hash>...\\n\\n<checkpoint note>",
     "log_vkey": "<origin>+<hash>+<key>",          (informational, never trusted)
     "receipt_keyset": {...},                      (informational, never trusted)
     "evidence": {"provider_report": {...}}}       (optional, checked against the receipt)

The verifier recomputes the leaf from the receipt (JCS bytes), and trusts only the keys the
auditor passes in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from teegate import safejson
from teegate.errors import EvidenceError, LogError
from teegate.receipts.note import b64, b64decode_strict, parse_note

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
BUNDLE_FORMAT = "teegate-receipt-bundle/1"
_INDEX = re.compile(r"index (0|[1-9][0-9]{0,19})")


@dataclass(frozen=True)
class TlogProof:
    index: int
    hashes: list[bytes]
    checkpoint: str  # the signed checkpoint note, verbatim
    extra: bytes | None = None

    def checkpoint_size_matches(self, size: int) -> bool:
        """Whether this proof was made for a tree of ``size`` leaves."""
        from teegate.receipts.checkpoint import parse_checkpoint_body

        try:
            return parse_checkpoint_body(parse_note(self.checkpoint).text).size == size
        except LogError:
            return False

    def format(self) -> str:
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + b64(self.extra))
        lines.append(f"index {self.index}")
        lines.extend(b64(h) for h in self.hashes)
        return "\n".join(lines) + "\n\n" + self.checkpoint


def parse_tlog_proof(text: str) -> TlogProof:
    """Strict parse of a ``c2sp.org/tlog-proof@v1`` text."""
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise LogError("tlog-proof: no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != TLOG_PROOF_HEADER:
        raise LogError(f"tlog-proof: first line must be {TLOG_PROOF_HEADER!r}")
    pos = 1
    extra = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        extra = b64decode_strict(lines[pos][len("extra ") :], "tlog-proof extra")
        pos += 1
    if pos >= len(lines):
        raise LogError("tlog-proof: missing index line")
    m = _INDEX.fullmatch(lines[pos])
    if not m:
        raise LogError(f"tlog-proof: bad index line {lines[pos]!r}")
    hashes = []
    for line in lines[pos + 1 :]:
        h = b64decode_strict(line, "tlog-proof hash")
        if len(h) != 32:
            raise LogError("tlog-proof: hashes must be 32 bytes")
        hashes.append(h)
    parse_note(checkpoint)  # shape only; the caller verifies it with its keys
    return TlogProof(int(m.group(1)), hashes, checkpoint, extra)


def make_bundle(
    receipt: Mapping[str, Any],
    proof: TlogProof,
    *,
    log_vkey: str | None = None,
    receipt_keyset: Mapping[str, Any] | None = None,
    evidence: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "receipt": dict(receipt),
        "tlog_proof": proof.format(),
    }
    if log_vkey:
        out["log_vkey"] = log_vkey
    if receipt_keyset is not None:
        out["receipt_keyset"] = dict(receipt_keyset)
    if evidence is not None:
        out["evidence"] = dict(evidence)
    return out


@dataclass(frozen=True)
class Bundle:
    receipt: dict[str, Any]
    proof: TlogProof | None
    evidence: dict[str, Any] | None


def parse_bundle(data: bytes | str) -> Bundle:
    """Accept a bundle, a ``GET /v1/receipts/{id}`` answer, or a bare receipt document."""
    try:
        obj = safejson.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise EvidenceError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise EvidenceError("expected a JSON object")
    if "receipt" not in obj:
        if obj.get("api_version"):
            return Bundle(obj, None, None)
        raise EvidenceError("neither a receipt bundle nor a receipt document")
    receipt = obj["receipt"]
    if not isinstance(receipt, dict):
        raise EvidenceError("bundle: receipt is not an object")
    proof = None
    if isinstance(obj.get("tlog_proof"), str):
        proof = parse_tlog_proof(obj["tlog_proof"])
    elif "inclusion_proof" in obj and "checkpoint" in obj:
        items, index, note = obj["inclusion_proof"], obj.get("leaf_index"), obj["checkpoint"]
        if not isinstance(items, list) or not all(isinstance(h, str) for h in items):
            raise EvidenceError("bundle: inclusion_proof must be a list of base64 strings")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise EvidenceError("bundle: leaf_index must be a non-negative integer")
        if not isinstance(note, str):
            raise EvidenceError("bundle: checkpoint must be the signed note text")
        hashes = [b64decode_strict(h, "bundle inclusion_proof hash") for h in items]
        proof = TlogProof(index, hashes, note)
    ev = obj.get("evidence")
    return Bundle(receipt, proof, ev if isinstance(ev, dict) else None)
