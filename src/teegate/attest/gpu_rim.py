"""NVIDIA Reference Integrity Manifests (RIMs): signed golden measurements for a GPU's driver
and VBIOS (REFERENCE §4.3).

A RIM is an ISO 19770-2 SWID tag whose ``Payload`` lists, per measurement index, whether it is
active and its allowed SHA-384 values; it carries an enveloped XML-DSig signature (C14N 1.1,
ECDSA-SHA384) and the signing chain in ``KeyInfo``, which must end at the pinned "NVIDIA
CoRIM signing Root CA". Only the document's own ``Meta`` and ``Payload`` (children of the
root, covered by the signature's digest) are read; nothing inside ``Signature`` is trusted
except the certificates, which are verified as a chain.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from teegate.attest.gpu_c14n import Node, canonicalize, parse
from teegate.attest.gpu_chain import (
    RIM_ROOT_FILE,
    ChainResult,
    development_roots,
    load_der,
    p384_key,
    pinned_root,
    verify_chain,
)
from teegate.attest.guard import malformed
from teegate.attest.policy import Policy
from teegate.errors import EvidenceError

SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
DS = "http://www.w3.org/2000/09/xmldsig#"
C14N_METHODS = frozenset({
    "http://www.w3.org/2006/12/xml-c14n11",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
})
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
ECDSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
SHA384 = "http://www.w3.org/2001/04/xmldsig-more#sha384"
_VBIOS_VERSION = re.compile(r"^[0-9A-Fa-f]{2}(\.[0-9A-Fa-f]{2}){4}$")
_HASH_ATTR = re.compile(r"^Hash(\d+)$")


@dataclass(frozen=True, slots=True)
class RimMeasurement:
    """Golden value(s) for one measurement; ``index`` is 0-based (SPDM block index - 1)."""

    index: int
    active: bool
    values: tuple[bytes, ...]
    name: str = ""


@dataclass(frozen=True)
class Rim:
    """A parsed RIM. ``kind`` is "driver" or "vbios", told apart by the version's shape."""

    kind: str
    version: str
    product: str
    tag_id: str
    measurements: Mapping[int, RimMeasurement]
    # XML-DSig parts, checked by ``verify_rim``.
    signed_info: bytes = field(repr=False)
    digest: bytes = field(repr=False)
    expected_digest: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    certificates: tuple[bytes, ...] = field(repr=False)
    algorithms_ok: bool = True
    algorithms_detail: str = ""


def _text(node: Node) -> str:
    return "".join(c for c in node.children if isinstance(c, str))


def _only(node: Node, uri: str, local: str) -> Node:
    found = [c for c in node.elements() if c.name == (uri, local)]
    if len(found) != 1:
        raise EvidenceError(f"RIM: expected exactly one {local} element, found {len(found)}")
    return found[0]


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise EvidenceError(f"RIM: {what} is not base64") from e


def _measurements(payload: Node) -> dict[int, RimMeasurement]:
    out: dict[int, RimMeasurement] = {}
    for res in payload.elements():
        if res.name != (SWID, "Resource") or res.attr("type") != "Measurement":
            continue
        try:
            index = int(res.attr("index") or "")
            alternatives = int(res.attr("alternatives") or "1")
        except ValueError as e:
            raise EvidenceError("RIM: a Resource has a non-numeric index/alternatives") from e
        hashes_by_n: dict[int, bytes] = {}
        for q, v in res.attrs:
            m = _HASH_ATTR.match(q.rpartition(":")[2])
            if m:
                try:
                    hashes_by_n[int(m.group(1))] = bytes.fromhex(v)
                except ValueError as e:
                    raise EvidenceError(f"RIM: measurement {index} has a non-hex hash") from e
        if not 0 <= index < 4096 or index in out or not 1 <= alternatives <= 64:
            raise EvidenceError(f"RIM: measurement index {index} is invalid or repeated")
        values = tuple(hashes_by_n.get(n, b"") for n in range(alternatives))
        if any(len(v) != 48 for v in values):
            raise EvidenceError(f"RIM: measurement {index} lacks 48-byte Hash0..Hash"
                                f"{alternatives - 1}")
        active = (res.attr("active") or "").lower() == "true"
        out[index] = RimMeasurement(index, active, values, res.attr("name") or "")
    if not out:
        raise EvidenceError("RIM: the payload lists no measurements")
    return out


