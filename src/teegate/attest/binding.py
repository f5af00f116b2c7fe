"""report_data binding: the evidence must name the key that signs responses and our nonce.

Without this check a valid quote proves only that *some* TEE exists, not that the key signing
the responses lives inside it, nor that the quote is fresh rather than replayed. Layouts
(REFERENCE §7.2): NEAR AI / RedPill / private-ml-sdk put the signing identity (20-byte
Ethereum address for ecdsa, 32-byte Ed25519 key) right-padded to 32 bytes, then the raw
32-byte nonce; hashed variants put sha256(key || nonce) (zero-padded), sha512(key || nonce) or
sha512(nonce || key) (x25519 tunnel keys). Evidence bound to a TLS key instead (Tinfoil, SecretVM,
ACI) names SHA-256 of the key's SubjectPublicKeyInfo: raw in report_data[0:32]
(``tls_spki``) or as 64 ASCII hex digits (``tls_spki_hex``, Tinfoil's v1 documents).
The policy's ``binding.layouts`` chooses the layouts per provider. The nonce is compared in
full, and constant sample nonces are refused (§1, §4.5).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from teegate.attest.guard import malformed
from teegate.attest.policy import Policy
from teegate.attest.verdict import Check

__all__ = [
    "KNOWN_SAMPLE_NONCES",
    "LAYOUTS",
    "NONCE_SIZE",
    "SAMPLE_NONCES",
    "TLS_LAYOUTS",
    "check_report_data",
    "check_tls_binding",
    "fresh_nonce",
    "identity_bytes",
    "is_sample_nonce",
    "spki_fingerprint",
]

NONCE_SIZE = 32
LAYOUTS = ("padded", "sha256", "sha512", "sha512_nonce_key")
TLS_LAYOUTS = ("tls_spki", "tls_spki_hex")
# Constant nonces published in verifiers' configs, samples, tests and docs (docs/verify.md
# lists them with their sources): evidence carrying one was not made for a request of ours.
# Any nonce that is one byte repeated is refused too (is_sample_nonce).
SAMPLE_NONCES: tuple[tuple[str, str], ...] = (
    ("4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e",
     "NVIDIA/nvtrust local_gpu_verifier src/verifier/config.py NONCE (the verifier's default) "
     "and attestation_sdk nv_switch_verifier/config.py"),
    ("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
     "NVIDIA/nvtrust attestation_sdk samples and tests (LocalGPUTest.py, RemoteGPUTest.py, "
     "test_attest_gpu_local.py, claims fixtures) and samples/hopperAttestationReport.txt"),
    ("4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e",
     "NVIDIA/nvtrust ppcie-verifier-sdk-cpp tests/data/gpu_evidence.json"),
    ("89d36f654c47ef2bb6ed989c9655ea19548a9057a97ef4e0b7ad54dfcf5e6b00",
     "nearai/private-ml-sdk e2e/README.md sample attestation"),
    ("deadbeef" + "00" * 27 + "01",
     "nearai/nearai-cloud-verifier py/tests/fixtures/nearai_cloud_report_openai_gpt_oss_120b.json "
     "(a real NEAR AI Cloud report: request_nonce, report_data, every GPU's SPDM nonce)"),
    ("11" * 32, "Dstack-TEE/dstack dstack-util tests/fixtures/gpu_attestation_h100.json "
                "eat_nonce, and NEAR-style samples"),
    ("1234" + "00" * 30, "Dstack-TEE/dstack verifier/fixtures/quote-report.json report_data"),
    ("0102030405" + "00" * 27, "google/go-sev-guest verify/testdata/attestation.bin "
                               "REPORT_DATA[0:32]"),
    ("00" * 32, "all zeros: every evidence made without a nonce (dstack simulator, GCP "
                "go-tdx-guest testdata)"),
    ("ff" * 32, "all ones"),
)
KNOWN_SAMPLE_NONCES: frozenset[bytes] = frozenset(bytes.fromhex(h) for h, _ in SAMPLE_NONCES)


def fresh_nonce() -> bytes:
    """32 bytes from the OS CSPRNG: one per attestation request, never reused."""
    return secrets.token_bytes(NONCE_SIZE)


def is_sample_nonce(nonce: bytes) -> bool:
    """A published constant nonce, or one byte repeated (no entropy at all)."""
    return nonce in KNOWN_SAMPLE_NONCES or (len(nonce) > 0 and nonce == nonce[:1] * len(nonce))


def identity_bytes(signing_key: str | bytes, signing_algo: str) -> bytes | None:
    """The signing identity as bytes: 20-byte address (ecdsa) or 32-byte key (ed25519)."""
    want = {"ecdsa": 20, "ed25519": 32}.get(signing_algo)
    if want is None:
        return None
    if isinstance(signing_key, str):
        text = signing_key.strip()
        text = text[2:] if text[:2] in ("0x", "0X") else text
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            return None
    else:
        raw = bytes(signing_key)
    return raw if len(raw) == want else None


def _layouts(policy: Policy) -> tuple[str, ...]:
    allowed = policy.binding.layouts
    return tuple(name for name in LAYOUTS if not allowed or name in allowed)


def _hashed(name: str, key: bytes, nonce: bytes) -> bytes:
    if name == "sha256":
        return hashlib.sha256(key + nonce).digest().ljust(64, b"\0")
    if name == "sha512_nonce_key":
        return hashlib.sha512(nonce + key).digest()
    return hashlib.sha512(key + nonce).digest()


_HASHED_NAMES = {"sha256": "sha256(signing identity || our nonce)",
                 "sha512": "sha512(signing identity || our nonce)",
                 "sha512_nonce_key": "sha512(our nonce || signing identity)"}


@malformed("the report_data binding")
def check_report_data(
    report_data: bytes,
    *,
    signing_key: str | bytes,
    nonce: bytes | None,
    signing_algo: str,
    policy: Policy,
) -> list[Check]:
    """``binding.key`` and ``binding.nonce`` checks for a 64-byte report_data."""
    layouts = _layouts(policy)
    key = identity_bytes(signing_key, signing_algo)
    if len(report_data) != 64:
        detail = f"report_data is {len(report_data)} bytes, expected 64"
        return [Check("binding.key", False, detail), Check("binding.nonce", False, detail)]
    if key is None:
        kind = {"ecdsa": "a 20-byte address", "ed25519": "a 32-byte Ed25519 key"}.get(
            signing_algo)
        detail = (f"signing key {signing_key!r} is not {kind}" if kind else
                  f"unknown signing_algo {signing_algo!r} (expected ecdsa or ed25519)")
        return [Check("binding.key", False, detail),
                Check("binding.nonce", False, "no key to bind the nonce to")]
    if signing_algo == "ed25519" and not any(key[20:]):
        # Indistinguishable from a padded 20-byte ecdsa address; a genuine Ed25519 key ends in
        # 12 zero bytes with probability 2^-96, and signing_algo is the provider's claim.
        detail = (f"ed25519 key {key.hex()} ends in 12 zero bytes: in the padded layout it is "
                  "an ecdsa address, not an Ed25519 key")
        return [Check("binding.key", False, detail),
                Check("binding.nonce", False, "no key to bind the nonce to")]
    nonce_problem: str | None = None
    if nonce is None:
        if policy.binding.require_nonce:
            nonce_problem = (
                "no nonce was given, so freshness cannot be checked (the evidence may be a "
                "replay): pass the 32-byte nonce you sent with the request (teegate verify "
                "--nonce HEX), or, to audit old evidence without freshness, use a policy with "
                "[binding] require_nonce = false")
    elif len(nonce) != NONCE_SIZE:
        nonce_problem = f"nonce is {len(nonce)} bytes; nonces must be {NONCE_SIZE} fresh bytes"
    elif is_sample_nonce(nonce):
        nonce_problem = (f"nonce {nonce.hex()[:16]}… is a known constant sample nonce: this "
                         "evidence was not produced for a fresh request")

    if "padded" in layouts and hmac.compare_digest(report_data[:32], key.ljust(32, b"\0")):
        key_check = Check("binding.key", True,
                          f"report_data[0:32] is the {signing_algo} signing identity "
                          f"{key.hex()} (padded layout)")
        if nonce_problem is not None:
            return [key_check, Check("binding.nonce", False, nonce_problem)]
        if nonce is None:
            return [key_check, Check("binding.nonce", True,
                                     "not checked: policy.binding.require_nonce is false")]
        ok = hmac.compare_digest(report_data[32:], nonce)
        return [key_check, Check(
            "binding.nonce", ok,
            "report_data[32:64] equals our 32-byte nonce" if ok else
            f"report_data[32:64] is {report_data[32:].hex()[:16]}…, not our nonce "
            f"{nonce.hex()[:16]}…: the evidence is stale or was made for someone else")]
    hashed = [name for name in layouts if name != "padded"]
    if nonce is not None and nonce_problem is None:
        for name in hashed:
            if hmac.compare_digest(report_data, _hashed(name, key, nonce)):
                detail = f"report_data = {_HASHED_NAMES[name]} ({name} layout)"
                return [Check("binding.key", True, detail), Check("binding.nonce", True, detail)]
    tried = ", ".join(layouts) or "none (policy.binding.layouts names no known layout)"
    key_detail = (f"report_data does not bind the {signing_algo} signing identity "
                  f"{key.hex()} in any allowed layout ({tried})")
    if hashed and (nonce is None or nonce_problem is not None):
        key_detail += "; hashed layouts need a valid nonce to check"
    return [Check("binding.key", False, key_detail),
            Check("binding.nonce", False, nonce_problem or
                  "report_data binds neither our key nor our nonce in any allowed layout")]


def spki_fingerprint(material: bytes) -> bytes:
    """SHA-256 of a TLS key's SubjectPublicKeyInfo, from an X.509 certificate or a public key
    (PEM or DER), or given directly as 64 hex digits (what Tinfoil and openssl print)."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    from teegate.errors import EvidenceError

    text = material.strip()
    try:
        hex_fp = bytes.fromhex(text.decode("ascii").removeprefix("sha256:").replace(":", ""))
    except (UnicodeDecodeError, ValueError):
        hex_fp = b""
    if len(hex_fp) == 32:
        return hex_fp
    data = text if b"-----BEGIN" in text else material
    keys: list[Callable[[], Any]] = [
        lambda: x509.load_pem_x509_certificate(data).public_key(),
        lambda: x509.load_der_x509_certificate(data).public_key(),
        lambda: serialization.load_pem_public_key(data),
        lambda: serialization.load_der_public_key(data),
    ]
    for load in keys:
        try:
            spki = load().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        return bytes(hashlib.sha256(spki).digest())
    raise EvidenceError("TLS key: not a certificate or public key (PEM or DER), nor a 64-hex-digit "
                        "SHA-256 SPKI fingerprint")


