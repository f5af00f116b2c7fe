from __future__ import annotations

import base64
import itertools
import json
import struct

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from teegate.errors import ConfigError
from teegate.sim import DevGpu
from teegate.sim.gpu import DEFAULT_MEASUREMENTS, TCB_INFO_OID
from tests.sim.conftest import DATA

NONCE = bytes.fromhex("5a" * 32)


def parse(evidence: bytes) -> dict[str, object]:
    """Walk request || response by its length fields (REFERENCE.md §4.1)."""
    request, resp = evidence[:37], evidence[37:]
    n_blocks = resp[4]
    rec_len = int.from_bytes(resp[5:8], "little")
    blocks, off = [], 8
    while off < 8 + rec_len:
        index, spec, size = struct.unpack_from("<BBH", resp, off)
        vtype, vsize = struct.unpack_from("<BH", resp, off + 4)
        blocks.append((index, spec, vtype, resp[off + 7 : off + 7 + vsize]))
        off += 4 + size
    off += 32  # responder nonce
    (olen,) = struct.unpack_from("<H", resp, off)
    opaque_bytes = resp[off + 2 : off + 2 + olen]
    off += 2 + olen
    opaque, i = {}, 0
    while i < len(opaque_bytes):
        t, n = struct.unpack_from("<HH", opaque_bytes, i)
        opaque[t] = opaque_bytes[i + 4 : i + 4 + n]
        i += 4 + n
    return {
        "request": request, "n_blocks": n_blocks, "blocks": blocks, "opaque": opaque,
        "signed": evidence[: 37 + off], "signature": resp[off:],
    }


def verify_sig(evidence: bytes, leaf: x509.Certificate) -> None:
    p = parse(evidence)
    sig = p["signature"]
    assert isinstance(sig, bytes)
    assert len(sig) == 96
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big"))
    key.verify(der, p["signed"], ec.ECDSA(hashes.SHA384()))  # type: ignore[arg-type]


def test_evidence_signature_and_chain_verify(dev_gpu: DevGpu) -> None:
    evidence = dev_gpu.evidence(NONCE)
    certs = x509.load_pem_x509_certificates(dev_gpu.cert_chain_pem())
    assert len(certs) == 5
    verify_sig(evidence, certs[0])
    for child, parent in itertools.pairwise(certs):
        child.verify_directly_issued_by(parent)
    root = x509.load_pem_x509_certificate(dev_gpu.root_pem.encode())
    assert certs[-1] == root
    root.verify_directly_issued_by(root)
    cns = [c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in certs]
    assert cns == ["GH100 A01 GSP FMC LF", "GH100 A01 GSP BROM",
                   "NVIDIA GH100 Provisioner ICA 1", "NVIDIA GH100 Identity",
                   "NVIDIA Device Identity CA"]


def test_tampered_evidence_fails(dev_gpu: DevGpu) -> None:
    evidence = bytearray(dev_gpu.evidence(NONCE))
    evidence[60] ^= 1  # inside measurement block 1
    leaf = x509.load_pem_x509_certificates(dev_gpu.cert_chain_pem())[0]
    with pytest.raises(InvalidSignature):
        verify_sig(bytes(evidence), leaf)


def test_layout_matches_the_real_hopper_sample(dev_gpu: DevGpu) -> None:
    real = parse(bytes.fromhex((DATA / "hopperAttestationReport.txt").read_text().strip()))
    mine = parse(dev_gpu.evidence(NONCE))
    assert len(dev_gpu.evidence(NONCE)) == 4117 == len(real["signed"]) + 96  # type: ignore[arg-type]
    assert mine["request"][:4] == real["request"][:4] == b"\x11\xe0\x01\xff"  # type: ignore[index]
    assert mine["request"][4:36] == NONCE  # type: ignore[index]
    assert mine["n_blocks"] == real["n_blocks"] == 64
    assert [b[:3] for b in mine["blocks"]] == [b[:3] for b in real["blocks"]]  # type: ignore[attr-defined]
    assert list(mine["opaque"]) == list(real["opaque"])  # type: ignore[call-overload]
    # The default versions are the sample's, so their encodings must be byte-identical.
    for t in (3, 6):
        assert mine["opaque"][t] == real["opaque"][t]  # type: ignore[index]


def test_parameters_land_in_blocks_and_opaque_data(dev_gpu: DevGpu) -> None:
    values = [bytes([i]) * 48 for i in range(64)]
    p = parse(dev_gpu.evidence(NONCE, measurements=values, driver_version="570.1",
                               vbios_version="96.00.A5.00.01"))
    assert [b[3] for b in p["blocks"]] == values  # type: ignore[attr-defined]
    assert p["opaque"][3] == b"570.1\x00"  # type: ignore[index]
    assert p["opaque"][6] == bytes.fromhex("00a5009601000000")  # type: ignore[index]
    default = parse(dev_gpu.evidence(NONCE))
    assert [b[3] for b in default["blocks"]] == list(DEFAULT_MEASUREMENTS)  # type: ignore[attr-defined]


def test_fwid_in_leaf_certificate_equals_opaque_fwid(dev_gpu: DevGpu) -> None:
    for index in (0, 3):
        leaf = x509.load_pem_x509_certificates(dev_gpu.cert_chain_pem(index))[0]
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(TCB_INFO_OID)).value
        assert isinstance(ext, x509.UnrecognizedExtension)
        fwid = parse(dev_gpu.evidence(NONCE, index=index))["opaque"][20]  # type: ignore[index]
        assert ext.value[-48:] == fwid == dev_gpu.fwid(index)


def test_each_gpu_has_its_own_device_key(dev_gpu: DevGpu) -> None:
    leaf0 = x509.load_pem_x509_certificates(dev_gpu.cert_chain_pem(0))[0]
    leaf1 = x509.load_pem_x509_certificates(dev_gpu.cert_chain_pem(1))[0]
    assert leaf0.public_key() != leaf1.public_key()
    with pytest.raises(InvalidSignature):
        verify_sig(dev_gpu.evidence(NONCE, index=1), leaf0)


def test_nvidia_payload_is_the_provider_format(dev_gpu: DevGpu) -> None:
    payload = json.loads(dev_gpu.nvidia_payload(NONCE, n_gpus=2))
    assert list(payload) == ["nonce", "arch", "evidence_list"]
    assert payload["nonce"] == NONCE.hex()
    assert payload["arch"] == "HOPPER"
    assert len(payload["evidence_list"]) == 2
    for i, item in enumerate(payload["evidence_list"]):
        assert set(item) == {"evidence", "certificate"}
        chain_pem = base64.b64decode(item["certificate"])
        assert chain_pem == dev_gpu.cert_chain_pem(i)
        evidence = base64.b64decode(item["evidence"])
        assert evidence[4:36] == NONCE
        verify_sig(evidence, x509.load_pem_x509_certificates(chain_pem)[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nonce": bytes(31)}, "32 bytes"),
        ({"nonce": NONCE, "index": 8}, "index"),
        ({"nonce": NONCE, "measurements": [bytes(48)] * 63}, "measurements"),
        ({"nonce": NONCE, "vbios_version": "96.00"}, "VBIOS"),
    ],
)
def test_bad_parameters_raise_config_error(dev_gpu: DevGpu, kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=match):
        dev_gpu.evidence(**kwargs)


def test_payload_gpu_count_is_bounded(dev_gpu: DevGpu) -> None:
    with pytest.raises(ConfigError, match="n_gpus"):
        dev_gpu.nvidia_payload(NONCE, n_gpus=0)
