"""RIMs: NVIDIA's real signed SWID tags (XML-DSig to the pinned CoRIM root) and end-to-end
measurement comparison with development GPUs and development RIMs.

No public sample ships GPU evidence with its matching RIMs, so comparison that passes is shown
on development evidence with RIMs signed here, through the same canonicaliser that verifies
NVIDIA's own signatures in the first tests.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from teegate.attest.gpu import appraise_gpus, parse_rim, parse_spdm_evidence, verify_gpu_evidence
from teegate.attest.gpu_c14n import canonicalize, parse
from teegate.attest.gpu_rim import DS, compare, verify_rim
from teegate.attest.policy import Policy
from teegate.errors import EvidenceError
from teegate.sim.gpu import (
    DEFAULT_DRIVER_VERSION,
    DEFAULT_MEASUREMENTS,
    DEFAULT_VBIOS_VERSION,
    DevGpu,
)
from tests.attest.gpu_helpers import (
    AUDIT,
    DRIVER_RIM,
    NOW,
    SAMPLE_NONCE,
    VBIOS_PROD_RIM,
    VBIOS_RIM,
    hopper,
    hopper_raw,
    rim,
    with_gpu,
)

LATER = 1767225600  # 2026-01-01: the sample RIMs' signing certificates have expired


# --- NVIDIA's real RIMs ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind", "version"), [
    (DRIVER_RIM, "driver", "545.00"),
    (VBIOS_RIM, "vbios", "96.00.5E.00.01"),
    (VBIOS_PROD_RIM, "vbios", "96.00.5E.00.01"),
])
def test_real_rims_verify_to_the_pinned_root(name: str, kind: str, version: str) -> None:
    r = parse_rim(rim(name))
    assert (r.kind, r.version, r.product) == (kind, version, "GH100")
    assert sorted(r.measurements) == list(range(64))
    result = verify_rim(r, policy=AUDIT, now=NOW)
    assert result.ok, result.detail
    assert result.chain is not None
    assert not result.chain.development
    assert "CoRIM signing Root CA" in result.detail
    expired = verify_rim(r, policy=AUDIT, now=LATER)
    assert not expired.ok
    assert "HCC RIM L4 Signer" in expired.detail


def test_real_rim_with_a_changed_golden_value_fails_its_digest() -> None:
    xml = rim(DRIVER_RIM)
    golden = b"0e0ee161b59bf124ce6b6dca6efa7616d28077862c0e57dca7d5efd63d00eeed"
    assert golden in xml
    r = parse_rim(xml.replace(golden, golden.replace(b"0e0e", b"0e0f", 1)))
    result = verify_rim(r, policy=AUDIT, now=NOW)
    assert not result.ok
    assert "signed digest" in result.detail


def test_real_rim_with_a_changed_attribute_order_still_verifies() -> None:
    """Canonicalisation, not bytes: attribute order and empty-element form do not matter."""
    xml = rim(DRIVER_RIM)
    before = b'<ns0:Entity name="NVIDIA Corporation" role="softwareCreator tagCreator"/>'
    after = b'<ns0:Entity role="softwareCreator tagCreator" name="NVIDIA Corporation"></ns0:Entity>'
    assert before in xml
    assert verify_rim(parse_rim(xml.replace(before, after)), policy=AUDIT, now=NOW).ok


def test_real_rim_with_a_changed_signed_info_or_signature_fails() -> None:
    xml = rim(VBIOS_RIM)
    tampered = xml.replace(b'<ds:Reference URI="">', b'<ds:Reference URI="" Id="x">')
    assert not verify_rim(parse_rim(tampered), policy=AUDIT, now=NOW).ok
    start = xml.index(b"<ds:SignatureValue>") + len(b"<ds:SignatureValue>")
    sig = bytearray(base64.b64decode(xml[start:xml.index(b"</ds:SignatureValue>")]))
    sig[10] ^= 1
    bad = xml[:start] + base64.b64encode(bytes(sig)) + xml[xml.index(b"</ds:SignatureValue>"):]
    result = verify_rim(parse_rim(bad), policy=AUDIT, now=NOW)
    assert not result.ok
    assert "does not verify" in result.detail


def test_rim_chain_missing_an_intermediate_fails() -> None:
    xml = rim(DRIVER_RIM)
    certs = xml.split(b"<ds:X509Certificate>")
    dropped = b"<ds:X509Certificate>".join([certs[0], certs[1], *certs[3:]])
    result = verify_rim(parse_rim(dropped), policy=AUDIT, now=NOW)
    assert not result.ok
    assert "intermediate" in result.detail


def test_sample_rims_do_not_match_the_sample_report() -> None:
    """SOURCES.md: the sample RIMs are for driver 545.00 / VBIOS 96.00.5E.00.01, the report
    is 550.90.07 / 96.00.9F.00.01: they are not used, and the verdict says so."""
    evidence, chain = hopper()
    rims = [rim(DRIVER_RIM), rim(VBIOS_RIM)]
    v = verify_gpu_evidence(evidence, chain, nonce=SAMPLE_NONCE, policy=AUDIT, now=NOW, rims=rims)
    assert v.accepted
    assert "NOT compared" in v.check("gpu.0.measurements").detail  # type: ignore[union-attr]
    assert v.check("gpu.0.driver_rim") is None
    strict = with_gpu(AUDIT, require_rim=True)
    v = verify_gpu_evidence(evidence, chain, nonce=SAMPLE_NONCE, policy=strict, now=NOW,
                            rims=rims)
    assert [c.name for c in v.failures] == ["gpu.0.measurements"]
    # Compared anyway, the values differ, as documented.
    runtime = {b.index: b.value for b in parse_spdm_evidence(hopper_raw()).blocks}
    ok, detail = compare(runtime, {"driver": parse_rim(rim(DRIVER_RIM))})
    assert not ok
    assert "differ" in detail


@pytest.mark.parametrize("bad", [
    b"", b"<a/>", b"<?xml version='1.0'?><!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>",
    b"<SoftwareIdentity xmlns='http://standards.iso.org/iso/19770/-2/2015/schema.xsd'/>",
    b"<a><?pi x?></a>", b"<a xml:base='x'/>", b"<p:a/>", b"<a>" * 5000,
])
def test_malformed_rims_raise_evidence_error(bad: bytes) -> None:
    with pytest.raises(EvidenceError):
        parse_rim(bad)


def test_canonicaliser_matches_the_c14n_rules_it_claims() -> None:
    doc = parse(b'<r xmlns="u" xmlns:b="v" z="1" b:a="2" a="&quot;&#9;"><b:e/>t&amp;&gt;\r\n'
                b'<e xmlns:b="v" xmlns:c="w"/></r>')
    assert canonicalize(doc) == (
        b'<r xmlns="u" xmlns:b="v" a="&quot;&#x9;" z="1" b:a="2"><b:e></b:e>t&amp;&gt;\n'
        b'<e xmlns:c="w"></e></r>')
    # A subset (like SignedInfo) renders every namespace in scope at its apex.
    assert canonicalize(doc.elements()[1]) == b'<e xmlns="u" xmlns:b="v" xmlns:c="w"></e>'


# --- development GPUs with development RIMs ---------------------------------------------------


@dataclasses.dataclass
class RimSigner:
    key: ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate]  # signer first, then root

    @property
    def root_pem(self) -> str:
        return self.chain[-1].public_bytes(serialization.Encoding.PEM).decode()


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          signing_key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(signing_key, hashes.SHA384())
    )


def new_signer() -> RimSigner:
    """A RIM signer under a fresh development CoRIM root."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    key = ec.generate_private_key(ec.SECP384R1())
    root = _cert("Dev CoRIM Root", root_key, "Dev CoRIM Root", root_key, ca=True)
    leaf = _cert("Dev RIM Signer", key, "Dev CoRIM Root", root_key, ca=False)
    return RimSigner(key, [leaf, root])


