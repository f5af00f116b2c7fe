"""Single-bit mutations and garbage input against the SEV-SNP verifier."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.attest.policy import Policy
from teegate.attest.snp import load_certificates, load_report, parse_report, verify_report
from teegate.attest.snp_report import SIGNED_SIZE
from teegate.errors import EvidenceError
from tests.attest.test_snp import NOW, read

# One valid report per product.
VALID = {
    "Milan": ("trustee/test-report.bin", "trustee/test-vcek.der"),
    "Genoa": ("project-oak/derived-genoa-report.bin", "project-oak/derived-genoa-vcek.der"),
    "Turin": ("project-oak/derived-turin-report.bin", "project-oak/derived-turin-vcek.der"),
}
POLICY = Policy.default()


@pytest.mark.parametrize("product", sorted(VALID))
def test_flipping_a_bit_in_any_signed_byte_is_rejected(product: str) -> None:
    report_file, cert_file = VALID[product]
    report = read(report_file)
    certs = load_certificates(read(cert_file))
    assert verify_report(report, certs, policy=POLICY, now=NOW).accepted
    accepted: list[int] = []
    for i in range(SIGNED_SIZE):
        mutated = bytearray(report)
        mutated[i] ^= 1 << (i % 8)
        try:
            v = verify_report(bytes(mutated), certs, policy=POLICY, now=NOW)
        except EvidenceError:
            continue
        sig = v.check("snp.report_signature")
        if v.accepted or sig is None or sig.ok:
            accepted.append(i)
    assert accepted == []


def test_flipping_signature_bytes_is_rejected() -> None:
    report = read("trustee/test-report.bin")
    certs = load_certificates(read("trustee/test-vcek.der"))
    for i in range(SIGNED_SIZE, 0x330, 7):
        mutated = bytearray(report)
        mutated[i] ^= 0x80
        v = verify_report(bytes(mutated), certs, policy=POLICY, now=NOW)
        assert not v.accepted


def test_nonzero_trailing_reserved_bytes_are_rejected() -> None:
    report = bytearray(read("trustee/test-report.bin"))
    report[0x400] = 1
    v = verify_report(bytes(report), read("trustee/test-vcek.der"), policy=POLICY, now=NOW)
    assert [c.name for c in v.failures] == ["snp.reserved"]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=2600))
def test_garbage_reports_only_raise_evidence_error(blob: bytes) -> None:
    try:
        v = verify_report(blob, read("trustee/test-vcek.der"), policy=POLICY, now=NOW)
    except EvidenceError:
        return
    assert not v.accepted


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=1183), st.binary(min_size=1, max_size=64))
def test_truncated_or_spliced_reports_never_pass(cut: int, junk: bytes) -> None:
    report = read("trustee/test-report.bin")
    for blob in (report[:cut], report[:cut] + junk + report[cut + len(junk):]):
        try:
            v = verify_report(blob, read("trustee/test-vcek.der"), policy=POLICY, now=NOW)
        except EvidenceError:
            continue
        assert not v.accepted or blob == report


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=3000))
def test_garbage_certificates_only_raise_evidence_error(blob: bytes) -> None:
    try:
        v = verify_report(read("trustee/test-report.bin"), blob, policy=POLICY, now=NOW)
    except EvidenceError:
        return
    assert not v.accepted


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=1359))
def test_truncated_vcek_raises_evidence_error(cut: int) -> None:
    der = read("trustee/test-vcek.der")
    with pytest.raises(EvidenceError):
        load_certificates(der[:cut])


def test_parse_accepts_each_known_version_and_rejects_others() -> None:
    raw = bytearray(load_report(read("trustee/test-report.bin")))
    for version in (0, 1, 6, 0xFFFFFFFF):
        raw[0:4] = version.to_bytes(4, "little")
        with pytest.raises(EvidenceError):
            parse_report(bytes(raw))
