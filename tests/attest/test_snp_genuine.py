"""Genuine SEV-SNP evidence in the shapes clouds hand out (issue 13): a report followed by
bytes no signature covers is judged on its 1184-byte report, and what followed is named."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from teegate.attest.policy import Policy
from teegate.attest.snp import verify_report
from teegate.cli import app

AZ = Path(__file__).resolve().parent.parent / "data" / "sev-snp" / "trustee" / "az-snp-vtpm"
NOW = 1756684800
# Azure's HCL report (trustee's az-snp-vtpm test data): a 32-byte "HCLA" header, the 1184-byte
# SNP report, then the runtime data whose SHA-256 is the report's REPORT_DATA.
HCL = (AZ / "hcl-report.bin").read_bytes()
VCEK = (AZ / "vcek.pem").read_bytes()


def _trailing(extra: bytes) -> str:
    v = verify_report(HCL[0x20 : 0x20 + 1184] + extra, VCEK, policy=Policy.default(), now=NOW)
    assert v.accepted, v.failures
    check = v.check("snp.trailing_bytes")
    assert check is not None
    assert check.ok
    return check.detail


def test_report_followed_by_the_hcl_runtime_data_is_verified_and_the_rest_named() -> None:
    """An HCL report with its header cut off: the SNP report, then 1396 bytes of runtime data."""
    detail = _trailing(HCL[0x20 + 1184 :])
    assert detail.startswith(f"{len(HCL) - 0x20 - 1184} bytes follow the 1184-byte report "
                             f"({HCL[0x4C0 : 0x4C0 + 32].hex()}…)")
    assert "no signature covers them" in detail


@pytest.mark.parametrize("extra", [bytes(20), b"\xff" + bytes(19)])
def test_the_1204_byte_form(extra: bytes) -> None:
    detail = _trailing(extra)
    assert ("20 zero bytes of padding" in detail) == (not any(extra))


def test_a_report_alone_has_no_trailing_check() -> None:
    v = verify_report(HCL[0x20 : 0x20 + 1184], VCEK, policy=Policy.default(), now=NOW)
    assert v.check("snp.trailing_bytes") is None


def test_a_signed_byte_changed_still_fails_with_trailing_bytes() -> None:
    body = bytearray(HCL[0x20 : 0x20 + 1184])
    body[0x90] ^= 1  # MEASUREMENT
    v = verify_report(bytes(body) + bytes(20), VCEK, policy=Policy.default(), now=NOW)
    assert "snp.report_signature" in {c.name for c in v.failures}


@pytest.mark.parametrize("as_hex", [False, True])
def test_cli_accepts_a_longer_report(tmp_path: Path, as_hex: bool) -> None:
    data = HCL[0x20:]
    f = tmp_path / "report.bin"
    f.write_bytes(data.hex().encode() if as_hex else data)
    result = CliRunner().invoke(app, ["verify", "--policy", str(Path(__file__).resolve()
                                                               .parents[2] / "docs" /
                                                               "policy.audit.toml"),
                                      "--certs", str(AZ / "vcek.pem"), "--now", str(NOW),
                                      "--json", str(f)])
    assert result.exit_code == 0, result.output
    assert "snp.trailing_bytes" in result.output


def test_supplied_chain_certificates_the_pinned_roots_replaced_are_named() -> None:
    """trustee's Milan report with its VCEK, once with the Milan ASK/ARK (the pinned ones),
    once with go-sev-guest's Genoa ASK/ARK: the pinned Milan root decides either way."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    snp = Path(__file__).resolve().parent.parent / "data" / "sev-snp"
    report = (snp / "trustee" / "test-report.bin").read_bytes()
    with warnings.catch_warnings():  # AMD VCEKs have serial number 0
        warnings.simplefilter("ignore")
        vcek = x509.load_der_x509_certificate((snp / "trustee" / "test-vcek.der").read_bytes())
    pem = vcek.public_bytes(serialization.Encoding.PEM)
    same = verify_report(report, pem + (snp / "go-sev-guest" / "ask_ark_milan.pem").read_bytes(),
                         policy=Policy.default(), now=NOW)
    other = verify_report(report, pem + (snp / "go-sev-guest" / "ask_ark_genoa.pem").read_bytes(),
                          policy=Policy.default(), now=NOW)
    assert same.accepted
    assert other.accepted
    same_ark, other_ark = same.check("snp.ark"), other.check("snp.ark")
    assert same_ark is not None
    assert other_ark is not None
    assert "the supplied ARK is the same certificate" in same_ark.detail
    assert "ARK-Genoa" in other_ark.detail
    assert "was ignored: the pinned root decided" in other_ark.detail
    assert "SEV-Genoa" in other_ark.detail


def test_short_hex_text_is_named_by_its_size() -> None:
    from teegate.attest.snp_report import load_report
    from teegate.errors import EvidenceError

    with pytest.raises(EvidenceError, match="at least 1184 bytes"):
        load_report(HCL[0x20 : 0x20 + 1000].hex().encode())
    assert load_report(HCL[0x20:].hex().encode()) == HCL[0x20:]
