"""AMD KDS client against a real local HTTP server serving the vector VCEKs and chains."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from teegate.attest.policy import Policy
from teegate.attest.snp import verify_report
from teegate.attest.snp_certs import AmdCert, load_der
from teegate.collateral import (
    CollateralCache,
    RetryPolicy,
    fetch_cert_chain,
    fetch_snp_certificates,
    fetch_vcek,
    fetch_vcek_sync,
    vcek_path,
)
from teegate.errors import CollateralError, EvidenceError
from tests.collateral.vendor_server import DATA, Fault, VendorState, vendor_server

NOW = 1756684800  # inside every vector certificate's validity (tests/data/sev-snp)
MILAN = (DATA / "sev-snp/trustee/test-report.bin").read_bytes()
TURIN = (DATA / "sev-snp/project-oak/derived-turin-report.bin").read_bytes()
GENOA = (DATA / "sev-snp/project-oak/derived-genoa-report.bin").read_bytes()
FAST = RetryPolicy(attempts=2, backoff=0.01, max_wait=5, timeout=2)


@pytest.fixture
def kds() -> Iterator[tuple[str, VendorState]]:
    with vendor_server() as s:
        yield s


def test_vcek_paths_per_product() -> None:
    path, key = vcek_path(TURIN)
    assert path == ("/vcek/v1/Turin/3b42092f69c656d3?blSPL=1&teeSPL=0&snpSPL=2&ucodeSPL=71"
                    "&fmcSPL=0")
    assert key == "amd-vcek/Turin/3b42092f69c656d3/0001000200000047"
    milan_path, _ = vcek_path(MILAN, product="Milan")
    assert milan_path.startswith("/vcek/v1/Milan/c38427a30d4c7af9")
    assert milan_path.endswith("?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115")
    with pytest.raises(EvidenceError, match="say which product"):
        vcek_path(MILAN)
    with pytest.raises(EvidenceError, match="VLEK"):
        vcek_path((DATA / "sev-snp/trustee/test-vlek-report.bin").read_bytes())


@pytest.mark.parametrize(("report", "product"), [(MILAN, "Milan"), (TURIN, None), (GENOA, None)])
async def test_fetched_vcek_verifies_the_report(
    kds: tuple[str, VendorState], report: bytes, product: str | None
) -> None:
    url, state = kds
    der = await fetch_vcek(report, kds_url=url, cache=None, now=NOW, product=product)
    v = verify_report(report, der, policy=Policy.default(), now=NOW, product=product)
    assert v.accepted, v.failures
    assert state.count("/vcek/v1/") == 1


async def test_vcek_plus_chain_bundle_verifies(kds: tuple[str, VendorState]) -> None:
    url, state = kds
    bundle = await fetch_snp_certificates(MILAN, kds_url=url, now=NOW, product="Milan")
    assert bundle.count(b"BEGIN CERTIFICATE") == 3
    assert verify_report(MILAN, bundle, policy=Policy.default(), now=NOW,
                         product="Milan").accepted
    assert state.count("/vcek/v1/Milan/cert_chain") == 0  # ASK/ARK are the pinned copies


async def test_vcek_cache_hit_makes_no_request(
    kds: tuple[str, VendorState], tmp_path: Path
) -> None:
    url, state = kds
    cache = CollateralCache(tmp_path)
    first = await fetch_vcek(TURIN, kds_url=url, cache=cache, now=NOW)
    second = await fetch_vcek(TURIN, kds_url=url, cache=cache, now=NOW + 86400)
    assert first == second
    assert state.count("/vcek/") == 1
    (entry,) = cache.entries()
    assert entry.expires == 1973696686  # the VCEK's notAfter
    assert entry.key == "amd-vcek/Turin/3b42092f69c656d3/0001000200000047"


async def test_expired_vcek_entry_is_refetched(
    kds: tuple[str, VendorState], tmp_path: Path
) -> None:
    url, state = kds
    cache = CollateralCache(tmp_path)
    _, key = vcek_path(TURIN)
    cache.put(key, b"stale", expires=NOW - 1, now=NOW - 100)
    der = await fetch_vcek(TURIN, kds_url=url, cache=cache, now=NOW)
    assert der != b"stale"
    assert state.count("/vcek/") == 1
    assert cache.get(key, now=NOW) == der


async def test_429_retry_after_then_success(kds: tuple[str, VendorState]) -> None:
    url, state = kds
    state.faults["/vcek/v1/Turin/3b42"] = Fault("429", times=1, retry_after="1")
    t0 = time.monotonic()
    der = await fetch_vcek(TURIN, kds_url=url, now=NOW, retry=FAST)
    assert time.monotonic() - t0 >= 1.0
    assert der.startswith(b"\x30")
    assert state.count("/vcek/") == 2


async def test_persistent_429_gives_up_bounded(kds: tuple[str, VendorState]) -> None:
    url, state = kds
    state.faults["/vcek/"] = Fault("429", retry_after="0")
    with pytest.raises(CollateralError, match=r"AMD KDS VCEK: GET .*/vcek/v1/Turin/.*429"):
        await fetch_vcek(TURIN, kds_url=url, now=NOW, retry=FAST)
    assert state.count("/vcek/") == FAST.attempts


async def test_garbage_body_is_not_taken_for_a_certificate(
    kds: tuple[str, VendorState], tmp_path: Path
) -> None:
    url, state = kds
    cache = CollateralCache(tmp_path)
    state.faults["/vcek/"] = Fault("garbage", times=1)
    with pytest.raises(CollateralError, match="not a VCEK certificate"):
        await fetch_vcek(TURIN, kds_url=url, cache=cache, now=NOW, retry=FAST)
    assert cache.entries() == []
    # The next call asks again and gets the real certificate.
    assert await fetch_vcek(TURIN, kds_url=url, cache=cache, now=NOW)
    assert state.count("/vcek/") == 2


async def test_404_for_unknown_chip_is_reported(kds: tuple[str, VendorState]) -> None:
    url, _ = kds
    report = bytearray(TURIN)
    report[0x1A0] ^= 0xFF  # another chip id
    with pytest.raises(CollateralError, match="HTTP 404"):
        await fetch_vcek(bytes(report), kds_url=url, now=NOW, retry=FAST)


async def test_genuine_vcek_of_another_chip_is_refused(
    kds: tuple[str, VendorState], tmp_path: Path
) -> None:
    url, state = kds
    cache = CollateralCache(tmp_path)
    other = (DATA / "sev-snp/project-oak/derived-genoa-vcek.der").read_bytes()
    state.faults["/vcek/v1/Turin/"] = Fault("body", body=other)
    with pytest.raises(CollateralError, match="hwID does not match"):
        await fetch_vcek(TURIN, kds_url=url, cache=cache, now=NOW, retry=FAST)
    assert cache.entries() == []


async def test_unknown_cert_chain_is_a_clear_error(kds: tuple[str, VendorState]) -> None:
    url, _ = kds
    with pytest.raises(CollateralError, match=r"cert_chain: GET .*/vcek/v1/Turin/cert_chain .*404"):
        await fetch_cert_chain("Turin", kds_url=url, now=NOW, retry=FAST)


def test_server_down(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CollateralError, match="connection failed"):
        fetch_vcek_sync(TURIN, kds_url=f"http://127.0.0.1:{port}", cache=CollateralCache(
            tmp_path), now=NOW, retry=FAST)


def test_concurrent_fetchers_share_one_request(
    kds: tuple[str, VendorState], tmp_path: Path
) -> None:
    url, state = kds
    state.faults["/vcek/"] = Fault("slow", delay=0.3)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            # Separate cache objects: the lock is on the file system, as between processes.
            results.append(fetch_vcek_sync(TURIN, kds_url=url, cache=CollateralCache(tmp_path),
                                           now=NOW))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert len(results) == 4
    assert len(set(results)) == 1
    assert state.count("/vcek/") == 1


def _test_ark(cn: str = "ARK-Milan") -> tuple[Any, AmdCert]:
    """A small RSA stand-in for an ARK (the real ARK's key is AMD's), as an AmdCert."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    start = dt.datetime.fromtimestamp(NOW - 86400, dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=3650))
            .sign(key, hashes.SHA384(), rsa_padding=_pss()))
    return key, load_der(cert.public_bytes(Encoding.DER))


