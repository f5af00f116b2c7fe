"""SEV-SNP verifier against the real vectors (tests/data/sev-snp, see its PROVENANCE.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import pytest

from teegate.attest.policy import Policy, SnpPolicy, TcbPolicy
from teegate.attest.snp import (
    load_certificates,
    load_report,
    parse_report,
    verify_report,
)
from teegate.attest.snp_certs import pinned_roots
from teegate.errors import EvidenceError

DATA = Path(__file__).resolve().parent.parent / "data" / "sev-snp"
# 2025-09-01T00:00:00Z: inside the validity of every certificate in the vector set.
NOW = 1756684800

# (id, report file, signer certificate file, product, signer)
PAIRS = [
    ("go-sev-guest-milan-v2", "go-sev-guest/attestation.bin", "go-sev-guest/vcek.testcer",
     "Milan", "vcek"),
    ("virtee-milan-v2-hex", "virtee-sev/report_milan.hex", "virtee-sev/vcek_milan.der",
     "Milan", "vcek"),
    ("trustee-milan-v2", "trustee/test-report.bin", "trustee/test-vcek.der", "Milan", "vcek"),
    ("trustee-aws-vlek-milan-v3", "trustee/test-vlek-report.bin", "trustee/test-vlek.der",
     "Milan", "vlek"),
    ("azure-milan-v2", "trustee/az-snp-vtpm/derived-snp-report-from-hcl-report.bin",
     "trustee/az-snp-vtpm/vcek.pem", "Milan", "vcek"),
    ("azure-genoa-v3", "trustee/az-snp-vtpm/derived-snp-report-from-evidence-genoa.bin",
     "trustee/az-snp-vtpm/vcek-genoa.pem", "Genoa", "vcek"),
    ("oak-turin-v5", "project-oak/derived-turin-report.bin", "project-oak/derived-turin-vcek.der",
     "Turin", "vcek"),
    ("oak-genoa-v5", "project-oak/derived-genoa-report.bin", "project-oak/derived-genoa-vcek.der",
     "Genoa", "vcek"),
]


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


DEFAULT = Policy.default()
ALLOW_DEBUG = dataclasses.replace(DEFAULT, tcb=TcbPolicy(allow_debug=True))


def _failed(v: object) -> set[str]:
    return {c.name for c in v.failures}  # type: ignore[attr-defined]


def _snp(**kw: object) -> Policy:
    return dataclasses.replace(DEFAULT, snp=SnpPolicy(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(("rid", "report", "cert", "product", "signer"), PAIRS,
                         ids=[p[0] for p in PAIRS])
def test_every_vector_verifies_at_its_now(
    rid: str, report: str, cert: str, product: str, signer: str
) -> None:
    v = verify_report(read(report), read(cert), policy=ALLOW_DEBUG, now=NOW)
    assert v.accepted, v.failures
    assert v.tee == "sev-snp"
    assert v.identity["product"] == product
    assert v.identity["signer"] == signer
    names = {c.name for c in v.checks}
    assert {"snp.ark", "snp.vcek_chain", "snp.report_signature", "snp.tcb",
            "snp.chip_id", "snp.debug", "snp.measurement"} <= names
    assert not v.development
    assert v.not_before is not None
    assert v.not_after is not None
    assert v.not_before <= NOW <= v.not_after
    assert v.report_data == parse_report(load_report(read(report))).report_data.hex()


@pytest.mark.parametrize(("rid", "report", "cert", "product", "signer"), PAIRS,
                         ids=[p[0] for p in PAIRS])
def test_default_policy_rejects_only_the_debug_guest(
    rid: str, report: str, cert: str, product: str, signer: str
) -> None:
    v = verify_report(read(report), read(cert), policy=DEFAULT, now=NOW)
    if rid == "go-sev-guest-milan-v2":
        assert _failed(v) == {"snp.debug"}
    else:
        assert v.accepted, v.failures


@pytest.mark.parametrize("bad", ["trustee/test-vcek-invalid-legacy.der",
                                 "trustee/test-vcek-invalid-new.der"])
def test_invalid_vceks_are_rejected_by_the_chain(bad: str) -> None:
    v = verify_report(read("trustee/test-report.bin"), read(bad), policy=DEFAULT, now=NOW)
    assert not v.accepted
    assert {"snp.vcek_chain", "snp.report_signature", "snp.chip_id"} <= _failed(v)


def test_vcek_of_another_chip_is_rejected() -> None:
    v = verify_report(read("trustee/test-report.bin"), read("virtee-sev/vcek_milan.der"),
                      policy=DEFAULT, now=NOW)
    assert {"snp.report_signature", "snp.chip_id"} <= _failed(v)
    assert "snp.vcek_chain" not in _failed(v)  # the VCEK itself is genuine


def test_missing_certificates_fail_named_check() -> None:
    v = verify_report(read("trustee/test-report.bin"), None, policy=DEFAULT, now=NOW)
    assert not v.accepted
    c = v.check("snp.certificates")
    assert c is not None
    assert not c.ok
    assert c.detail == "VCEK not supplied; fetch with --online or give --certs"
    assert "snp.report_signature" in _failed(v)


def test_vlek_report_with_only_a_chain_asks_for_the_vlek() -> None:
    v = verify_report(read("trustee/test-vlek-report.bin"), read("trustee/milan_ask_ark_asvk.pem"),
                      policy=DEFAULT, now=NOW)
    assert "snp.certificates" in _failed(v)


def test_expired_vlek_is_rejected_after_its_not_after() -> None:
    later = 1765404861 + 1  # one second after the AWS VLEK's notAfter (2025-12-10)
    v = verify_report(read("trustee/test-vlek-report.bin"), read("trustee/test-vlek.der"),
                      policy=DEFAULT, now=later)
    assert _failed(v) == {"snp.cert_validity"}
    assert v.not_after == 1765404861


def test_vcek_not_yet_valid_is_rejected() -> None:
    v = verify_report(read("project-oak/derived-turin-report.bin"),
                      read("project-oak/derived-turin-vcek.der"), policy=DEFAULT,
                      now=1748736000)  # 2025-06-01, before the VCEK was issued
    assert _failed(v) == {"snp.cert_validity"}


def test_full_chain_bundle_and_concatenated_der() -> None:
    vcek = read("go-sev-guest/vcek.testcer")
    chain = read("go-sev-guest/ask_ark_milan.pem")
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    ders = b"".join(c.public_bytes(Encoding.DER)
                    for c in x509.load_pem_x509_certificates(chain))
    for blob in (chain + b"\n", vcek + ders):
        certs = load_certificates(blob)
        assert certs.ask is not None
        assert certs.ark is not None
    both = load_certificates(vcek + ders)
    assert both.vcek is not None
    assert both.vcek.der == vcek
    v = verify_report(read("go-sev-guest/attestation.bin"), both, policy=ALLOW_DEBUG, now=NOW)
    assert v.accepted


def test_classification_of_a_three_cert_bundle() -> None:
    certs = load_certificates(read("trustee/milan_ask_ark_asvk.pem"))
    assert certs.ask
    assert certs.ask.common_name == "SEV-Milan"
    assert certs.ark
    assert certs.ark.common_name == "ARK-Milan"
    assert certs.asvk
    assert certs.asvk.common_name == "SEV-VLEK-Milan"
    assert certs.vcek is None
    assert certs.vlek is None
    azure = load_certificates(read("trustee/az-snp-vtpm/vcek.pem"))
    assert azure.vcek
    assert azure.ask
    assert azure.ark


def test_turin_fields_decode_with_fmc_and_8_byte_chip_id() -> None:
    r = parse_report(read("project-oak/derived-turin-report.bin"))
    assert r.version == 5
    assert r.product == "Turin"
    assert r.reported_tcb.parts() == {"bootloader": 1, "tee": 0, "snp": 2, "microcode": 71,
                                      "fmc": 0}
    assert r.chip_id_used.hex() == "3b42092f69c656d3"
    assert (r.cpuid_fam_id, r.cpuid_mod_id) == (0x1A, 0x02)
    assert r.launch_mit_vector is not None


def test_milan_v2_fields() -> None:
    r = parse_report(read("trustee/test-report.bin"))
    assert r.version == 2
    assert r.product is None
    assert r.guest_svn == 4
    assert r.policy.raw == 0x3001F
    assert not r.policy.debug
    assert r.current_tcb.microcode == 0xCE
    assert r.reported_tcb.microcode == 0x73
    assert r.reported_tcb.fmc is None
    assert any(r.id_key_digest)
    assert r.signing_key == "vcek"
    assert parse_report(read("go-sev-guest/attestation.bin")).policy.debug
    vlek = parse_report(read("trustee/test-vlek-report.bin"))
    assert vlek.signing_key == "vlek"
    assert vlek.vmpl == 1
    assert vlek.chip_id_masked


def test_hex_and_binary_inputs_are_the_same_report() -> None:
    text = read("virtee-sev/report_milan.hex")
    raw = load_report(text)
    assert len(raw) == 1184
    assert load_report(raw) == raw
    assert load_report(b"0x" + raw.hex().upper().encode()) == raw


@pytest.mark.parametrize("blob", [b"", b"\x02" * 100, bytes(1185), b"zz" * 1184])
def test_malformed_reports_raise_evidence_error(blob: bytes) -> None:
    with pytest.raises(EvidenceError):
        parse_report(load_report(blob))


def test_policy_measurement_host_data_id_key() -> None:
    report, cert = read("trustee/test-report.bin"), read("trustee/test-vcek.der")
    r = parse_report(report)
    ok = _snp(measurement=frozenset({r.measurement.hex()}),
              host_data=frozenset({r.host_data.hex()}),
              id_key_digest=frozenset({r.id_key_digest.hex()}))
    assert verify_report(report, cert, policy=ok, now=NOW).accepted
    for field in ("measurement", "host_data", "id_key_digest"):
        bad = _snp(**{field: frozenset({"00" * 48})})
        v = verify_report(report, cert, policy=bad, now=NOW)
        assert _failed(v) == {f"snp.{field}"}


def test_policy_tcb_vmpl_svn_products() -> None:
    report, cert = read("trustee/test-vlek-report.bin"), read("trustee/test-vlek.der")
    assert _failed(verify_report(report, cert, policy=_snp(vmpl=frozenset({0})), now=NOW)) == {
        "snp.vmpl"}
    assert verify_report(report, cert, policy=_snp(vmpl=frozenset({1})), now=NOW).accepted
    assert _failed(verify_report(report, cert, policy=_snp(min_guest_svn=1), now=NOW)) == {
        "snp.guest_svn"}
    assert _failed(verify_report(report, cert, policy=_snp(min_tcb={"snp": 25}),
                                 now=NOW)) == {"snp.min_tcb"}
    assert verify_report(report, cert, policy=_snp(min_tcb={"snp": 24, "microcode": 217}),
                         now=NOW).accepted
    # fmc exists only on Turin: a Milan report cannot meet an fmc floor.
    assert "snp.min_tcb" in _failed(verify_report(report, cert, policy=_snp(min_tcb={"fmc": 0}),
                                                  now=NOW))
    assert _failed(verify_report(report, cert, policy=_snp(products=frozenset({"Genoa"})),
                                 now=NOW)) == {"snp.product"}


def test_turin_min_tcb_includes_fmc() -> None:
    report, cert = read("project-oak/derived-turin-report.bin"), read(
        "project-oak/derived-turin-vcek.der")
    assert verify_report(report, cert, policy=_snp(min_tcb={"fmc": 0, "microcode": 71}),
                         now=NOW).accepted
    assert "snp.min_tcb" in _failed(verify_report(report, cert,
                                                  policy=_snp(min_tcb={"fmc": 1}), now=NOW))


def test_vcek_from_other_product_is_rejected() -> None:
    # A Genoa (v5, CPUID) report with a Turin VCEK: product mismatch, no chain, bad signature.
    v = verify_report(read("project-oak/derived-genoa-report.bin"),
                      read("virtee-sev/vcek_turin.der"),
                      policy=DEFAULT, now=NOW)
    assert {"snp.product", "snp.report_signature"} <= _failed(v)


def test_pinned_roots_match_provenance_fingerprints() -> None:
    from importlib import resources
    text = (resources.files("teegate.attest") / "roots" / "amd" / "PROVENANCE.md").read_text()
    listed = set(re.findall(r"`([0-9a-f]{64})`", text))
    roots = pinned_roots()
    pinned = {hashlib.sha256(c.der).hexdigest() for p in roots.values()
              for c in (p.ark, p.ask, p.asvk)}
    assert len(pinned) == 9
    assert pinned == listed
    for p in roots.values():
        assert p.ark.self_signed
        assert p.ark.common_name == f"ARK-{p.product}"


def test_turin_vcek_without_report_chains_to_pinned_turin_roots() -> None:
    from teegate.attest.snp_certs import amd_signed, load_der
    vcek = load_der(read("virtee-sev/vcek_turin.der"))
    roots = pinned_roots()["Turin"]
    assert amd_signed(vcek, roots.ask)
    assert amd_signed(roots.ask, roots.ark)
    assert not amd_signed(vcek, pinned_roots()["Milan"].ask)


def test_product_given_must_agree_with_cpuid() -> None:
    turin = read("project-oak/derived-turin-report.bin")
    assert parse_report(turin, product="Turin").product == "Turin"
    with pytest.raises(EvidenceError, match="CPUID says Turin"):
        parse_report(turin, product="Milan")
    # v2 reports carry no CPUID: the caller's product is taken as given.
    assert parse_report(read("trustee/test-report.bin"), product="Genoa").product == "Genoa"


def test_serial_zero_vcek_loads_without_leaking_a_warning() -> None:
    import warnings

    from teegate.attest.snp_certs import load_der

    load_der.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cert = load_der(read("trustee/test-vlek.der"))
        v = verify_report(read("trustee/test-vlek-report.bin"), cert.der, policy=DEFAULT,
                          now=NOW)
    assert v.accepted
    assert cert.der[13:16] == b"\x02\x01\x00"  # serial INTEGER 0, as AMD issues it