@pytest.fixture(scope="module")
def signer() -> RimSigner:
    return new_signer()


@pytest.fixture(scope="module")
def dev_gpu(tmp_path_factory: pytest.TempPathFactory) -> DevGpu:
    return DevGpu.load_or_create(Path(tmp_path_factory.mktemp("gpu-pki")))


SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"


def make_rim(signer: RimSigner, version: str, golden: Mapping[int, Sequence[bytes]],
             n: int = 64) -> bytes:
    """A RIM shaped like NVIDIA's, signed (enveloped XML-DSig, C14N 1.1, ECDSA-SHA384)."""
    resources = []
    for i in range(n):
        values = golden.get(i, [bytes(48)])
        hashes_attr = " ".join(f'ns2:Hash{k}="{v.hex()}"' for k, v in enumerate(values))
        resources.append(
            f'        <ns0:Resource type="Measurement" index="{i}" active="{i in golden}" '
            f'alternatives="{len(values)}" {hashes_attr} name="Measurement_{i}" size="48"/>\n')
    certs = "".join(
        "<ds:X509Certificate>"
        + base64.encodebytes(c.public_bytes(serialization.Encoding.DER)).decode()
        + "</ds:X509Certificate>" for c in signer.chain)
    xml = (
        f'<SoftwareIdentity xmlns="{SWID}" xmlns:ns0="{SWID}" '
        'xmlns:ns2="http://www.w3.org/2001/04/xmlenc#sha384" name="GH100" tagId="dev" '
        'version="1.0">\n'
        f'    <ns0:Meta colloquialVersion="{version}" edition="GPU" product="GH100"/>\n'
        f'    <ns0:Payload>\n{"".join(resources)}    </ns0:Payload>\n'
        f'<ds:Signature xmlns:ds="{DS}"><ds:SignedInfo>'
        '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2006/12/xml-c14n11"/>'
        '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"/>'
        '<ds:Reference URI=""><ds:Transforms>'
        '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
        '<ds:Transform Algorithm="http://www.w3.org/2006/12/xml-c14n11"/></ds:Transforms>'
        '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#sha384"/>'
        '<ds:DigestValue>DIGEST</ds:DigestValue></ds:Reference></ds:SignedInfo>'
        '<ds:SignatureValue>SIGNATURE</ds:SignatureValue><ds:KeyInfo><ds:X509Data>'
        f'{certs}</ds:X509Data></ds:KeyInfo></ds:Signature></SoftwareIdentity>'
    )
    root = parse(xml.encode())
    sig = root.elements()[-1]
    digest = hashlib.sha384(canonicalize(root, exclude=sig)).digest()
    xml = xml.replace("DIGEST", base64.b64encode(digest).decode())
    root = parse(xml.encode())
    signed_info = root.elements()[-1].elements()[0]
    r, s = decode_dss_signature(signer.key.sign(canonicalize(signed_info),
                                                ec.ECDSA(hashes.SHA384())))
    value = base64.b64encode(r.to_bytes(48, "big") + s.to_bytes(48, "big")).decode()
    return xml.replace("SIGNATURE", value).encode()


