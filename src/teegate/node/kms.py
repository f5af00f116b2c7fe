"""Signing keys from the dstack KMS: the same keys after a restart, bound to the app identity.

Under dstack, ``GetKey(path, purpose)`` releases a 32-byte secp256k1 scalar that the KMS
derives for this app (``app_id``, i.e. this compose) and the path, only to a workload whose
attestation the KMS accepted. Its ``signature_chain`` proves it: ``[app key's signature over
"<purpose>:<the scalar's secp256k1 public key, compressed hex>", KMS root's signature over
"dstack-kms-issued:" ‖ app_id ‖ app public key (compressed)]``, recoverable secp256k1 over
keccak256 of the message (Dstack-TEE/private-ai-gateway ``src/aci/verifier/dstack.rs``,
``src/dstack.rs``; REFERENCE §5.1). The ecdsa key is that scalar; the Ed25519 key is the
scalar as its 32-byte seed (as private-ai-gateway derives its receipt key). The report's
``info.key_custody`` publishes each key's chain in ACI's shape (§3.3), so a verifier that
holds the KMS root can check where the keys come from; ``check_kms_custody`` is that check.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import coincurve
from eth_hash.auto import keccak

from teegate.errors import ConfigError
from teegate.node.signatures import SIGNING_ALGOS
from teegate.node.signer import EcdsaSigner, Ed25519Signer, NodeKeys

KMS_PROVIDER = "dstack-kms"
_PURPOSE = "teegate.{role}.signing.{algo}.v1"
_PATH = "teegate/{role}/signing-{algo}/v1"


class KeyClient(Protocol):
    """The part of ``dstack_sdk.DstackClient`` used here."""

    def get_key(self, path: str | None = None, purpose: str | None = None,
                algorithm: str = "secp256k1") -> Any: ...


def _recover(message: bytes, signature: bytes) -> bytes | None:
    """The compressed secp256k1 public key that made ``signature`` over keccak256(message)."""
    if len(signature) != 65:
        return None
    v = signature[64] - 27 if signature[64] >= 27 else signature[64]
    if v not in (0, 1):
        return None
    try:
        pub = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([v]), bytes(keccak(message)), hasher=None)
    except Exception:  # coincurve raises a bare Exception for an unrecoverable point
        return None
    return bytes(pub.format(compressed=True))


def _release(client: KeyClient, role: str, algo: str) -> tuple[bytes, dict[str, Any]]:
    path, purpose = _PATH.format(role=role, algo=algo), _PURPOSE.format(role=role, algo=algo)
    return release_key(client, path=path, purpose=purpose, role=f"{role}-signing-{algo}",
                       algo=algo)


def release_key(client: KeyClient, *, path: str, purpose: str, role: str, algo: str,
                ) -> tuple[bytes, dict[str, Any]]:
    """One 32-byte key released by the KMS and its custody entry (without ``public_key``,
    which the caller derives for its algorithm); ConfigError when it is not released."""
    try:
        resp = client.get_key(path, purpose)
        secret = bytes.fromhex(str(resp.key).removeprefix("0x"))
        chain = [str(s) for s in resp.signature_chain]
    except Exception as e:  # httpx, socket, pydantic, hex errors: no key, no start
        raise ConfigError(f"dstack KMS: GetKey({path}) failed: {type(e).__name__}: {e}"
                          ) from e
    if len(secret) != 32:
        raise ConfigError(f"dstack KMS: GetKey({path}) released {len(secret)} bytes, not 32")
    try:
        kms_public = coincurve.PrivateKey(secret).public_key.format(compressed=True).hex()
    except Exception as e:
        raise ConfigError(f"dstack KMS: GetKey({path}) released no secp256k1 key: {e}"
                          ) from e
    return secret, {"role": role, "path": path, "purpose": purpose, "algo": algo,
                    "kms_public_key": kms_public, "signature_chain": chain}


RECEIPT_PATH = "teegate/gateway/receipt-ed25519/v1"
RECEIPT_PURPOSE = "aci.receipt.ed25519.v1"  # private-ai-gateway's verifier requires this one


def kms_receipt_key(client: KeyClient) -> tuple[Any, dict[str, Any]]:
    """The gateway's Ed25519 receipt key released by the KMS (the scalar as its seed) and its
    custody entry in the shape ACI's dstack verifier reads (role ``receipt``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    seed, entry = release_key(client, path=RECEIPT_PATH, purpose=RECEIPT_PURPOSE,
                              role="receipt", algo="ed25519")
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return key, {**entry, "public_key": public}


def kms_keys(client: KeyClient, *, role: str = "node") -> NodeKeys:
    """Both signing keys released by the dstack KMS for ``role`` (``node`` or ``gateway``);
    ConfigError when the KMS does not release them (the caller refuses to start)."""
    keys = NodeKeys()
    entries = []
    for algo in SIGNING_ALGOS:
        secret, entry = _release(client, role, algo)
        signer = EcdsaSigner(secret) if algo == "ecdsa" else Ed25519Signer(secret)
        keys.replace(signer)
        entries.append({**entry, "public_key": signer.signing_address})
    keys.custody = {"provider": KMS_PROVIDER, "keys": entries}
    return keys


def check_kms_custody(custody: Any, *, signing_address: str, app_id: str,
                      accepted_roots: Iterable[str]) -> str | None:
    """None when ``custody`` proves that the key whose identity is ``signing_address`` was
    released by a KMS root in ``accepted_roots`` (compressed secp256k1 hex) for ``app_id``
    (hex); else the reason. Pure: the caller supplies the roots it trusts."""
    if not isinstance(custody, dict) or custody.get("provider") != KMS_PROVIDER:
        return "key custody is not dstack-kms"
    want = signing_address.lower().removeprefix("0x")
    entry = next((k for k in custody.get("keys") or [] if isinstance(k, dict)
                  and str(k.get("public_key", "")).lower().removeprefix("0x") == want), None)
    if entry is None:
        return f"key custody lists no key {signing_address}"
    try:
        chain = [bytes.fromhex(str(s).removeprefix("0x")) for s in entry["signature_chain"]]
        kms_public = bytes.fromhex(str(entry["kms_public_key"]))
        algo, purpose, app = str(entry["algo"]), str(entry["purpose"]), bytes.fromhex(app_id)
    except (KeyError, TypeError, ValueError) as e:
        return f"key custody entry is malformed: {e}"
    if len(chain) != 2:
        return f"key custody signature_chain has {len(chain)} signatures, not 2"
    # The published key must be the one the released scalar gives (ecdsa: the scalar's own
    # address; ed25519: the seed's public key cannot be derived without the seed, so the
    # chain covers the scalar's secp256k1 key and the node's code links the two).
    if algo == "ecdsa":
        from teegate.node.signatures import eth_address

        if eth_address(coincurve.PublicKey(kms_public)).lower() != "0x" + want:
            return "key custody: the released key is not the signing key"
    app_public = _recover(f"{purpose}:{kms_public.hex()}".encode(), chain[0])
    if app_public is None:
        return "key custody: the app key's signature does not recover"
    root = _recover(b"dstack-kms-issued:" + app + app_public, chain[1])
    if root is None:
        return "key custody: the KMS root's signature does not recover"
    if root.hex() not in {r.lower() for r in accepted_roots}:
        return f"key custody: KMS root {root.hex()} is not an accepted root"
    return None
