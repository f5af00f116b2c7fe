"""NVIDIA RIM service and OCSP clients against the local vendor server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from teegate.collateral import CollateralCache, RetryPolicy, fetch_ocsp_status, fetch_rim
from teegate.errors import CollateralError
from tests.collateral.vendor_server import DATA, Fault, VendorState, vendor_server

RIM_NOW = 1735689600  # 2025-01-01: inside the vector RIMs' signing certificates
DRIVER_RIM = "NV_GPU_DRIVER_GH100_545.00"
FAST = RetryPolicy(attempts=2, backoff=0.01, max_wait=5, timeout=2)
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NOW = int(START.timestamp()) + 3600


@pytest.fixture
def server() -> Iterator[tuple[str, VendorState]]:
    with vendor_server() as s:
        yield s


async def test_rim_fetch_and_cache(server: tuple[str, VendorState], tmp_path: Path) -> None:
    url, state = server
    cache = CollateralCache(tmp_path)
    xml = await fetch_rim(DRIVER_RIM, rim_url=url + "/v1/rim/", cache=cache, now=RIM_NOW)
    assert xml == (DATA / "collateral/nvidia/Driver_RIM_test_no_gpu.swidtag").read_bytes()
    again = await fetch_rim(DRIVER_RIM, rim_url=url + "/v1/rim", cache=cache, now=RIM_NOW + 60)
    assert again == xml
    assert state.count("/v1/rim/") == 1
    (entry,) = cache.entries()
    # Cached until the L4 signer certificate inside the RIM expires (2025-06-26).
    assert dt.datetime.fromtimestamp(entry.expires, dt.UTC).date() == dt.date(2025, 6, 26)


async def test_rim_errors(server: tuple[str, VendorState]) -> None:
    url, state = server
    base = url + "/v1/rim/"
    with pytest.raises(CollateralError, match="HTTP 404"):
        await fetch_rim("NV_GPU_DRIVER_GH100_999.99", rim_url=base, now=RIM_NOW, retry=FAST)
    with pytest.raises(CollateralError, match="never has"):
        await fetch_rim("../../etc/passwd", rim_url=base, now=RIM_NOW)
    with pytest.raises(CollateralError, match="expired"):
        await fetch_rim(DRIVER_RIM, rim_url=base, now=1767225600, retry=FAST)  # 2026
    state.faults["/v1/rim/"] = Fault("garbage")
    with pytest.raises(CollateralError, match=r"not .*JSON"):
        await fetch_rim(DRIVER_RIM, rim_url=base, now=RIM_NOW, retry=FAST)
    state.faults["/v1/rim/"] = Fault("body", body=b'{"rim": "PGZvbz4=", "sha256": "00"}')
    with pytest.raises(CollateralError, match="sha256 does not match"):
        await fetch_rim(DRIVER_RIM, rim_url=base, now=RIM_NOW, retry=FAST)


class _Pki:
    """A small CA, a device certificate under it, and an OCSP responder signing as the CA."""

    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test device CA")])
        self.ca = self._cert(name, name, self.ca_key.public_key(), self.ca_key, 1)
        leaf_key = ec.generate_private_key(ec.SECP384R1())
        leaf_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test GPU")])
        self.leaf = self._cert(leaf_name, name, leaf_key.public_key(), self.ca_key, 4242)
        self.status = ocsp.OCSPCertStatus.GOOD
        self.echo_nonce = True
        self.tamper = False
        self.rogue: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None

    @staticmethod
    def _cert(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey,
              signer: ec.EllipticCurvePrivateKey, serial: int) -> x509.Certificate:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key).serial_number(serial).not_valid_before(START)
                .not_valid_after(START + dt.timedelta(days=365)).sign(signer, hashes.SHA384()))

    def respond(self, der: bytes) -> bytes:
        req = ocsp.load_der_ocsp_request(der)
        revoked = self.status == ocsp.OCSPCertStatus.REVOKED
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=self.leaf, issuer=self.ca, algorithm=hashes.SHA384(), cert_status=self.status,
            this_update=START, next_update=START + dt.timedelta(days=1),
            revocation_time=START if revoked else None,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
        )
        signer_cert, signer_key = self.rogue or (self.ca, self.ca_key)
        b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, signer_cert)
        if self.rogue:
            b = b.certificates([signer_cert])
        nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        b = b.add_extension(x509.OCSPNonce(nonce if self.echo_nonce else b"\x00" * 32), False)
        der = b.sign(signer_key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)
        if self.tamper:  # the signature is the last field: change its last byte
            der = der[:-1] + bytes([der[-1] ^ 1])
        return der


async def test_ocsp_good_and_cached(server: tuple[str, VendorState], tmp_path: Path) -> None:
    url, state = server
    pki = _Pki()
    state.ocsp = pki.respond
    cache = CollateralCache(tmp_path)
    st = await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", cache=cache, now=NOW)
    assert st.good
    assert st.next_update == NOW - 3600 + 86400
    st2 = await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", cache=cache, now=NOW)
    assert st2 == st
    assert state.count("POST /ocsp") == 1


async def test_ocsp_revoked_is_reported_not_hidden(server: tuple[str, VendorState]) -> None:
    url, state = server
    pki = _Pki()
    pki.status = ocsp.OCSPCertStatus.REVOKED
    state.ocsp = pki.respond
    st = await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", now=NOW)
    assert st.status == "revoked"
    assert not st.good
    assert st.revocation_reason == "keyCompromise"


async def test_ocsp_forgeries_are_refused(server: tuple[str, VendorState]) -> None:
    url, state = server
    pki = _Pki()
    state.ocsp = pki.respond
    pki.echo_nonce = False
    with pytest.raises(CollateralError, match="nonce does not match"):
        await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", now=NOW)
    pki.echo_nonce = True
    pki.tamper = True
    with pytest.raises(CollateralError, match="signature does not verify"):
        await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", now=NOW)
    pki.tamper = False
    rogue_key = ec.generate_private_key(ec.SECP384R1())
    rogue_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "rogue responder")])
    pki.rogue = (pki._cert(rogue_name, rogue_name, rogue_key.public_key(), rogue_key, 7),
                 rogue_key)
    with pytest.raises(CollateralError, match="responder certificate is not issued"):
        await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", now=NOW)
    pki.rogue = None
    with pytest.raises(CollateralError, match="not at"):
        await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", now=NOW + 2 * 86400)
    state.faults["/ocsp"] = Fault("garbage")
    with pytest.raises(CollateralError, match="not a DER OCSP response"):
        await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", now=NOW)


def _delegate(pki: _Pki, *, ocsp_signing: bool) -> tuple[x509.Certificate,
                                                         ec.EllipticCurvePrivateKey]:
    """A certificate the CA issued: a proper OCSP responder, or just another device."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "another cert by the CA")])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(pki.ca.subject)
         .public_key(key.public_key()).serial_number(99).not_valid_before(START)
         .not_valid_after(START + dt.timedelta(days=365)))
    if ocsp_signing:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]),
                            critical=False)
    return b.sign(pki.ca_key, hashes.SHA384()), key