DRIVER_INDICES = range(0, 40)
VBIOS_INDICES = range(40, 64)
NONCE = bytes(range(1, 33))
# The development GPU PKI is generated with the wall clock (valid from a year ago).
DEV_NOW = int(time.time())


def golden(
    indices: range, values: Sequence[bytes] = DEFAULT_MEASUREMENTS
) -> dict[int, list[bytes]]:
    return {i: [values[i]] for i in indices}


def dev_policy(gpu: DevGpu, signer: RimSigner) -> Policy:
    return Policy.default().with_roots(nvidia=(gpu.root_pem,), nvidia_rim=(signer.root_pem,))


def dev_rims(signer: RimSigner) -> list[bytes]:
    return [make_rim(signer, DEFAULT_DRIVER_VERSION, golden(DRIVER_INDICES)),
            make_rim(signer, DEFAULT_VBIOS_VERSION, golden(VBIOS_INDICES))]


def test_dev_gpu_with_matching_rims_is_accepted(dev_gpu: DevGpu, signer: RimSigner) -> None:
    policy = with_gpu(dev_policy(dev_gpu, signer), require_rim=True)
    v = verify_gpu_evidence(dev_gpu.evidence(NONCE), dev_gpu.cert_chain_pem(), nonce=NONCE,
                            policy=policy, now=DEV_NOW, rims=dev_rims(signer))
    assert v.accepted, v.failures
    assert v.development
    names = [c.name for c in v.checks]
    for name in ("gpu.0.development_root", "gpu.0.driver_rim", "gpu.0.vbios_rim",
                 "gpu.0.driver_rim.development_root", "gpu.0.vbios_rim.development_root"):
        assert name in names
    assert "64 active measurements match" in v.check("gpu.0.measurements").detail  # type: ignore[union-attr]
    # The verdict's window ends with the RIM signer's certificate.
    assert v.not_after == int(signer.chain[0].not_valid_after_utc.timestamp())


