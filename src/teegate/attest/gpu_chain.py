"""Certificate chains for NVIDIA evidence: device identity chains and RIM signing chains.

Both are short, fixed-shape ECDSA P-384 chains handed to us leaf first; each link is checked
(issuer name, signature, CA flag, certificate-signing key usage, path length; the leaf's
key usage must allow signing) and the top must be, or be signed by, a pinned root or a
development root from the policy. Parsing and link signatures are cached by DER bytes: the
eight GPUs of one board share three CA certificates, and the pinned roots never change.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from teegate.attest.guard import PARSE_ERRORS
from teegate.errors import EvidenceError

DEVICE_ROOT_FILE = "device_identity_ca.pem"
RIM_ROOT_FILE = "corim_signing_root_ca.pem"


@lru_cache(maxsize=256)
def load_pem_chain(pem: bytes) -> tuple[x509.Certificate, ...]:
    """All certificates of a PEM text, in order; malformed text is an ``EvidenceError``."""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise EvidenceError("certificate chain: no PEM certificate found")
    try:
        certs = tuple(x509.load_pem_x509_certificates(pem))
    except PARSE_ERRORS as e:
        raise EvidenceError(f"certificate chain: malformed PEM certificate: {e}") from e
    for i, cert in enumerate(certs, 1):
        _readable(cert, f"certificate chain: certificate {i} of {len(certs)}")
    return certs


def _readable(cert: x509.Certificate, where: str) -> None:
    """Read what cryptography parses lazily (version, names, extensions, key, validity), so a
    malformed certificate is an ``EvidenceError`` here, not an exception in a later check."""
    try:
        _ = (cert.version, cert.subject, cert.issuer, cert.extensions, cert.public_key(),
             cert.not_valid_before_utc, cert.not_valid_after_utc)
    except PARSE_ERRORS as e:
        raise EvidenceError(f"{where} is malformed ({type(e).__name__}: {e})") from e


@lru_cache(maxsize=256)
def load_der(der: bytes) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
    except PARSE_ERRORS as e:
        raise EvidenceError(f"malformed DER certificate: {e}") from e
    _readable(cert, "DER certificate")
    return cert


@cache
def pinned_root(filename: str) -> x509.Certificate:
    """A pinned NVIDIA root shipped in ``teegate/attest/roots/nvidia`` (see PROVENANCE.md)."""
    data = (resources.files("teegate.attest") / "roots" / "nvidia" / filename).read_bytes()
    return x509.load_pem_x509_certificate(data)


@lru_cache(maxsize=64)
def development_roots(pems: tuple[str, ...]) -> tuple[x509.Certificate, ...]:
    out: list[x509.Certificate] = []
    for pem in pems:
        out.extend(load_pem_chain(pem.encode("ascii", "replace")))
    return tuple(out)


@lru_cache(maxsize=1024)
def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    if child.issuer != issuer.subject:
        return False
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _ca_problem(cert: x509.Certificate, below: int) -> str | None:
    """Why ``cert`` may not sign the next certificate down, with ``below`` CA certificates
    between it and the leaf (RFC 5280 §4.2.1.3, §4.2.1.9), or None."""
    bc = _basic_constraints(cert)
    if bc is None or not bc.ca:
        return "signs a certificate but is not a CA"
    ku = _key_usage(cert)
    if ku is None or not ku.key_cert_sign:
        return "signs a certificate but its key usage does not allow certificate signing"
    if bc.path_length is not None and below > bc.path_length:
        return (f"allows at most {bc.path_length} CA certificate(s) below it, the chain has "
                f"{below}")
    return None


def _leaf_problem(cert: x509.Certificate) -> str | None:
    """A leaf whose key usage is stated must allow digital signatures (it signs evidence)."""
    ku = _key_usage(cert)
    if ku is not None and not ku.digital_signature:
        return "its key usage does not allow digital signatures"
    return None


@dataclass(frozen=True, slots=True)
class ChainResult:
    ok: bool
    detail: str
    development: bool = False
    not_before: int | None = None
    not_after: int | None = None
    validity_ok: bool = True
    validity_detail: str = ""


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else cert.subject.rfc4514_string()
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def verify_chain(
    certs: tuple[x509.Certificate, ...],
    *,
    pinned: x509.Certificate,
    development: tuple[x509.Certificate, ...],
    now: int,
    what: str,
) -> ChainResult:
    """Check ``certs`` (leaf first) link by link up to ``pinned`` or a development root."""
    if not certs:
        return ChainResult(False, f"{what}: the chain is empty")
    for i in range(len(certs) - 1):
        child, parent = certs[i], certs[i + 1]
        if not _issued_by(child, parent):
            return ChainResult(False, f"{what}: '{_cn(child)}' is not signed by the next "
                                      f"certificate '{_cn(parent)}' (missing or wrong "
                                      "intermediate)")
        problem = _ca_problem(parent, i)
        if problem is not None:
            return ChainResult(False, f"{what}: '{_cn(parent)}' {problem}")
    top = certs[-1]
    anchor: x509.Certificate | None = None
    dev = False
    for root, is_dev in [(pinned, False)] + [(d, True) for d in development]:
        if top == root or _issued_by(top, root):
            anchor, dev = root, is_dev
            break
    if anchor is None:
        return ChainResult(False, f"{what}: '{_cn(top)}' does not chain to the pinned "
                                  f"'{_cn(pinned)}' (truncated chain or foreign root)")
    path = list(certs) + ([anchor] if top != anchor else [])
    root_problem = _ca_problem(anchor, len(certs) - 1) if top != anchor else None
    if root_problem is not None:
        return ChainResult(False, f"{what}: root '{_cn(anchor)}' {root_problem}")
    leaf_problem = _leaf_problem(certs[0])
    if leaf_problem is not None:
        return ChainResult(False, f"{what}: leaf '{_cn(certs[0])}' {leaf_problem}")
    not_before = max(int(c.not_valid_before_utc.timestamp()) for c in path)
    not_after = min(int(c.not_valid_after_utc.timestamp()) for c in path)
    expired = [c for c in path if not (
        c.not_valid_before_utc.timestamp() <= now <= c.not_valid_after_utc.timestamp())]
    validity_detail = (
        f"all {len(path)} certificates are valid at {now}" if not expired else
        f"'{_cn(expired[0])}' is not valid at {now} (valid "
        f"{expired[0].not_valid_before_utc:%Y-%m-%d} .. {expired[0].not_valid_after_utc:%Y-%m-%d})"
    )
    root_name = ("development root " if dev else "pinned ") + f"'{_cn(anchor)}'"
    return ChainResult(
        True,
        f"{what}: {len(path)} certificates from '{_cn(certs[0])}' to {root_name} "
        f"(sha256 {fingerprint(anchor)[:16]}…)",
        development=dev,
        not_before=not_before,
        not_after=not_after,
        validity_ok=not expired,
        validity_detail=validity_detail,
    )


def p384_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey | None:
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        return key
    return None
