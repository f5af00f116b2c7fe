"""The receipt of one call: an ACI ``aci/1`` receipt document with teegate extension events.

The document carries the aci/1 members (``api_version``, ``receipt_id``, ``chat_id``,
``model``, ``workload_keyset_digest``, ``endpoint``, ``method``, ``served_at``, ``event_log``,
``key_id``, ``signature``) so ACI verifiers can check signature and body hashes; teegate's own
facts (agent, wallet, cost, provider signature, attestation) travel as extension events
(``teegate.*``), which ACI verifiers ignore. ``v`` names teegate's receipt version.
The Ed25519 signature (hex) covers the RFC 8785 (JCS) form of the document without
``signature``, so any JSON encoding of the same document verifies.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from teegate import safejson
from teegate.errors import EvidenceError, VerificationError

ACI_VERSION = "aci/1"
RECEIPT_VERSION = "teegate-receipt/1"
OUTCOMES = ("success", "failed", "voided", "refused")
TRUST_LEVELS = ("standard", "tee", "attested", "attested+gpu")
_MAX_INT = (1 << 53) - 1  # JCS numbers are IEEE doubles: stay exact
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SIG_HEX = re.compile(r"[0-9a-f]{128}")
RECEIPT_ID = re.compile(r"[A-Za-z0-9_.:~-]{1,200}")

Outcome = Literal["success", "failed", "voided", "refused"]
UpstreamResult = Literal["verified", "failed", "not_applicable"]
UPSTREAM_RESULTS = ("verified", "failed", "not_applicable")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jcs(obj: Any) -> bytes:
    """RFC 8785 canonical JSON bytes."""
    try:
        out: bytes = rfc8785.dumps(obj)
        return out
    except Exception as e:  # rfc8785 raises its own types for floats, big ints, surrogates
        raise EvidenceError(f"cannot canonicalise receipt (JCS): {e}") from None


def jcs_trusted(obj: Any) -> bytes:
    """JCS for documents teegate builds itself: ASCII keys, integers within ±2^53, no floats.

    Under those constraints RFC 8785 output equals Python's sorted compact ``json.dumps``
    (same string escapes, same integer form, code-point order = UTF-16 order for ASCII keys);
    ``tests/receipts/test_receipt.py`` checks the equality against the ``rfc8785`` package.
    Documents from elsewhere always go through :func:`jcs`.
    """
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError):
        return jcs(obj)


def _hash_field(hex_digest: str | None, what: str) -> str | None:
    if hex_digest is None:
        return None
    h = hex_digest.lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(h):
        raise EvidenceError(f"receipt: {what} must be a sha256 hex digest, got {hex_digest!r}")
    return h


def clean_text(s: str) -> str:
    """``s`` with lone surrogates replaced by U+FFFD.

    ``json.loads`` accepts ``"\\ud800"``, but no UTF-8 JSON (so no JCS form, no signature) can
    carry it. A receipt records such text (a requested model name, an error) with U+FFFD; the
    request hash still covers the exact bytes.
    """
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return s


def _clean_fields(obj: Any, names: Iterable[str]) -> None:
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, str):
            object.__setattr__(obj, name, clean_text(v))


def _int(v: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or abs(v) > _MAX_INT:
        raise EvidenceError(f"receipt: {what} must be an integer within ±2^53, got {v!r}")
    return v


@dataclass(frozen=True, kw_only=True)
class ProviderSignature:
    """The provider's signature over ``sha256hex(request):sha256hex(response)``."""

    text: str
    signature: str
    signing_key: str  # 0x-address (ecdsa) or hex public key (ed25519)
    algo: str  # "ecdsa" | "ed25519"
    verified: bool

    def __post_init__(self) -> None:
        _clean_fields(self, ("text", "signature", "signing_key", "algo"))

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "signature": self.signature,
            "signing_key": self.signing_key,
            "algo": self.algo,
            "verified": self.verified,
        }


