"""AMD SEV-SNP certificates: loading, classification, VCEK/VLEK extensions, pinned roots.

Certificates are parsed once per distinct DER (an LRU keyed by the bytes), so verifying many
reports signed by the same VCEK costs one parse and one chain check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import warnings
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from teegate.attest.guard import PARSE_ERRORS, malformed
from teegate.errors import EvidenceError

AMD_OID = "1.3.6.1.4.1.3704.1."
OID_STRUCT_VERSION = AMD_OID + "1"
OID_PRODUCT_NAME = AMD_OID + "2"
OID_TCB = {
    "bootloader": AMD_OID + "3.1",
    "tee": AMD_OID + "3.2",
    "snp": AMD_OID + "3.3",
    "microcode": AMD_OID + "3.8",
    "fmc": AMD_OID + "3.9",
}
OID_HWID = AMD_OID + "4"
OID_CSP_ID = AMD_OID + "5"
ROLES = ("ark", "ask", "asvk", "vcek", "vlek")
_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


@dataclass(frozen=True, slots=True)
class KeyExtensions:
    """The AMD extensions of a VCEK or VLEK certificate (``kds.go``, snpguest ``verify.rs``)."""

    struct_version: int | None
    product_name: str | None
    tcb: dict[str, int]
    hwid: bytes | None
    csp_id: str | None


@dataclass(frozen=True, slots=True, eq=False)
class AmdCert:
    """One parsed certificate with its role in the AMD hierarchy; equal iff same DER."""

    der: bytes
    cert: x509.Certificate
    role: str
    common_name: str
    not_before: int
    not_after: int
    sha256: str
    self_signed: bool

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AmdCert) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    @property
    def product(self) -> str | None:
        """Product named by the CN (``ARK-Milan``, ``SEV-Genoa``, ``SEV-VLEK-Turin``)."""
        name = self.common_name.rsplit("-", 1)[-1]
        return name if name in ("Milan", "Genoa", "Turin") else None

    def describe(self) -> str:
        return f"{self.role.upper()} {self.common_name!r} (sha256 {self.sha256[:16]}…)"


@dataclass(frozen=True, slots=True)
class SnpCertificates:
    """The certificates supplied with a report, by role; any may be missing."""

    vcek: AmdCert | None = None
    vlek: AmdCert | None = None
    ask: AmdCert | None = None
    asvk: AmdCert | None = None
    ark: AmdCert | None = None

    def get(self, role: str) -> AmdCert | None:
        found: AmdCert | None = getattr(self, role)
        return found

    def all(self) -> tuple[AmdCert, ...]:
        return tuple(c for c in (self.vcek, self.vlek, self.ask, self.asvk, self.ark) if c)


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _classify(cert: x509.Certificate, cn: str, self_signed: bool) -> str:
    if self_signed or cn.startswith("ARK-"):
        return "ark"
    if cn == "SEV-VCEK":
        return "vcek"
    if cn == "SEV-VLEK":
        return "vlek"
    if cn.startswith("SEV-VLEK-"):
        return "asvk"
    if cn.startswith("SEV-"):
        return "ask"
    # Names outside AMD's scheme (development PKIs): decide by key type and extensions.
    oids = {e.oid.dotted_string for e in cert.extensions}
    if isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        return "vlek" if OID_CSP_ID in oids else "vcek"
    return "asvk" if "VLEK" in cn.upper() else "ask"


@lru_cache(maxsize=512)
def load_der(der: bytes) -> AmdCert:
    """Parse one DER certificate (cached by its bytes)."""
    try:
        with warnings.catch_warnings():
            # AMD VCEK/VLEK certificates have serial 0, which cryptography >= 45 warns about
            # (REFERENCE 3.3); silence exactly that warning, nothing else.
            warnings.filterwarnings("ignore", message=".*serial number.*",
                                    category=CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(der)
            cn = _cn(cert.subject)
            self_signed = cert.subject == cert.issuer
            role = _classify(cert, cn, self_signed)
            nb = int(cert.not_valid_before_utc.timestamp())
            na = int(cert.not_valid_after_utc.timestamp())
            # cryptography parses these lazily; read them once here, so a bad version,
            # extension or key is malformed input now and not an exception deep in a check.
            _ = cert.version, cert.extensions, cert.public_key()
    except PARSE_ERRORS as e:
        raise EvidenceError(f"not a valid X.509 certificate ({type(e).__name__}: {e})") from e
    return AmdCert(der, cert, role, cn, nb, na, hashlib.sha256(der).hexdigest(), self_signed)


def _split_der(data: bytes) -> list[bytes]:
    """Split concatenated DER certificates by their outer SEQUENCE length (whitespace between
    them is skipped: it can never start a DER SEQUENCE)."""
    out: list[bytes] = []
    i = 0
    while i < len(data):
        if data[i] in b" \t\r\n":
            i += 1
            continue
        if data[i] != 0x30 or i + 2 > len(data):
            raise EvidenceError(f"certificate data at byte {i} is neither PEM nor DER")
        first = data[i + 1]
        if first < 0x80:
            length, hdr = first, 2
        else:
            n = first & 0x7F
            if n == 0 or n > 4 or i + 2 + n > len(data):
                raise EvidenceError(f"bad DER length at byte {i}")
            length, hdr = int.from_bytes(data[i + 2 : i + 2 + n], "big"), 2 + n
        end = i + hdr + length
        if end > len(data):
            raise EvidenceError(f"DER certificate at byte {i} is truncated")
        out.append(data[i:end])
        i = end
    return out


def _split_between(segment: bytes) -> list[bytes]:
    """Text around PEM blocks (openssl's ``subject=`` lines) is commentary; binary is DER."""
    if all(32 <= b < 127 or b in b"\t\r\n" for b in segment):
        return []
    return _split_der(segment)


def split_certificates(data: bytes) -> list[bytes]:
    """DER bytes of every certificate in PEM blocks and/or concatenated DER, in order."""
    out: list[bytes] = []
    pos = 0
    for m in _PEM_RE.finditer(data):
        out.extend(_split_between(data[pos : m.start()]))
        try:
            out.append(base64.b64decode(b"".join(m.group(1).split()), validate=True))
        except (binascii.Error, ValueError) as e:
            raise EvidenceError(f"PEM certificate is not valid base64: {e}") from e
        pos = m.end()
    out.extend(_split_between(data[pos:]) if pos else _split_der(data))
    if not out:
        raise EvidenceError("certificate data holds no certificate")
    return out


@malformed("the SEV-SNP certificates")
def load_certificates(data: bytes) -> SnpCertificates:
    """Load VCEK / VLEK / ASK / ASVK / ARK from a PEM bundle and/or DER; classify by role."""
    found: dict[str, AmdCert] = {}
    ders = split_certificates(data)
    for i, der in enumerate(ders, 1):
        try:
            c = load_der(der)
        except EvidenceError as e:
            raise EvidenceError(f"certificate {i} of {len(ders)}: {e}") from e
        prev = found.get(c.role)
        if prev is not None and prev.der != c.der:
            raise EvidenceError(f"more than one {c.role.upper()} certificate supplied")
        found[c.role] = c
    return SnpCertificates(**found)


def merge(a: SnpCertificates, b: SnpCertificates) -> SnpCertificates:
    """``a`` with the roles it lacks filled from ``b``."""
    return SnpCertificates(**{r: a.get(r) or b.get(r) for r in ROLES})


def _tlv(value: bytes, tag: int) -> bytes | None:
    if len(value) < 2 or value[0] != tag:
        return None
    n = value[1]
    if n < 0x80:
        body = value[2:]
    else:
        k = n & 0x7F
        n = int.from_bytes(value[2 : 2 + k], "big")
        body = value[2 + k :]
    return body if len(body) == n else None


@lru_cache(maxsize=512)
def key_extensions(c: AmdCert) -> KeyExtensions:
    """Read the AMD TCB, product, hwID and CSP extensions; malformed ones raise."""
    exts: dict[str, bytes] = {}
    for e in c.cert.extensions:
        if e.oid.dotted_string.startswith(AMD_OID) and isinstance(
            e.value, x509.UnrecognizedExtension
        ):
            exts[e.oid.dotted_string] = e.value.value

    def integer(oid: str) -> int | None:
        if oid not in exts:
            return None
        body = _tlv(exts[oid], 0x02)
        if body is None or not body:
            raise EvidenceError(f"{c.describe()}: extension {oid} is not a DER INTEGER")
        return int.from_bytes(body, "big", signed=True)

    def text(oid: str) -> str | None:
        if oid not in exts:
            return None
        body = _tlv(exts[oid], 0x16)
        if body is None:
            raise EvidenceError(f"{c.describe()}: extension {oid} is not an IA5String")
        return body.decode("ascii", "replace")

    hwid = exts.get(OID_HWID)
    if hwid is not None and len(hwid) not in (8, 64):
        hwid = _tlv(hwid, 0x04)
        if hwid is None:
            raise EvidenceError(f"{c.describe()}: hwID extension is malformed")
    tcb = {k: v for k, oid in OID_TCB.items() if (v := integer(oid)) is not None}
    return KeyExtensions(integer(OID_STRUCT_VERSION), text(OID_PRODUCT_NAME), tcb, hwid,
                         text(OID_CSP_ID))


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


@lru_cache(maxsize=1024)
def amd_signed(child: AmdCert, issuer: AmdCert) -> bool:
    """AMD's rule: RSA-PSS SHA-384, MGF1-SHA-384, salt 48, by an RSA issuer key."""
    if child.cert.issuer != issuer.cert.subject:
        return False
    if child.cert.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
        return False
    key = issuer.cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(child.cert.signature, child.cert.tbs_certificate_bytes, _PSS, hashes.SHA384())
    except InvalidSignature:
        return False
    return True


@lru_cache(maxsize=1024)
def any_signed(child: AmdCert, issuer: AmdCert) -> bool:
    """Signature by ``issuer`` with whatever algorithm the certificate names (dev PKIs)."""
    try:
        child.cert.verify_directly_issued_by(issuer.cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def crl_signed_by(crl: x509.CertificateRevocationList, issuer: AmdCert) -> bool:
    """AMD signs its CRLs with the ARK, RSA-PSS SHA-384 (go-sev-guest ``verifyCRL``); a
    development issuer with an EC key signs with ECDSA."""
    if crl.issuer != issuer.cert.subject:
        return False
    key = issuer.cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if crl.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS:
            return False
        try:
            key.verify(crl.signature, crl.tbs_certlist_bytes, _PSS, hashes.SHA384())
        except InvalidSignature:
            return False
        return True
    if isinstance(key, ec.EllipticCurvePublicKey):
        return crl.is_signature_valid(key)
    return False


@malformed("the AMD CRL")
def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL in DER or PEM; EvidenceError otherwise."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as e:
        raise EvidenceError(f"AMD CRL is not a DER or PEM CRL: {e}") from None


@dataclass(frozen=True, slots=True)
class ProductRoots:
    product: str
    ark: AmdCert
    ask: AmdCert
    asvk: AmdCert


@cache
def pinned_roots() -> dict[str, ProductRoots]:
    """The AMD roots shipped in ``attest/roots/amd`` (see its PROVENANCE.md)."""
    base = resources.files("teegate.attest") / "roots" / "amd"
    out: dict[str, ProductRoots] = {}
    for product in ("Milan", "Genoa", "Turin"):
        pem = (base / f"{product.lower()}.pem").read_bytes()
        certs = load_certificates(pem)
        if not (certs.ark and certs.ask and certs.asvk):  # pragma: no cover - packaging bug
            raise RuntimeError(f"pinned AMD roots for {product} are incomplete")
        out[product] = ProductRoots(product, certs.ark, certs.ask, certs.asvk)
    return out


@lru_cache(maxsize=64)
def development_roots(pems: tuple[str, ...]) -> tuple[AmdCert, ...]:
    """Certificates from ``policy.roots.amd`` (development ARKs and their intermediates)."""
    out: list[AmdCert] = []
    for pem in pems:
        out.extend(load_der(d) for d in split_certificates(pem.encode()))
    return tuple(out)