async def test_ocsp_delegate_needs_the_ocsp_signing_purpose(
    server: tuple[str, VendorState]
) -> None:
    """RFC 6960 4.2.2.2: a delegated responder must carry id-kp-OCSPSigning. Without that
    check any certificate the CA ever issued (another GPU's) could vouch for a revoked one."""
    url, state = server
    pki = _Pki()
    state.ocsp = pki.respond
    pki.rogue = _delegate(pki, ocsp_signing=False)
    with pytest.raises(CollateralError, match="not authorised for OCSP signing"):
        await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", now=NOW)
    pki.rogue = _delegate(pki, ocsp_signing=True)
    assert (await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", now=NOW)).good


async def test_planted_ocsp_cache_entry_is_not_trusted(server: tuple[str, VendorState],
                                                       tmp_path: Path) -> None:
    """The cache holds the signed answer and checks it again when it is read, so a file
    claiming "good" for a revoked certificate is never served."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    url, state = server
    pki = _Pki()
    pki.status = ocsp.OCSPCertStatus.REVOKED
    state.ocsp = pki.respond
    cache = CollateralCache(tmp_path)
    spki = pki.ca.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    import hashlib

    key = f"nvidia-ocsp/{hashlib.sha256(spki).hexdigest()[:32]}/{pki.leaf.serial_number:x}"
    planted = b'{"status": "good", "this_update": 0, "next_update": 9999999999, ' \
              b'"revocation_time": null, "revocation_reason": null}'
    cache.put(key, planted, expires=NOW + 10**6, now=NOW)
    st = await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", cache=cache, now=NOW)
    assert st.status == "revoked"
    assert state.count("POST /ocsp") == 1
    again = await fetch_ocsp_status(pki.leaf, pki.ca, ocsp_url=url + "/ocsp", cache=cache,
                                    now=NOW)
    assert again == st
    assert state.count("POST /ocsp") == 1


async def test_device_chains_are_asked_once_per_certificate_and_cached(
        server: tuple[str, VendorState], tmp_path: Path) -> None:
    """Two GPUs share their ICA and identity CA: four questions, not six; a second gateway
    sharing the cache asks none; a revoked certificate is reported, not hidden."""
    import time

    from teegate.attest.gpu import device_chains
    from teegate.attest.gpu_ocsp import certificate_key
    from teegate.collateral import fetch_chain_ocsp
    from teegate.sim.gpu import DevGpu
    from teegate.sim.gpu_ocsp import DevGpuOcsp

    url, state = server
    responder = DevGpuOcsp(tmp_path / "pki")
    state.ocsp = responder.respond
    gpu = DevGpu.load_or_create(tmp_path / "pki")
    chains = device_chains(gpu.nvidia_payload(bytes(32), 2))
    cache = CollateralCache(tmp_path / "cache")
    now = int(time.time())
    answers = await fetch_chain_ocsp(chains, ocsp_url=url + "/ocsp", cache=cache, now=now,
                                     retry=FAST)
    assert responder.requests == 4
    assert len(answers) == 4
    assert all(a.good for a in answers.values())
    again = await fetch_chain_ocsp(chains, ocsp_url=url + "/ocsp", cache=cache, now=now,
                                   retry=FAST)
    assert again == answers
    assert responder.requests == 4
    ica = chains[0][2]
    responder.revoked.add(ica.serial_number)
    fresh = await fetch_chain_ocsp(chains, ocsp_url=url + "/ocsp", now=now, retry=FAST)
    assert fresh[certificate_key(ica)].status == "revoked"
    state.ocsp = None  # the responder is gone: an error, never a silent "good"
    with pytest.raises(CollateralError):
        await fetch_chain_ocsp(chains, ocsp_url=url + "/ocsp", now=now, retry=FAST)