@dataclass(frozen=True, kw_only=True)
class AttestationRef:
    """The attestation verdict a call relied on, and where its evidence can be fetched."""

    verdict_digest: str  # hex SHA-256 of the JCS form of the verdict record
    evidence_ref: str | None = None  # URL or identifier where the evidence is kept
    evidence_sha256: str | None = None  # SHA-256 of the exact evidence bytes (provider report)
    tee: str | None = None
    tcb_status: str | None = None
    gpu: bool = False
    nonce: str | None = None  # hex of the nonce teegate sent for that evidence
    # The model identity the evidence showed (OS image, compose hash, image digests, weights,
    # Sigstore log entries: ``teegate.attest.identity``), and the model whose policy it met.
    model_identity: Mapping[str, Any] | None = None
    model_policy: str | None = None

    def __post_init__(self) -> None:
        _clean_fields(self, ("evidence_ref", "tee", "tcb_status", "nonce", "model_policy"))
        if self.model_identity is not None:
            object.__setattr__(self, "model_identity", dict(self.model_identity))
        # aci/1 wants session_id (our verdict digest) as bare lower-case 64-hex
        object.__setattr__(
            self, "verdict_digest", _hash_field(self.verdict_digest, "attestation.verdict_digest")
        )
        object.__setattr__(
            self,
            "evidence_sha256",
            _hash_field(self.evidence_sha256, "attestation.evidence_sha256"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict_digest": self.verdict_digest,
            "evidence_ref": self.evidence_ref,
            "evidence_sha256": self.evidence_sha256,
            "tee": self.tee,
            "tcb_status": self.tcb_status,
            "gpu": self.gpu,
            "nonce": self.nonce,
            "model_identity": self.model_identity,
            "model_policy": self.model_policy,
        }


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """Everything a receipt records about one call (unsigned). Hashes are lower-case hex."""

    receipt_id: str
    time_ms: int  # when the call finished, Unix milliseconds
    agent: str
    conversation: str | None
    platform: str
    provider: str | None
    model: str | None  # as requested
    trust_level: str | None  # level served (None when nothing was served)
    trust_required: str | None = None
    outcome: Outcome
    request_received_sha256: str
    request_forwarded_sha256: str | None = None  # None: never forwarded (refusal)
    response_received_sha256: str | None = None  # provider's bytes, when they differ
    response_returned_sha256: str
    chat_id: str | None = None
    upstream_model: str | None = None
    provider_signature: ProviderSignature | None = None
    attestation: AttestationRef | None = None
    usage: Mapping[str, int] = field(default_factory=dict)
    cost: int = 0
    currency: str = ""
    transfer_ids: tuple[str, ...] = ()
    error: str | None = None
    # Delivered before the provider's (endpoint) signature was checked: an operator's
    # per-provider choice (verify_after_delivery); absent from the document when False.
    verified_after_delivery: bool = False
    # The gateway translated between the agent's API and the provider's (the provider
    # signed what it answered, the agent got its translation); absent when None.
    translation: str | None = None
    endpoint: str = "/v1/chat/completions"
    method: str = "POST"
    # Paid on an on-chain conversation channel (teegate.chain): the channel and the cumulative
    # ceiling of the agent's voucher that covered the call; absent from the document otherwise.
    channel_id: str | None = None
    voucher_cumulative: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.receipt_id, str) or not RECEIPT_ID.fullmatch(self.receipt_id):
            raise EvidenceError(
                "receipt: receipt_id must be 1..200 characters of A-Z a-z 0-9 _ . : ~ - "
                f"(it goes into URLs and headers), got {self.receipt_id!r}"
            )
        if not isinstance(self.agent, str) or not self.agent or not self.agent.isprintable():
            raise EvidenceError(f"receipt: agent must be a non-empty printable id: {self.agent!r}")
        _clean_fields(
            self,
            ("conversation", "platform", "provider", "model", "chat_id", "upstream_model",
             "error", "endpoint", "method", "currency", "translation"),
        )
        object.__setattr__(
            self, "transfer_ids", tuple(clean_text(str(t)) for t in self.transfer_ids)
        )
        if self.outcome not in OUTCOMES:
            raise EvidenceError(f"receipt: outcome {self.outcome!r} not in {OUTCOMES}")
        for lvl in (self.trust_level, self.trust_required):
            if lvl is not None and lvl not in TRUST_LEVELS:
                raise EvidenceError(f"receipt: trust level {lvl!r} not in {TRUST_LEVELS}")
        _int(self.time_ms, "time_ms")
        _int(self.cost, "cost")
        if self.channel_id is not None and not (
                isinstance(self.channel_id, str) and len(self.channel_id) == 66
                and self.channel_id.startswith("0x")):
            raise EvidenceError("receipt: channel_id must be a 0x-prefixed bytes32")
        if self.voucher_cumulative is not None:
            _int(self.voucher_cumulative, "voucher_cumulative")
        for k, v in self.usage.items():
            if not (isinstance(k, str) and k.isascii()):
                raise EvidenceError(f"receipt: usage key {k!r} must be an ASCII string")
            _int(v, f"usage.{k}")
        for name in (
            "request_received_sha256",
            "request_forwarded_sha256",
            "response_received_sha256",
            "response_returned_sha256",
        ):
            object.__setattr__(self, name, _hash_field(getattr(self, name), name))
        object.__setattr__(self, "usage", dict(self.usage))

    # -- document ---------------------------------------------------------------------

    def upstream_claim(self) -> UpstreamResult:
        """The tri-state ACI claim (§7.5): ``verified`` on a verdict; ``failed`` when
        verification was required, or an attested level was claimed, without one;
        ``not_applicable`` when the call was served (or refused) at a level that asks for
        none. Before this split every unverified call read ``failed``, which a routed call
        to a plain API never was."""
        attested = self.trust_level in ("attested", "attested+gpu")
        if self.attestation is not None and attested:
            return "verified"
        if attested or self.trust_required in ("attested", "attested+gpu"):
            return "failed"
        return "not_applicable"

    @property
    def routed(self) -> bool:
        """Served by a plain (non-TEE) provider: routed, nothing to attest."""
        return self.trust_level == "standard"

    def _upstream_event(self) -> dict[str, Any]:
        required = self.trust_required in ("attested", "attested+gpu")
        model_id = self.upstream_model or self.model or ""
        result = self.upstream_claim()
        if result == "verified":
            assert self.attestation is not None
            return {
                "type": "upstream.verified",
                "result": "verified",
                "required": required,
                "model_id": model_id,
                "session_id": self.attestation.verdict_digest,
            }
        if result == "failed":
            reason = self.error or (
                f"no verified attestation (trust level {self.trust_level or 'none'})")
        elif self.routed:
            reason = "routed: a plain (non-TEE) provider, nothing to attest"
        elif self.trust_level == "tee":
            reason = "served at trust level tee: the provider's TEE is not verified at it"
        else:
            reason = self.error or "no upstream served the call"
        ev: dict[str, Any] = {
            "type": "upstream.verified",
            "result": result,
            "required": required,
            "model_id": model_id,
            "reason": reason,
        }
        if self.routed:
            ev["routed"] = True
        if self.provider:
            ev["upstream_name"] = self.provider
        return ev

    def unsigned_document(self, keyset_digest: str, key_id: str) -> dict[str, Any]:
        events: list[dict[str, Any]] = [
            {"type": "request.received", "body_hash": "sha256:" + self.request_received_sha256}
        ]
        if self.request_forwarded_sha256 is not None:
            events.append(
                {
                    "type": "request.forwarded",
                    "body_hash": "sha256:" + self.request_forwarded_sha256,
                }
            )
        events.append(self._upstream_event())
        if self.response_received_sha256 is not None:
            events.append(
                {
                    "type": "response.received",
                    "body_hash": "sha256:" + self.response_received_sha256,
                }
            )
        events.append(
            {"type": "response.returned", "body_hash": "sha256:" + self.response_returned_sha256}
        )
        events.append(
            {
                "type": "teegate.call",
                "time_ms": self.time_ms,
                "agent": self.agent,
                "conversation": self.conversation,
                "platform": self.platform,
                "provider": self.provider,
                "upstream_model": self.upstream_model,
                "trust_level": self.trust_level,
                "trust_required": self.trust_required,
                "outcome": self.outcome,
                "error": self.error,
                **({"verified_after_delivery": True} if self.verified_after_delivery else {}),
                **({"translation": self.translation} if self.translation else {}),
            }
        )
        if self.provider_signature is not None:
            events.append(
                {"type": "teegate.provider_signature", **self.provider_signature.to_json()}
            )
        if self.attestation is not None:
            events.append({"type": "teegate.attestation", **self.attestation.to_json()})
        events.append(
            {
                "type": "teegate.settlement",
                "usage": dict(self.usage),
                "cost": self.cost,
                "currency": self.currency,
                "transfer_ids": list(self.transfer_ids),
                **({"channel": {"id": self.channel_id,
                                "voucher_cumulative": str(self.voucher_cumulative or 0)}}
                   if self.channel_id is not None else {}),
            }
        )
        return {
            "api_version": ACI_VERSION,
            "v": RECEIPT_VERSION,
            "receipt_id": self.receipt_id,
            "chat_id": self.chat_id,
            "model": self.model,
            "workload_keyset_digest": keyset_digest,
            "endpoint": self.endpoint,
            "method": self.method,
            "served_at": self.time_ms // 1000,
            "event_log": events,
            "key_id": key_id,
        }


