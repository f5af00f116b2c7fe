"""report_data bound to a TLS key (SHA-256 of its SPKI), on Tinfoil's published evidence:
v1 documents carry the fingerprint as ASCII hex, v2 raw in report_data[0:32] (HPKE key after)."""

from __future__ import annotations

import base64
import datetime as _dt
import gzip
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from teegate.attest.binding import check_tls_binding, fresh_nonce, spki_fingerprint
from teegate.attest.policy import BindingPolicy, Policy
from teegate.attest.tdx import parse_quote
from teegate.cli import app
from teegate.errors import EvidenceError

DATA = Path(__file__).resolve().parent.parent / "data" / "tinfoil"
POLICY = Policy.default()
OFFLINE = replace(POLICY, binding=BindingPolicy(require_nonce=False))
# The fingerprints Tinfoil's own verifier tests expect for these documents (PROVENANCE.md).
V1_FP = "d9381c169257c7558bc75d76a9e2fb90452071d7f756ef5122c88903bbb46062"
V2_FP = "a23b0e7747d73bba1c4a9dc4610584e37b6e9fba4d9133c2804d95572c13c0fa"


def _quote(name: str) -> bytes:
    body = base64.b64decode(json.loads((DATA / name).read_text())["body"])
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


def _report_data(name: str) -> bytes:
    td = parse_quote(_quote(name)).td_report
    assert td is not None
    return td.report_data


@pytest.mark.parametrize(("name", "fp", "layout"), [
    ("tdx-guest-v1.json", V1_FP, "tls_spki_hex"), ("tdx-guest-v2.json", V2_FP, "tls_spki")])
def test_tinfoil_evidence_binds_its_tls_key(name: str, fp: str, layout: str) -> None:
    rd = _report_data(name)
    checks = check_tls_binding(rd, spki_sha256=bytes.fromhex(fp), nonce=None, policy=OFFLINE)
    assert [c.ok for c in checks] == [True, True]
    assert layout in checks[0].detail
    other = hashlib.sha256(b"another key").digest()
    assert not check_tls_binding(rd, spki_sha256=other, nonce=None, policy=OFFLINE)[0].ok
    # The policy chooses the layouts: the other one alone does not bind it.
    rest = {"tls_spki", "tls_spki_hex"} - {layout}
    only = replace(OFFLINE, binding=BindingPolicy(require_nonce=False, layouts=frozenset(rest)))
    assert not check_tls_binding(rd, spki_sha256=bytes.fromhex(fp), nonce=None,
                                 policy=only)[0].ok


def test_tls_bound_evidence_has_no_nonce() -> None:
    rd = _report_data("tdx-guest-v2.json")
    fp = bytes.fromhex(V2_FP)
    key, fresh = check_tls_binding(rd, spki_sha256=fp, nonce=None, policy=POLICY)
    assert key.ok
    assert not fresh.ok
    assert "live TLS connection" in fresh.detail
    _, ours = check_tls_binding(rd, spki_sha256=fp, nonce=fresh_nonce(), policy=POLICY)
    assert not ours.ok
    # A raw layout has room for a nonce in report_data[32:64].
    nonce = fresh_nonce()
    assert [c.ok for c in check_tls_binding(fp + nonce, spki_sha256=fp, nonce=nonce,
                                            policy=POLICY)] == [True, True]


def _cert(tmp_path: Path) -> tuple[Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "enclave.example")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(_dt.datetime(2025, 1, 1))
            .not_valid_after(_dt.datetime(2035, 1, 1))
            .sign(key, hashes.SHA256()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    f = tmp_path / "tls.pem"
    f.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return f, hashlib.sha256(spki).digest()


def test_spki_fingerprint_of_a_certificate_a_key_and_hex(tmp_path: Path) -> None:
    f, want = _cert(tmp_path)
    cert = x509.load_pem_x509_certificate(f.read_bytes())
    assert spki_fingerprint(f.read_bytes()) == want
    assert spki_fingerprint(cert.public_bytes(serialization.Encoding.DER)) == want
    assert spki_fingerprint(cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)) == want
    assert spki_fingerprint(want.hex().encode() + b"\n") == want
    with pytest.raises(EvidenceError, match="TLS key"):
        spki_fingerprint(b"not a key")


def test_cli_tls_key_on_a_tinfoil_quote(tmp_path: Path) -> None:
    q = tmp_path / "quote.bin"
    q.write_bytes(_quote("tdx-guest-v2.json"))
    fp = tmp_path / "fp.txt"
    fp.write_text(V2_FP)
    audit = Path(__file__).resolve().parents[2] / "docs" / "policy.audit.toml"
    result = CliRunner().invoke(app, ["verify", "--json", "--policy", str(audit),
                                      "--tls-key", str(fp), str(q)])
    doc = json.loads(result.output)
    checks = {c["name"]: c["ok"] for c in doc["checks"]}
    assert checks["binding.key"] is True
    assert checks["binding.nonce"] is True
    assert doc["bound_key"] == V2_FP
    # Without collateral the quote itself is not verified: rejected on that alone.
    assert [n for n, ok in checks.items() if not ok] == ["tdx.collateral"]