@malformed("the RIM")
def parse_rim(xml: bytes) -> Rim:
    """Parse a RIM SWID tag; malformed XML or a missing part raises ``EvidenceError``.

    Parsing computes the canonical digest but judges nothing: see ``verify_rim``.
    """
    if not isinstance(xml, (bytes, bytearray)):
        raise EvidenceError("a RIM must be bytes")
    root = parse(bytes(xml))
    if root.name != (SWID, "SoftwareIdentity"):
        raise EvidenceError("RIM: the document is not a SWID SoftwareIdentity tag")
    meta = _only(root, SWID, "Meta")
    payload = _only(root, SWID, "Payload")
    sig = _only(root, DS, "Signature")
    signed_info = _only(sig, DS, "SignedInfo")
    reference = _only(signed_info, DS, "Reference")
    transforms = [t.attr("Algorithm") for t in _only(reference, DS, "Transforms").elements()]
    c14n = _only(signed_info, DS, "CanonicalizationMethod").attr("Algorithm")
    method = _only(signed_info, DS, "SignatureMethod").attr("Algorithm")
    digest_method = _only(reference, DS, "DigestMethod").attr("Algorithm")
    problems = []
    if reference.attr("URI") != "":
        problems.append("the reference does not cover the whole document (URI is not \"\")")
    if len(transforms) != 2 or transforms[0] != ENVELOPED or transforms[1] not in C14N_METHODS:
        problems.append(f"unsupported transforms {transforms}")
    if c14n not in C14N_METHODS:
        problems.append(f"unsupported canonicalisation {c14n}")
    if method != ECDSA_SHA384:
        problems.append(f"unsupported signature method {method}")
    if digest_method != SHA384:
        problems.append(f"unsupported digest method {digest_method}")
    certs = tuple(
        _b64(_text(c), "X509Certificate")
        for data in _only(sig, DS, "KeyInfo").elements() if data.name == (DS, "X509Data")
        for c in data.elements() if c.name == (DS, "X509Certificate")
    )
    if not certs:
        raise EvidenceError("RIM: KeyInfo carries no signing certificate")
    version = meta.attr("colloquialVersion") or ""
    return Rim(
        kind="vbios" if _VBIOS_VERSION.match(version) else "driver",
        version=version,
        product=meta.attr("product") or root.attr("name") or "",
        tag_id=root.attr("tagId") or "",
        measurements=MappingProxyType(_measurements(payload)),
        signed_info=canonicalize(signed_info),
        digest=hashlib.sha384(canonicalize(root, exclude=sig)).digest(),
        expected_digest=_b64(_text(_only(reference, DS, "DigestValue")), "DigestValue"),
        signature=_b64(_text(_only(sig, DS, "SignatureValue")), "SignatureValue"),
        certificates=certs,
        algorithms_ok=not problems,
        algorithms_detail="; ".join(problems),
    )


@dataclass(frozen=True, slots=True)
class RimVerdict:
    ok: bool
    detail: str
    chain: ChainResult | None = None


@malformed("the RIM")
def verify_rim(rim: Rim, *, policy: Policy, now: int) -> RimVerdict:
    """Check the RIM's XML-DSig signature and its signing chain to the pinned RIM root (or
    a development root in ``policy.roots.nvidia_rim``), valid at ``now``."""
    what = f"{rim.kind} RIM {rim.version}"
    if not rim.algorithms_ok:
        return RimVerdict(False, f"{what}: {rim.algorithms_detail}")
    if not hmac.compare_digest(rim.digest, rim.expected_digest):
        return RimVerdict(False, f"{what}: the document does not match its signed digest "
                                 "(modified after signing)")
    certs = tuple(load_der(d) for d in rim.certificates)
    key = p384_key(certs[0])
    if key is None or len(rim.signature) != 96:
        return RimVerdict(False, f"{what}: the signer is not an ECDSA P-384 key or the "
                                 "signature is not 96 bytes")
    r, s = (int.from_bytes(rim.signature[i:i + 48], "big") for i in (0, 48))
    try:
        key.verify(encode_dss_signature(r, s), rim.signed_info, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return RimVerdict(False, f"{what}: the XML signature does not verify")
    dev = development_roots(policy.roots.nvidia_rim) if policy.roots.nvidia_rim else ()
    chain = verify_chain(certs, pinned=pinned_root(RIM_ROOT_FILE), development=dev, now=now,
                         what=f"{what} signer")
    if not chain.ok:
        return RimVerdict(False, chain.detail, chain)
    if not chain.validity_ok:
        return RimVerdict(False, f"{what} signer: {chain.validity_detail}", chain)
    return RimVerdict(True, f"{what}: signature verifies; {chain.detail}", chain)


def select_rims(rims: Sequence[Rim], *, driver: str | None, vbios: str | None) -> dict[str, Rim]:
    """The RIMs (at most one per kind) whose version is this GPU's driver / VBIOS version."""
    out: dict[str, Rim] = {}
    for rim in rims:
        want = driver if rim.kind == "driver" else vbios
        if want is not None and rim.version.lower() == want.lower() and rim.kind not in out:
            out[rim.kind] = rim
    return out


def compare(
    runtime: Mapping[int, bytes], rims: Mapping[str, Rim]
) -> tuple[bool, str]:
    """nvtrust's comparison: every active golden index (0-based) must equal the runtime block
    (index + 1) or one of its alternatives, and no index may be claimed by both RIMs."""
    claimed: dict[int, str] = {}
    mismatches: list[str] = []
    for kind, rim in sorted(rims.items()):
        for m in rim.measurements.values():
            if not m.active:
                continue
            if m.index in claimed:
                return False, (f"measurement {m.index} is claimed by both the "
                               f"{claimed[m.index]} and the {kind} RIM")
            claimed[m.index] = kind
            value = runtime.get(m.index + 1)
            if value is None:
                mismatches.append(f"{kind} index {m.index} missing from the evidence")
            elif not any(hmac.compare_digest(value, v) for v in m.values):
                mismatches.append(f"{kind} index {m.index} ({value.hex()[:16]}…)")
    if mismatches:
        return False, "measurements differ from the signed RIMs: " + ", ".join(mismatches[:8])
    return True, f"{len(claimed)} active measurements match the " + " and ".join(
        f"{k} RIM {r.version}" for k, r in sorted(rims.items()))