# -- keys ----------------------------------------------------------------------------------


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def receipt_key_id(public_key: bytes) -> str:
    """A stable id for a receipt key: ``ed25519:`` + first 16 hex of SHA-256(key)."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


class ReceiptSigner:
    """The gateway's receipt key and the ACI workload keyset that lists it."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        subject: str | None = None,
        not_after: int = 4_102_444_800,  # 2100-01-01; the keyset is re-attested elsewhere
    ) -> None:
        self._key = private_key
        self.public_key = raw_public_key(private_key.public_key())
        self.key_id = receipt_key_id(self.public_key)
        self.keyset: dict[str, Any] = {
            "subject": subject,
            "not_after": not_after,
            "receipt_signing_keys": [
                {"key_id": self.key_id, "algo": "ed25519", "public_key": self.public_key.hex()}
            ],
            "e2ee_public_keys": [],
            "tls_public_keys": [],
        }
        self.keyset_digest = "sha256:" + sha256_hex(jcs(self.keyset))

    def sign(self, receipt: Receipt) -> SignedReceipt:
        doc = receipt.unsigned_document(self.keyset_digest, self.key_id)
        unsigned = jcs_trusted(doc)
        sig = self._key.sign(unsigned).hex()
        doc["signature"] = sig
        # "signature" sorts between "served_at" and "v" at the top level, and "v" and
        # "workload_keyset_digest" are the last two members: splice instead of re-encoding.
        tail = b',"v":"' + RECEIPT_VERSION.encode() + b'","workload_keyset_digest":'
        cut = unsigned.rfind(tail)
        if cut < 0:  # pragma: no cover - the document shape is fixed above
            return SignedReceipt(doc)
        leaf = unsigned[:cut] + b',"signature":"' + sig.encode() + b'"' + unsigned[cut:]
        return SignedReceipt(doc, leaf)