@malformed("the report_data TLS binding")
def check_tls_binding(report_data: bytes, *, spki_sha256: bytes, nonce: bytes | None,
                      policy: Policy) -> list[Check]:
    """``binding.key`` and ``binding.nonce`` for evidence bound to a TLS key, not a signing
    key: report_data[0:32] is SHA-256 of its SPKI (``tls_spki``) or report_data is that hash in
    ASCII hex (``tls_spki_hex``). Such evidence carries no nonce by design: it is fresh only
    over the live TLS connection whose key it names, so a nonce is checked in
    report_data[32:64] when the raw layout leaves room, and otherwise the policy decides."""
    allowed = policy.binding.layouts
    layouts = [n for n in TLS_LAYOUTS if not allowed or n in allowed]
    fp = spki_sha256.hex()
    found = None
    if "tls_spki" in layouts and hmac.compare_digest(report_data[:32], spki_sha256):
        found = "tls_spki"
    elif "tls_spki_hex" in layouts and hmac.compare_digest(report_data, fp.encode()):
        found = "tls_spki_hex"
    if found is None:
        tried = ", ".join(layouts) or "none (policy.binding.layouts allows no TLS layout)"
        return [Check("binding.key", False,
                      f"report_data does not name the TLS key with SPKI SHA-256 {fp} in any "
                      f"allowed layout ({tried})"),
                Check("binding.nonce", False, "the evidence is not bound to this TLS key")]
    key = Check("binding.key", True,
                f"report_data[0:32] is SHA-256 of the TLS key's SPKI {fp} (tls_spki layout)"
                if found == "tls_spki" else
                f"report_data is the TLS key's SPKI SHA-256 {fp} in ASCII hex (tls_spki_hex)")
    if nonce is not None and found == "tls_spki" and len(nonce) == NONCE_SIZE \
            and not is_sample_nonce(nonce) and hmac.compare_digest(report_data[32:], nonce):
        return [key, Check("binding.nonce", True, "report_data[32:64] equals our 32-byte nonce")]
    if nonce is not None and is_sample_nonce(nonce):
        problem = (f"nonce {nonce.hex()[:16]}… is a known constant sample nonce: this evidence "
                   "was not produced for a fresh request")
    elif nonce is not None:
        problem = ("report_data carries no nonce of ours (TLS-bound evidence is fresh only over "
                   "the live TLS connection whose key it names)")
    elif policy.binding.require_nonce:
        problem = ("no nonce was given, and TLS-bound evidence is fresh only over the live TLS "
                   "connection whose key it names: check that connection's key, then use a "
                   "policy with [binding] require_nonce = false")
    else:
        return [key, Check("binding.nonce", True,
                           "not checked: policy.binding.require_nonce is false (TLS-bound)")]
    return [key, Check("binding.nonce", False, problem)]