def test_dev_gpu_without_development_roots_is_rejected(dev_gpu: DevGpu, signer: RimSigner) -> None:
    v = verify_gpu_evidence(dev_gpu.evidence(NONCE), dev_gpu.cert_chain_pem(), nonce=NONCE,
                            policy=Policy.default(), now=DEV_NOW, rims=dev_rims(signer))
    assert [c.name for c in v.failures] == ["gpu.0.chain", "gpu.0.driver_rim",
                                            "gpu.0.vbios_rim", "gpu.0.measurements"]
    assert "do not verify" in v.check("gpu.0.measurements").detail  # type: ignore[union-attr]


def test_a_changed_measurement_fails_the_rim_comparison(dev_gpu: DevGpu,
                                                       signer: RimSigner) -> None:
    values = list(DEFAULT_MEASUREMENTS)
    values[44] = hashlib.sha384(b"patched VBIOS").digest()  # SPDM block 45 = VBIOS index 44
    evidence = dev_gpu.evidence(NONCE, measurements=values)
    v = verify_gpu_evidence(evidence, dev_gpu.cert_chain_pem(), nonce=NONCE,
                            policy=dev_policy(dev_gpu, signer), now=DEV_NOW, rims=dev_rims(signer))
    assert [c.name for c in v.failures] == ["gpu.0.measurements"]
    assert "vbios index 44" in v.check("gpu.0.measurements").detail  # type: ignore[union-attr]
    assert v.check("gpu.0.signature").ok  # type: ignore[union-attr]


def test_alternatives_and_inactive_indices(dev_gpu: DevGpu, signer: RimSigner) -> None:
    values = list(DEFAULT_MEASUREMENTS)
    values[63] = hashlib.sha384(b"second allowed value").digest()
    driver = golden(DRIVER_INDICES)
    vbios = golden(range(40, 63))  # index 63 inactive: not compared
    vbios[62] = [bytes(48), DEFAULT_MEASUREMENTS[62]]  # matches its second alternative
    rims = [make_rim(signer, DEFAULT_DRIVER_VERSION, driver),
            make_rim(signer, DEFAULT_VBIOS_VERSION, vbios)]
    v = verify_gpu_evidence(dev_gpu.evidence(NONCE, measurements=values),
                            dev_gpu.cert_chain_pem(), nonce=NONCE,
                            policy=dev_policy(dev_gpu, signer), now=DEV_NOW, rims=rims)
    assert v.accepted, v.failures
    assert "63 active measurements match" in v.check("gpu.0.measurements").detail  # type: ignore[union-attr]


def test_an_index_claimed_by_both_rims_fails(dev_gpu: DevGpu, signer: RimSigner) -> None:
    rims = [make_rim(signer, DEFAULT_DRIVER_VERSION, golden(range(0, 41))),
            make_rim(signer, DEFAULT_VBIOS_VERSION, golden(VBIOS_INDICES))]
    v = verify_gpu_evidence(dev_gpu.evidence(NONCE), dev_gpu.cert_chain_pem(), nonce=NONCE,
                            policy=dev_policy(dev_gpu, signer), now=DEV_NOW, rims=rims)
    assert [c.name for c in v.failures] == ["gpu.0.measurements"]
    assert v.measurements["rim_comparison"] == "failed"
    assert "claimed by both" in v.check("gpu.0.measurements").detail  # type: ignore[union-attr]