def _pss() -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def _crl(key: Any, cn: str = "ARK-Milan", *, pss: bool = True) -> bytes:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    start = dt.datetime.fromtimestamp(NOW - 3600, dt.UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(name).last_update(start)
           .next_update(start + dt.timedelta(days=7))
           .sign(key, hashes.SHA384(), rsa_padding=_pss() if pss else None))
    return crl.public_bytes(Encoding.DER)


async def test_crl_fetch_is_cached_until_next_update(
    kds: tuple[str, VendorState], tmp_path: Path
) -> None:
    from teegate.collateral import fetch_crl

    url, state = kds
    key, ark = _test_ark()
    body = _crl(key)
    state.faults["/vcek/v1/Milan/crl"] = Fault("body", body=body)
    cache = CollateralCache(tmp_path)
    got = await fetch_crl("Milan", kds_url=url, cache=cache, now=NOW, issuer=ark)
    assert got == body
    assert await fetch_crl("Milan", kds_url=url, cache=cache, now=NOW + 86400,
                           issuer=ark) == got
    assert state.count("/vcek/v1/Milan/crl") == 1
    assert cache.entries()[0].expires == NOW - 3600 + 7 * 86400
    state.faults["/vcek/v1/Genoa/crl"] = Fault("garbage")
    with pytest.raises(CollateralError, match="not a DER CRL"):
        await fetch_crl("Genoa", kds_url=url, cache=cache, now=NOW, retry=FAST, issuer=ark)


