"""AMD Key Distribution Service client: VCEKs, CA chains and CRLs for SEV-SNP.

KDS signs a fresh VCEK on every request and answers 429 when asked too often (about one VCEK
per 10 s per IP), so VCEKs are cached by (product, hwID, REPORTED_TCB) until their notAfter,
and 429 is retried only as long as its Retry-After allows.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding

from teegate.attest.snp_certs import (
    AmdCert,
    crl_signed_by,
    key_extensions,
    load_certificates,
    load_der,
    pinned_roots,
)
from teegate.attest.snp_report import SnpReport, load_report, parse_report, split_report
from teegate.collateral.cache import CollateralCache
from teegate.collateral.http import DEFAULT_RETRY, RetryPolicy, client_or, get
from teegate.errors import CollateralError, EvidenceError

AMD_KDS_URL = "https://kdsintf.amd.com"
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
PRODUCTS = ("Milan", "Genoa", "Turin")


def _report(report: bytes | SnpReport, product: str | None) -> SnpReport:
    if isinstance(report, SnpReport):
        return report if report.product or not product else parse_report(report.raw,
                                                                        product=product)
    return parse_report(split_report(load_report(report))[0], product=product)


def vcek_path(report: bytes | SnpReport, *, product: str | None = None) -> tuple[str, str]:
    """(KDS path with query, cache key) of the VCEK that signed ``report``.

    ``product`` is required for v2 reports (no CPUID). Turin uses the first 8 bytes of CHIP_ID
    and adds ``fmcSPL``.
    """
    r = _report(report, product)
    prod = r.product
    if prod is None:
        raise EvidenceError("v2 SEV-SNP report carries no CPUID: say which product it is "
                            f"({', '.join(PRODUCTS)})")
    if r.signing_key != "vcek":
        raise EvidenceError(f"report is signed by the {r.signing_key.upper()}, not a VCEK: the "
                            "VLEK comes with the provider's evidence, KDS cannot serve it")
    if r.chip_id_masked:
        raise EvidenceError("report CHIP_ID is masked (all zero): KDS cannot serve its VCEK")
    tcb = r.reported_tcb
    query = f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    if prod == "Turin":
        query += f"&fmcSPL={tcb.fmc}"
    hwid = r.chip_id_used.hex()
    return f"/vcek/v1/{prod}/{hwid}?{query}", f"amd-vcek/{prod}/{hwid}/{tcb.raw.hex()}"


def _check_vcek(der: bytes, report: SnpReport, url: str, now: int) -> AmdCert:
    try:
        cert = load_der(der)
        ext = key_extensions(cert)
    except EvidenceError as e:
        raise CollateralError(f"AMD KDS {url}: body is not a VCEK certificate: {e}") from e
    if cert.role != "vcek":
        raise CollateralError(f"AMD KDS {url}: certificate is {cert.common_name!r}, not a VCEK")
    if ext.hwid != report.chip_id_used:
        raise CollateralError(f"AMD KDS {url}: VCEK hwID does not match the report's CHIP_ID")
    want = report.reported_tcb.parts()
    if any(ext.tcb.get(k) != v for k, v in want.items()):
        raise CollateralError(f"AMD KDS {url}: VCEK TCB {ext.tcb} does not match REPORTED_TCB "
                              f"{want}")
    if not cert.not_before <= now < cert.not_after:
        raise CollateralError(f"AMD KDS {url}: VCEK is not valid now ({cert.not_before}.."
                              f"{cert.not_after}, now {now})")
    return cert


async def fetch_vcek(
    report: bytes | SnpReport,
    *,
    kds_url: str = AMD_KDS_URL,
    cache: CollateralCache | None = None,
    client: httpx.AsyncClient | None = None,
    now: int | None = None,
    product: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> bytes:
    """The DER VCEK for an SEV-SNP report (binary or hex), cached until its notAfter."""
    t = int(time.time()) if now is None else now
    r = _report(report, product)
    path, key = vcek_path(r)
    url = kds_url.rstrip("/") + path

    async def fetch() -> bytes:
        async with client_or(client, retry) as c:
            resp = await get(c, url, what="AMD KDS VCEK", retry=retry)
        return resp.content

    if cache is None:
        der = await fetch()
        _check_vcek(der, r, url, t)
        return der
    hit = cache.get(key, now=t)
    if hit is not None:
        return hit
    async with cache.alock(key):
        hit = cache.get(key, now=t)
        if hit is not None:
            return hit
        der = await fetch()
        cert = _check_vcek(der, r, url, t)
        cache.put(key, der, expires=cert.not_after, now=t)
        return der


async def fetch_cert_chain(
    product: str,
    *,
    kind: str = "vcek",
    kds_url: str = AMD_KDS_URL,
    cache: CollateralCache | None = None,
    client: httpx.AsyncClient | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> bytes:
    """PEM ``cert_chain`` (ASK+ARK for ``vcek``, ASVK+ARK for ``vlek``) of a product."""
    if product not in PRODUCTS or kind not in ("vcek", "vlek"):
        raise EvidenceError(f"unknown product/kind {product}/{kind}")
    t = int(time.time()) if now is None else now
    key = f"amd-chain/{kind}/{product}"
    url = f"{kds_url.rstrip('/')}/{kind}/v1/{product}/cert_chain"
    if cache is not None and (hit := cache.get(key, now=t)) is not None:
        return hit
    async with client_or(client, retry) as c:
        body = (await get(c, url, what="AMD KDS cert_chain", retry=retry)).content
    try:
        certs = load_certificates(body)
    except EvidenceError as e:
        raise CollateralError(f"AMD KDS {url}: body is not a PEM chain: {e}") from e
    inter = certs.ask if kind == "vcek" else certs.asvk
    if inter is None or certs.ark is None:
        role = "ASK" if kind == "vcek" else "ASVK"
        raise CollateralError(f"AMD KDS {url}: chain lacks the {role} or the ARK")
    expires = min(inter.not_after, certs.ark.not_after)
    if cache is not None:
        cache.put(key, body, expires=expires, now=t)
    return body


def _checked_crl(body: bytes, issuer: AmdCert, url: str, now: int) -> int:
    """Parse and verify a CRL; its nextUpdate (which must be in the future)."""
    try:
        crl = x509.load_der_x509_crl(body)
    except ValueError as e:
        raise CollateralError(f"AMD KDS {url}: body is not a DER CRL: {e}") from e
    if not crl_signed_by(crl, issuer):
        raise CollateralError(f"AMD KDS {url}: CRL is not signed by {issuer.describe()}")
    nxt = crl.next_update_utc
    if nxt is None or int(nxt.timestamp()) <= now:
        raise CollateralError(f"AMD KDS {url}: CRL has no nextUpdate in the future")
    return int(nxt.timestamp())


async def fetch_crl(
    product: str,
    *,
    kind: str = "vcek",
    kds_url: str = AMD_KDS_URL,
    cache: CollateralCache | None = None,
    client: httpx.AsyncClient | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    issuer: AmdCert | None = None,
) -> bytes:
    """DER CRL of a product's ASK (``vcek``) or ASVK (``vlek``), cached until nextUpdate.

    The CRL must be signed by ``issuer`` (default: teegate's pinned ARK for ``product``);
    a cached copy is checked again before it is served, so a planted file is never used.
    """
    if product not in PRODUCTS or kind not in ("vcek", "vlek"):
        raise EvidenceError(f"unknown product/kind {product}/{kind}")
    t = int(time.time()) if now is None else now
    ark = issuer or pinned_roots()[product].ark
    key = f"amd-crl/{kind}/{product}"
    url = f"{kds_url.rstrip('/')}/{kind}/v1/{product}/crl"
    if cache is not None and (hit := cache.get(key, now=t)) is not None:
        try:
            _checked_crl(hit, ark, f"cache {key}", t)
        except CollateralError:
            pass  # not ours or no longer usable: fetch a fresh one, which replaces it
        else:
            return hit
    async with client_or(client, retry) as c:
        body = (await get(c, url, what="AMD KDS CRL", retry=retry)).content
    next_update = _checked_crl(body, ark, url, t)
    if cache is not None:
        cache.put(key, body, expires=next_update, now=t)
    return body


async def fetch_report_crl(
    report: bytes | SnpReport,
    *,
    kds_url: str = AMD_KDS_URL,
    cache: CollateralCache | None = None,
    client: httpx.AsyncClient | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> bytes | None:
    """AMD's CRL for the report's product and signing key (VCEK or VLEK chain), checked
    against the pinned ARK; None when a v2 report does not name its product (a policy that
    requires the CRL then fails by name)."""
    r = _report(report, None)
    if r.product is None or r.signing_key not in ("vcek", "vlek"):
        return None
    return await fetch_crl(r.product, kind=r.signing_key, kds_url=kds_url, cache=cache,
                           client=client, now=now, retry=retry)


def fetch_report_crl_sync(
    report: bytes,
    *,
    kds_url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> bytes | None:
    """``fetch_report_crl`` for the CLI's ``--online``."""
    cache = CollateralCache(cache_dir) if cache_dir is not None else None
    return asyncio.run(fetch_report_crl(report, kds_url=kds_url or default_kds_url(),
                                        cache=cache, now=now, retry=retry))


async def fetch_snp_certificates(
    report: bytes | SnpReport,
    *,
    kds_url: str = AMD_KDS_URL,
    cache: CollateralCache | None = None,
    client: httpx.AsyncClient | None = None,
    now: int | None = None,
    product: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> bytes:
    """VCEK (PEM) followed by its product's ASK and ARK: ready for ``verify_report``/``--certs``.

    Only the VCEK comes from KDS; ASK and ARK are teegate's pinned copies (the verifier trusts
    nothing else), which spares one rate-limited request per fetch.
    """
    r = _report(report, product)
    der = await fetch_vcek(r, kds_url=kds_url, cache=cache, client=client, now=now, retry=retry)
    assert r.product is not None  # vcek_path refused reports without one
    roots = pinned_roots()[r.product]
    return b"".join(c.cert.public_bytes(Encoding.PEM) for c in (load_der(der), roots.ask,
                                                                  roots.ark))


def fetch_vcek_sync(
    report: bytes,
    *,
    kds_url: str | None = None,
    cache: CollateralCache | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    now: int | None = None,
    product: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> bytes:
    """``fetch_vcek`` for synchronous callers. ``kds_url`` defaults to ``$TEEGATE_KDS_URL``
    or AMD's KDS; ``cache_dir`` opens a ``CollateralCache``."""
    if cache is None and cache_dir is not None:
        cache = CollateralCache(cache_dir)
    return asyncio.run(fetch_vcek(
        report, kds_url=kds_url or default_kds_url(), cache=cache, now=now, product=product,
        retry=retry))


def fetch_snp_certificates_sync(
    report: bytes,
    *,
    kds_url: str | None = None,
    cache: CollateralCache | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    now: int | None = None,
    product: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> bytes:
    """``fetch_snp_certificates`` for synchronous callers (the CLI's ``--online``).
    ``kds_url`` defaults to ``$TEEGATE_KDS_URL`` or AMD's KDS; ``cache_dir`` opens a
    ``CollateralCache``."""
    if cache is None and cache_dir is not None:
        cache = CollateralCache(cache_dir)
    return asyncio.run(fetch_snp_certificates(
        report, kds_url=kds_url or default_kds_url(), cache=cache, now=now, product=product,
        retry=retry))


def default_kds_url() -> str:
    """The verifier's configured AMD KDS (``$TEEGATE_KDS_URL`` or AMD's own)."""
    return os.environ.get("TEEGATE_KDS_URL") or AMD_KDS_URL
