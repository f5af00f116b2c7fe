"""Development roots: a generated AMD-shaped PKI is trusted only when the policy names it."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from teegate.attest.policy import Policy, SnpPolicy
from teegate.attest.snp import parse_report, verify_report
from teegate.attest.snp_certs import pinned_roots
from tests.attest.test_snp import NOW, read

OID = "1.3.6.1.4.1.3704.1."
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _der_int(v: int) -> bytes:
    body = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def _cert(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey,
          signer: ec.EllipticCurvePrivateKey, exts: dict[str, bytes] | None = None
          ) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key)
         .serial_number(1).not_valid_before(START)
         .not_valid_after(START + dt.timedelta(days=3650)))
    for oid, value in (exts or {}).items():
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), False)
    return b.sign(signer, hashes.SHA384())


@dataclasses.dataclass
class DevPki:
    ark_pem: str
    ask_pem: str
    vcek_der: bytes
    report: bytes


@pytest.fixture(scope="module")
def dev() -> DevPki:
    """Re-sign a real Milan report with a dev VCEK whose ARK/ASK copy AMD's subject names."""
    amd = pinned_roots()["Milan"]
    ark_k, ask_k, vcek_k = (ec.generate_private_key(ec.SECP384R1()) for _ in range(3))
    ark = _cert(amd.ark.cert.subject, amd.ark.cert.subject, ark_k.public_key(), ark_k)
    ask = _cert(amd.ask.cert.subject, amd.ark.cert.subject, ask_k.public_key(), ark_k)
    raw = bytearray(read("trustee/test-report.bin"))
    r = parse_report(bytes(raw))
    tcb = r.reported_tcb
    exts = {OID + "1": _der_int(0), OID + "2": b"\x16\x08Milan-B0",
            OID + "3.1": _der_int(tcb.bootloader), OID + "3.2": _der_int(tcb.tee),
            OID + "3.3": _der_int(tcb.snp), OID + "3.8": _der_int(tcb.microcode),
            OID + "4": r.chip_id}
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SEV-VCEK")])
    vcek = _cert(name, amd.ask.cert.subject, vcek_k.public_key(), ask_k, exts)
    sig_r, sig_s = decode_dss_signature(vcek_k.sign(bytes(raw[:0x2A0]),
                                                    ec.ECDSA(hashes.SHA384())))
    raw[0x2A0:0x330] = sig_r.to_bytes(72, "little") + sig_s.to_bytes(72, "little")
    return DevPki(ark.public_bytes(Encoding.PEM).decode(), ask.public_bytes(Encoding.PEM).decode(),
                  vcek.public_bytes(Encoding.DER), bytes(raw))


def test_dev_chain_is_rejected_without_the_dev_root(dev: DevPki) -> None:
    certs = dev.vcek_der + dev.ask_pem.encode() + dev.ark_pem.encode()
    v = verify_report(dev.report, certs, policy=Policy.default(), now=NOW)
    assert not v.accepted
    ark = v.check("snp.ark")
    assert ark is not None
    assert not ark.ok
    assert "neither the pinned AMD ARK" in ark.detail
    # Without the supplied ARK the dev ASK simply does not chain to AMD's ARK.
    v2 = verify_report(dev.report, dev.vcek_der + dev.ask_pem.encode(),
                       policy=Policy.default(), now=NOW)
    assert "snp.vcek_chain" in {c.name for c in v2.failures}


def test_dev_chain_is_accepted_with_the_dev_root_and_marked(dev: DevPki) -> None:
    policy = Policy.default().with_roots(amd=(dev.ark_pem,))
    v = verify_report(dev.report, dev.vcek_der + dev.ask_pem.encode(), policy=policy, now=NOW)
    assert v.accepted, v.failures
    assert v.development
    dr = v.check("snp.development_root")
    assert dr is not None
    assert dr.ok


def test_dev_root_does_not_weaken_real_vectors(dev: DevPki) -> None:
    policy = Policy.default().with_roots(amd=(dev.ark_pem,))
    v = verify_report(read("trustee/test-report.bin"), read("trustee/test-vcek.der"),
                      policy=policy, now=NOW)
    assert v.accepted
    assert not v.development


def test_dev_vcek_with_wrong_tcb_is_rejected(dev: DevPki) -> None:
    policy = dataclasses.replace(Policy.default().with_roots(amd=(dev.ark_pem,)),
                                 snp=SnpPolicy(min_tcb={"microcode": 255}))
    v = verify_report(dev.report, dev.vcek_der + dev.ask_pem.encode(), policy=policy, now=NOW)
    assert [c.name for c in v.failures] == ["snp.min_tcb"]
