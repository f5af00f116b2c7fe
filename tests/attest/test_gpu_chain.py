"""Device/RIM chain rules beyond link signatures: CA key usage, path length, leaf key usage,
and the development root itself (RFC 5280 §4.2.1.3, §4.2.1.9)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from teegate.attest.gpu_chain import DEVICE_ROOT_FILE, pinned_root, verify_chain

NOW = int(dt.datetime(2025, 6, 1, tzinfo=dt.UTC).timestamp())
Usage = tuple[bool, bool]  # (digital_signature, key_cert_sign); None: no extension


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer_cn: str,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool | None,
          path_length: int | None = None, usage: Usage | None = None) -> x509.Certificate:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(start + dt.timedelta(days=3650)))
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), True)
    if usage is not None:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=usage[0], content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=usage[1],
            crl_sign=usage[1], encipher_only=False, decipher_only=False), True)
    return b.sign(issuer_key, hashes.SHA384())


CA: Usage = (False, True)
LEAF: Usage = (True, False)


def _chain(*, root_usage: Usage | None = CA, root_path_len: int | None = None,
           mid_usage: Usage | None = CA, mid_path_len: int | None = None,
           leaf_usage: Usage | None = LEAF) -> tuple[x509.Certificate, ...]:
    """leaf <- mid2 <- mid1 <- root (root passed as a development root, not in the chain)."""
    keys = [ec.generate_private_key(ec.SECP384R1()) for _ in range(4)]
    root = _cert("Dev Root", keys[0], "Dev Root", keys[0], ca=True,
                 path_length=root_path_len, usage=root_usage)
    mid1 = _cert("Mid 1", keys[1], "Dev Root", keys[0], ca=True, path_length=mid_path_len,
                 usage=mid_usage)
    mid2 = _cert("Mid 2", keys[2], "Mid 1", keys[1], ca=True, usage=CA)
    leaf = _cert("Leaf", keys[3], "Mid 2", keys[2], ca=None, usage=leaf_usage)
    return leaf, mid2, mid1, root


def _verify(chain: tuple[x509.Certificate, ...]) -> tuple[bool, str]:
    r = verify_chain(chain[:-1], pinned=pinned_root(DEVICE_ROOT_FILE),
                     development=(chain[-1],), now=NOW, what="device chain")
    return r.ok, r.detail


def test_well_formed_chain_is_accepted() -> None:
    ok, detail = _verify(_chain())
    assert ok, detail
    assert "development root 'Dev Root'" in detail


def test_intermediate_without_certificate_signing_usage_is_rejected() -> None:
    ok, detail = _verify(_chain(mid_usage=(True, False)))
    assert not ok
    assert "'Mid 1'" in detail
    assert "certificate signing" in detail


def test_intermediate_without_key_usage_is_rejected() -> None:
    ok, detail = _verify(_chain(mid_usage=None))
    assert not ok
    assert "'Mid 1'" in detail


def test_path_length_is_enforced() -> None:
    # Mid 1 has one CA (Mid 2) below it: path length 0 forbids that, 1 allows it.
    ok, detail = _verify(_chain(mid_path_len=0))
    assert not ok
    assert "'Mid 1' allows at most 0" in detail
    assert _verify(_chain(mid_path_len=1))[0]
    # The development root has two CAs below it.
    ok, detail = _verify(_chain(root_path_len=1))
    assert not ok
    assert "root 'Dev Root' allows at most 1" in detail
    assert _verify(_chain(root_path_len=2))[0]


def test_development_root_must_be_allowed_to_sign_certificates() -> None:
    ok, detail = _verify(_chain(root_usage=(True, False)))
    assert not ok
    assert "root 'Dev Root'" in detail


def test_leaf_must_be_allowed_to_sign() -> None:
    ok, detail = _verify(_chain(leaf_usage=(False, True)))
    assert not ok
    assert "leaf 'Leaf'" in detail
    assert "digital signatures" in detail
    assert _verify(_chain(leaf_usage=None))[0]  # unstated usage: not restricted
