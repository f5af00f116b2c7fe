from __future__ import annotations

import struct
import warnings

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from teegate.errors import ConfigError
from teegate.sim import DevSnp
from teegate.sim.snp import DEFAULT_MEASUREMENT, POLICY_DEBUG
from tests.sim.conftest import DATA

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
RD = bytes(range(64))


def chain(dev: DevSnp) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(dev.cert_chain_pem())


def verify_report(report: bytes, vcek: x509.Certificate) -> None:
    """The recipe of REFERENCE.md §3.1: r, s little-endian at 0x2A0/0x2E8, over 0..0x2A0."""
    r = int.from_bytes(report[0x2A0:0x2E8], "little")
    s = int.from_bytes(report[0x2E8:0x330], "little")
    key = vcek.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(encode_dss_signature(r, s), report[:0x2A0], ec.ECDSA(hashes.SHA384()))


@pytest.mark.parametrize("version", [3, 5])
def test_report_signature_verifies_with_the_vcek(dev_snp: DevSnp, version: int) -> None:
    report = dev_snp.report(RD, version=version)
    assert len(report) == 1184
    assert struct.unpack_from("<I", report, 0)[0] == version
    verify_report(report, chain(dev_snp)[0])
    assert report[0x330:] == bytes(1184 - 0x330)


def test_chain_is_vcek_ask_ark_signed_with_rsa_pss(dev_snp: DevSnp) -> None:
    vcek, ask, ark = chain(dev_snp)
    assert ark.subject == ark.issuer
    for child, parent in ((vcek, ask), (ask, ark), (ark, ark)):
        key = parent.public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size == 4096
        assert child.signature_hash_algorithm is not None
        key.verify(child.signature, child.tbs_certificate_bytes, PSS, hashes.SHA384())
    assert isinstance(vcek.public_key(), ec.EllipticCurvePublicKey)
    assert vcek.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert dev_snp.ark_pem.encode() in dev_snp.cert_chain_pem()
    names = [c.subject.rfc4514_string() for c in (vcek, ask, ark)]
    assert [n.split("CN=")[1].split(",")[0] for n in names] == ["SEV-VCEK", "SEV-Genoa",
                                                               "ARK-Genoa"]


def test_flipped_report_byte_fails(dev_snp: DevSnp) -> None:
    report = bytearray(dev_snp.report(RD))
    report[0x50] ^= 1
    with pytest.raises(InvalidSignature):
        verify_report(bytes(report), chain(dev_snp)[0])


def test_parameters_land_in_the_abi_fields(dev_snp: DevSnp) -> None:
    m, h = b"\x11" * 48, b"\x22" * 32
    report = dev_snp.report(RD, measurement=m, host_data=h, vmpl=2, debug=True)
    assert report[0x50:0x90] == RD
    assert report[0x90:0xC0] == m
    assert report[0xC0:0xE0] == h
    assert struct.unpack_from("<I", report, 0x30)[0] == 2
    policy = struct.unpack_from("<Q", report, 0x08)[0]
    assert policy & POLICY_DEBUG
    assert policy & (1 << 17)
    plain = dev_snp.report(RD)
    assert not struct.unpack_from("<Q", plain, 0x08)[0] & POLICY_DEBUG
    assert plain[0x90:0xC0] == DEFAULT_MEASUREMENT
    assert struct.unpack_from("<I", plain, 0x34)[0] == 1  # ECDSA P-384 with SHA-384
    assert plain[0x160:0x180] == b"\xff" * 32


def test_v3_has_cpuid_and_v5_has_mitigation_vectors(dev_snp: DevSnp) -> None:
    v3, v5 = dev_snp.report(RD, version=3), dev_snp.report(RD, version=5)
    assert v3[0x188:0x18B] == v5[0x188:0x18B] == bytes([0x19, 0x11, 0x01])  # Genoa
    assert v3[0x1F8:0x208] == bytes(16)
    assert v5[0x1F8:0x208] != bytes(16)


def _amd_exts(cert: x509.Certificate) -> dict[str, bytes]:
    return {
        e.oid.dotted_string: e.value.value
        for e in cert.extensions
        if isinstance(e.value, x509.UnrecognizedExtension)
        and e.oid.dotted_string.startswith("1.3.6.1.4.1.3704.1.")
    }


def test_vcek_extensions_match_a_real_genoa_vcek_and_the_report(dev_snp: DevSnp) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # real VCEKs have serial 0
        real = x509.load_der_x509_certificate((DATA / "genoa-vcek.der").read_bytes())
    mine = _amd_exts(chain(dev_snp)[0])
    theirs = _amd_exts(real)
    assert list(mine) == list(theirs)
    assert mine["1.3.6.1.4.1.3704.1.2"] == theirs["1.3.6.1.4.1.3704.1.2"]  # IA5String "Genoa"
    assert len(mine["1.3.6.1.4.1.3704.1.4"]) == len(theirs["1.3.6.1.4.1.3704.1.4"]) == 64
    report = dev_snp.report(RD)
    assert mine["1.3.6.1.4.1.3704.1.4"] == report[0x1A0:0x1E0] == dev_snp.chip_id
    tcb = report[0x180:0x188]
    spl = {k: mine[f"1.3.6.1.4.1.3704.1.3.{k}"] for k in (1, 2, 3, 8)}
    assert all(v[0] == 0x02 for v in spl.values())  # DER INTEGERs
    assert [int.from_bytes(spl[k][2:], "big") for k in (1, 2, 3, 8)] == [
        tcb[0], tcb[1], tcb[6], tcb[7]
    ]


def test_reported_tcb_override_disagrees_with_vcek(dev_snp: DevSnp) -> None:
    report = dev_snp.report(RD, reported_tcb=bytes(8))
    assert report[0x180:0x188] == bytes(8)
    verify_report(report, chain(dev_snp)[0])  # still signed, but SPLs no longer match


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"report_data": bytes(65)}, "report_data"),
        ({"report_data": b"", "version": 4}, "version"),
        ({"report_data": b"", "vmpl": 4}, "vmpl"),
        ({"report_data": b"", "measurement": bytes(49)}, "measurement"),
        ({"report_data": b"", "host_data": bytes(33)}, "host_data"),
    ],
)
def test_bad_parameters_raise_config_error(dev_snp: DevSnp, kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=match):
        dev_snp.report(**kwargs)
