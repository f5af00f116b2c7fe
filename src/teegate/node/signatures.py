"""Response signatures: the text a node signs and the pure check of a signature over it.

The text is ``sha256hex(request bytes):sha256hex(response bytes)`` over the exact bytes on the
wire (NEAR AI / private-ml-sdk format); a call that carries a per-call nonce (request header
``x-teegate-nonce``, 64 hex digits) has it appended as a third field, so a signature answers
one call only and an old answer replayed with its signature no longer verifies. ``ecdsa`` is
an EIP-191 ``personal_sign`` by a secp256k1 key whose identity is its Ethereum address;
``ed25519`` is a raw Ed25519 signature over the UTF-8 text, the identity being the 32-byte
public key in hex. Pure functions only, so the gateway and the client share them.
"""

from __future__ import annotations

import hashlib
import hmac
import re

import coincurve
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eth_hash.auto import keccak

SIGNING_ALGOS = ("ecdsa", "ed25519")
NONCE_HEADER = "x-teegate-nonce"
_NONCE = re.compile(r"[0-9a-f]{64}")
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def signature_text(request_bytes: bytes, response_bytes: bytes, nonce: str | None = None
                   ) -> str:
    """The signed text: sha256 hex of the exact request bytes, ':', of the exact response,
    and ``:nonce`` when the call carried one."""
    req = hashlib.sha256(request_bytes).hexdigest()
    text = req + ":" + hashlib.sha256(response_bytes).hexdigest()
    return text if nonce is None else text + ":" + nonce


def parse_call_nonce(value: str | None) -> str | None:
    """The per-call nonce of a request header, as 64 lower-case hex digits; None when there
    is none; ValueError when it is not exactly 32 bytes in hex (a signature over a nonce the
    caller did not mean would bind nothing)."""
    if value is None:
        return None
    text = value.strip().lower()
    if not _NONCE.fullmatch(text):
        raise ValueError(f"{NONCE_HEADER} must be 32 bytes as 64 hex digits")
    return text


def eip191_hash(text: str) -> bytes:
    """keccak256 of the EIP-191 version 0x45 (personal_sign) envelope around ``text``."""
    msg = text.encode("utf-8")
    return bytes(keccak(b"\x19Ethereum Signed Message:\n" + str(len(msg)).encode() + msg))


def eth_address(public_key: coincurve.PublicKey) -> str:
    """EIP-55 checksummed Ethereum address of a secp256k1 public key."""
    raw = bytes(keccak(public_key.format(compressed=False)[1:]))[-20:].hex()
    digest = bytes(keccak(raw.encode())).hex()
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(raw)
    )


def normalize_signing_address(address: str, signing_algo: str) -> bytes | None:
    """The raw identity bytes (20 for ecdsa, 32 for ed25519), or None when malformed."""
    want = 20 if signing_algo == "ecdsa" else 32 if signing_algo == "ed25519" else 0
    try:
        raw = bytes.fromhex(address.strip().lower().removeprefix("0x"))
    except ValueError:
        return None
    return raw if want and len(raw) == want else None


def _unhex(value: str) -> bytes | None:
    try:
        return bytes.fromhex(value.strip().lower().removeprefix("0x"))
    except ValueError:
        return None


def _verify_ecdsa(text: str, sig: bytes, address: bytes) -> bool:
    if len(sig) != 65:
        return False
    v = sig[64]
    recid = v - 27 if v >= 27 else v
    if recid not in (0, 1):
        return False
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    # Low-s only (EIP-2): a malleated copy of a valid signature is not a second valid one.
    if not (0 < r < _SECP256K1_N and 0 < s <= _SECP256K1_N // 2):
        return False
    try:
        pub = coincurve.PublicKey.from_signature_and_message(
            sig[:64] + bytes([recid]), eip191_hash(text), hasher=None
        )
    except Exception:  # coincurve raises a bare Exception for an unrecoverable point
        return False
    recovered = bytes(keccak(pub.format(compressed=False)[1:]))[-20:]
    return hmac.compare_digest(recovered, address)


def _verify_ed25519(text: str, sig: bytes, public_key: bytes) -> bool:
    if len(sig) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, text.encode("utf-8"))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_response_signature(
    text: str, signature: str, signing_address: str, signing_algo: str
) -> bool:
    """True iff ``signature`` (hex, optional 0x) over ``text`` was made by ``signing_address``.

    Never raises on malformed input: anything unparsable is simply not a valid signature.
    """
    if not isinstance(text, str) or not isinstance(signature, str):
        return False
    if not isinstance(signing_address, str) or signing_algo not in SIGNING_ALGOS:
        return False
    identity = normalize_signing_address(signing_address, signing_algo)
    sig = _unhex(signature)
    if identity is None or sig is None:
        return False
    if signing_algo == "ecdsa":
        return _verify_ecdsa(text, sig, identity)
    return _verify_ed25519(text, sig, identity)


def text_matches(text: str, request_bytes: bytes, response_bytes: bytes) -> bool:
    """True iff ``text`` is exactly the signature text of these request and response bytes."""
    return hmac.compare_digest(text, signature_text(request_bytes, response_bytes))
