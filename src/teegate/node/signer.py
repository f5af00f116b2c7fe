"""The node's signing keys: generated in memory at start and never written anywhere, or
released by the dstack KMS (``teegate.node.kms``).

Each process has its own identity (as on NEAR AI / private-ml-sdk nodes): a restart means a
new key, which clients notice because the attested key no longer signs the responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import coincurve
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from teegate.errors import ConfigError
from teegate.node.signatures import SIGNING_ALGOS, eip191_hash, eth_address, signature_text


@dataclass(frozen=True, slots=True)
class SignedText:
    """A signature over one response: the wire shape of ``GET /v1/signature/{id}``."""

    text: str
    signature: str
    signing_address: str
    signing_algo: str

    def to_json(self) -> dict[str, str]:
        return {
            "text": self.text,
            "signature": self.signature,
            "signing_address": self.signing_address,
            "signing_algo": self.signing_algo,
        }


class EcdsaSigner:
    """secp256k1, EIP-191 personal_sign; identity = checksummed Ethereum address."""

    algo = "ecdsa"

    def __init__(self, secret: bytes | None = None) -> None:
        """A fresh key, or the 32-byte scalar ``secret`` (a KMS-released key)."""
        self._key = coincurve.PrivateKey(secret) if secret is not None else coincurve.PrivateKey()
        self.signing_address = eth_address(self._key.public_key)
        self.identity = bytes.fromhex(self.signing_address[2:])

    def sign(self, text: str) -> str:
        sig = self._key.sign_recoverable(eip191_hash(text), hasher=None)
        return "0x" + (sig[:64] + bytes([sig[64] + 27])).hex()


class Ed25519Signer:
    """Raw Ed25519 over the UTF-8 text; identity = 32-byte public key, hex."""

    algo = "ed25519"

    def __init__(self, seed: bytes | None = None) -> None:
        """A fresh key, or the one of the 32-byte ``seed`` (a KMS-released key)."""
        self._key = (Ed25519PrivateKey.from_private_bytes(seed) if seed is not None
                     else Ed25519PrivateKey.generate())
        self.identity = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.signing_address = self.identity.hex()

    def sign(self, text: str) -> str:
        return self._key.sign(text.encode("utf-8")).hex()


Signer = EcdsaSigner | Ed25519Signer


EPHEMERAL_CUSTODY: dict[str, Any] = {
    "provider": "generated",
    "detail": "generated in the workload's memory at start, never written; a restart is a "
              "new key",
}


class NodeKeys:
    """Both of the node's keys; ``get(algo)`` rejects unknown algorithms with ConfigError.
    ``custody`` says where the keys come from, for the attestation report (ACI §3.3)."""

    def __init__(self) -> None:
        self._signers: dict[str, Signer] = {"ecdsa": EcdsaSigner(), "ed25519": Ed25519Signer()}
        self.custody: dict[str, Any] = dict(EPHEMERAL_CUSTODY)

    def replace(self, signer: Signer) -> None:
        """Use ``signer`` for its algorithm (keys released by a KMS, ``teegate.node.kms``)."""
        self._signers[signer.algo] = signer

    def get(self, algo: str) -> Signer:
        signer = self._signers.get(algo)
        if signer is None:
            choices = ", ".join(SIGNING_ALGOS)
            raise ConfigError(f"signing_algo must be one of {choices}, not {algo!r}")
        return signer

    def report_data(self, algo: str, nonce: bytes) -> bytes:
        """64-byte report_data: identity right-padded to 32 bytes, then the 32-byte nonce."""
        if len(nonce) != 32:
            raise ConfigError("nonce must be 32 bytes")
        return self.get(algo).identity.ljust(32, b"\0") + nonce

    def sign_exchange(self, algo: str, request: bytes, response: bytes) -> SignedText:
        signer = self.get(algo)
        text = signature_text(request, response)
        return SignedText(text, signer.sign(text), signer.signing_address, signer.algo)