# -- signed receipts -----------------------------------------------------------------------


class SignedReceipt:
    """A signed receipt document. ``leaf`` (its JCS bytes) is what the log commits to."""

    __slots__ = ("_leaf", "document")

    def __init__(self, document: dict[str, Any], leaf: bytes | None = None) -> None:
        self.document = document
        self._leaf = leaf

    @property
    def receipt_id(self) -> str:
        return str(self.document["receipt_id"])

    @property
    def leaf(self) -> bytes:
        if self._leaf is None:
            self._leaf = jcs(self.document)
        return self._leaf

    def event(self, etype: str) -> dict[str, Any] | None:
        for ev in self.document.get("event_log", []):
            if isinstance(ev, dict) and ev.get("type") == etype:
                return ev
        return None

    @property
    def agent(self) -> str:
        ev = self.event("teegate.call") or {}
        return str(ev.get("agent", ""))

    def signing_input(self) -> bytes:
        return jcs({k: v for k, v in self.document.items() if k != "signature"})

    def verify(self, public_keys: Iterable[bytes]) -> bytes:
        """Check the signature under a trusted key named by ``key_id``; return that key."""
        check_document(self.document)
        key_id = self.document["key_id"]
        keys = [k for k in public_keys if receipt_key_id(k) == key_id]
        if not keys:
            raise VerificationError(
                f"receipt.signature: key_id {key_id!r} is not one of the trusted receipt keys"
            )
        try:
            sig = bytes.fromhex(self.document["signature"])
        except ValueError:
            raise EvidenceError("receipt: signature is not hex") from None
        msg = self.signing_input()
        for k in keys:
            try:
                Ed25519PublicKey.from_public_bytes(k).verify(sig, msg)
            except InvalidSignature:
                continue
            return k
        raise VerificationError("receipt.signature: Ed25519 signature does not verify")

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, Any]) -> SignedReceipt:
        if isinstance(data, Mapping):
            doc = dict(data)
        else:
            try:
                doc = safejson.loads(data)
            except (ValueError, UnicodeDecodeError) as e:
                raise EvidenceError(f"receipt: not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise EvidenceError("receipt: not a JSON object")
        check_document(doc)
        return cls(doc)


def check_document(doc: Mapping[str, Any]) -> None:
    """Structural checks an aci/1 verifier makes, plus teegate's version tag."""
    if doc.get("api_version") != ACI_VERSION:
        raise EvidenceError(f"receipt: api_version must be {ACI_VERSION!r}")
    if doc.get("v") != RECEIPT_VERSION:
        raise EvidenceError(f"receipt: v must be {RECEIPT_VERSION!r}")
    for k in ("receipt_id", "key_id", "signature", "workload_keyset_digest"):
        if not isinstance(doc.get(k), str):
            raise EvidenceError(f"receipt: {k} missing or not a string")
    if not _SIG_HEX.fullmatch(doc["signature"]):
        raise EvidenceError("receipt: signature must be 128 lower-case hex digits (Ed25519)")
    if not isinstance(doc.get("served_at"), int):
        raise EvidenceError("receipt: served_at must be an integer")
    events = doc.get("event_log")
    if not isinstance(events, list) or not events:
        raise EvidenceError("receipt: event_log missing or empty")
    if not all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in events):
        raise EvidenceError("receipt: every event must be an object with a type")
    if events[0]["type"] != "request.received":
        raise EvidenceError("receipt: first event must be request.received")
    if not any(e["type"] == "response.returned" for e in events):
        raise EvidenceError("receipt: response.returned event missing")


def body_hashes(receipt: SignedReceipt) -> dict[str, str]:
    """``{event type: hex digest}`` for the events that hash bytes."""
    out: dict[str, str] = {}
    for ev in receipt.document["event_log"]:
        bh = ev.get("body_hash")
        if isinstance(bh, str) and bh.startswith("sha256:"):
            out[ev["type"]] = bh[len("sha256:") :]
    return out


def verdict_digest(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the JCS form of a verdict record: what ``AttestationRef`` cites."""
    return sha256_hex(jcs(dict(record)))


def public_keys_from_hex(keys: Sequence[str]) -> list[bytes]:
    out = []
    for k in keys:
        try:
            raw = bytes.fromhex(k.lower().removeprefix("0x"))
        except ValueError:
            raise EvidenceError(f"receipt key {k!r} is not hex") from None
        if len(raw) != 32:
            raise EvidenceError(f"receipt key {k!r}: Ed25519 keys are 32 bytes")
        out.append(raw)
    return out