async def test_crl_not_signed_by_the_ark_is_refused(
    kds: tuple[str, VendorState], tmp_path: Path
) -> None:
    """A CRL is a list of what must no longer be trusted: an unsigned or foreign one (an
    empty list, a far nextUpdate) would hide a revocation, so it is never returned or cached."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from teegate.collateral import fetch_crl

    url, state = kds
    cache = CollateralCache(tmp_path)
    forged = _crl(ec.generate_private_key(ec.SECP384R1()), pss=False)
    state.faults["/vcek/v1/Milan/crl"] = Fault("body", body=forged)
    # Default issuer: teegate's pinned AMD ARK for the product.
    with pytest.raises(CollateralError, match="not signed by"):
        await fetch_crl("Milan", kds_url=url, cache=cache, now=NOW)
    key, ark = _test_ark()
    other_key, _ = _test_ark()
    for body in (forged, _crl(other_key), _crl(key, pss=False), _crl(key, "ARK-Genoa")):
        state.faults["/vcek/v1/Milan/crl"] = Fault("body", body=body)
        with pytest.raises(CollateralError, match="not signed by"):
            await fetch_crl("Milan", kds_url=url, cache=cache, now=NOW, issuer=ark)
    assert cache.entries() == []


async def test_poisoned_cached_crl_is_not_served(
    kds: tuple[str, VendorState], tmp_path: Path
) -> None:
    from teegate.collateral import fetch_crl

    url, state = kds
    key, ark = _test_ark()
    good = _crl(key)
    state.faults["/vcek/v1/Milan/crl"] = Fault("body", body=good)
    cache = CollateralCache(tmp_path)
    other_key, _ = _test_ark()
    cache.put("amd-crl/vcek/Milan", _crl(other_key), expires=NOW + 10**6, now=NOW)
    assert await fetch_crl("Milan", kds_url=url, cache=cache, now=NOW, issuer=ark) == good
    assert state.count("/vcek/v1/Milan/crl") == 1


async def test_cert_chain_fetch_matches_pinned_roots_and_is_cached(
    kds: tuple[str, VendorState], tmp_path: Path
) -> None:
    from teegate.attest.snp import load_certificates
    from teegate.attest.snp_certs import pinned_roots

    url, state = kds
    cache = CollateralCache(tmp_path)
    pem = await fetch_cert_chain("Milan", kds_url=url, cache=cache, now=NOW)
    certs = load_certificates(pem)
    assert certs.ask == pinned_roots()["Milan"].ask
    assert certs.ark == pinned_roots()["Milan"].ark
    assert await fetch_cert_chain("Milan", kds_url=url, cache=cache, now=NOW) == pem
    assert state.count("/vcek/v1/Milan/cert_chain") == 1