def test_only_one_rim_supplied(dev_gpu: DevGpu, signer: RimSigner) -> None:
    rims = dev_rims(signer)[:1]
    policy = dev_policy(dev_gpu, signer)
    v = verify_gpu_evidence(dev_gpu.evidence(NONCE), dev_gpu.cert_chain_pem(), nonce=NONCE,
                            policy=policy, now=DEV_NOW, rims=rims)
    assert v.accepted
    assert "no verified vbios RIM" in v.check("gpu.0.measurements").detail  # type: ignore[union-attr]
    assert v.measurements["rim_comparison"] == "partly compared"
    full = verify_gpu_evidence(dev_gpu.evidence(NONCE), dev_gpu.cert_chain_pem(), nonce=NONCE,
                               policy=policy, now=DEV_NOW, rims=dev_rims(signer))
    assert full.measurements["rim_comparison"] == "compared"
    v = verify_gpu_evidence(dev_gpu.evidence(NONCE), dev_gpu.cert_chain_pem(), nonce=NONCE,
                            policy=with_gpu(policy, require_rim=True), now=DEV_NOW, rims=rims)
    assert [c.name for c in v.failures] == ["gpu.0.measurements"]


def test_a_rim_signed_by_a_foreign_key_is_rejected(dev_gpu: DevGpu, signer: RimSigner) -> None:
    other = RimSigner(ec.generate_private_key(ec.SECP384R1()), signer.chain)
    rims = [make_rim(other, DEFAULT_DRIVER_VERSION, golden(DRIVER_INDICES)),
            dev_rims(signer)[1]]
    v = verify_gpu_evidence(dev_gpu.evidence(NONCE), dev_gpu.cert_chain_pem(), nonce=NONCE,
                            policy=dev_policy(dev_gpu, signer), now=DEV_NOW, rims=rims)
    assert [c.name for c in v.failures] == ["gpu.0.driver_rim"]
    # Only the verified VBIOS RIM's golden values were used.
    assert "no verified driver RIM" in v.check("gpu.0.measurements").detail  # type: ignore[union-attr]


def test_dev_payload_with_rims_through_appraise(dev_gpu: DevGpu, signer: RimSigner) -> None:
    policy = with_gpu(dev_policy(dev_gpu, signer), require_rim=True, mode="required")
    payload = dev_gpu.nvidia_payload(NONCE, n_gpus=8)
    checks, gpus = appraise_gpus(payload, nonce=NONCE, policy=policy, now=DEV_NOW,
                                 rims=dev_rims(signer))
    assert all(c.ok for c in checks)
    assert len(gpus) == 8
    assert all(g.accepted and g.development for g in gpus)
    checks, gpus = appraise_gpus(payload, nonce=NONCE, policy=policy, now=DEV_NOW)
    assert [c.name for g in gpus for c in g.failures] == [
        f"gpu.{i}.measurements" for i in range(8)]


def test_rim_ids_are_the_ones_nvidia_publishes_under() -> None:
    """The RIM service's ids, from the evidence: nvtrust's sample H100 and the PPCIe H100s
    (whose VBIOS RIM file names, e.g. ``1010_0200_882_96005E0001``, follow the same scheme)."""
    from teegate.attest.gpu import decode_evidence, payload_rim_ids, rim_ids

    data = Path(__file__).parent.parent / "data" / "nvidia"
    ev = parse_spdm_evidence(decode_evidence((data / "hopperAttestationReport.txt").read_text()))
    assert rim_ids(ev) == ["NV_GPU_DRIVER_GH100_550.90.07",
                           "NV_GPU_VBIOS_1010_0200_882_96009F0001"]
    assert rim_ids(ev, "BLACKWELL") == ["NV_GPU_VBIOS_1010_0200_882_96009F0001"]
    assert payload_rim_ids((data / "ppcie_gpu_evidence.json").read_text()) == [
        "NV_GPU_DRIVER_GH100_590.12", "NV_GPU_VBIOS_G520_0200_885_9600A50001"]  # 8 GPUs, 2 ids
