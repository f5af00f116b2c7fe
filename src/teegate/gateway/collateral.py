"""Collateral for the providers' evidence: what a report does not carry itself (hosted
providers send a bare Intel quote, or an SEV-SNP report without its VCEK) is fetched from the
configured Intel PCCS/PCS, AMD KDS, NVIDIA OCSP responder and RIM service and cached on disk
until the collateral itself expires, so every gateway process sharing the cache fetches it once
while it is valid.

A report's own ``collateral`` / ``snp_certificates`` are used when present: they are verified
to the pinned (or policy) roots like everything else in the report, and the policy bounds
their age. Fetched collateral is never chosen by the evidence: only the configured URLs are
asked (GHSA-m52x-2r7m-5p42)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from teegate.attest.gpu_ocsp import OcspStatus
from teegate.collateral import CollateralCache
from teegate.collateral.amd import fetch_report_crl, fetch_snp_certificates
from teegate.collateral.http import DEFAULT_RETRY, RetryPolicy
from teegate.collateral.intel import fetch_tdx_collateral
from teegate.collateral.nvidia import fetch_gpu_collateral
from teegate.errors import EvidenceError
from teegate.gateway.config import CollateralConfig


@dataclass(frozen=True)
class Fetched:
    """What to verify a report with: Intel collateral JSON and/or SNP certificates (PEM);
    None where the report carries its own or nothing is needed."""

    intel: str | None = None
    snp_certificates: bytes | None = None
    snp_crl: bytes | None = None
    gpu_ocsp: dict[str, OcspStatus] | None = None
    gpu_rims: tuple[bytes, ...] = ()


class CollateralSource:
    def __init__(self, config: CollateralConfig, data_dir: Path, *,
                 retry: RetryPolicy = DEFAULT_RETRY) -> None:
        from teegate.collateral.amd import default_kds_url
        from teegate.collateral.intel import default_pccs_url
        from teegate.collateral.nvidia import default_ocsp_url, default_rim_url

        self.online = config.online
        self.pccs_url = config.pccs_url or default_pccs_url()
        self.kds_url = config.kds_url or default_kds_url()
        self.ocsp_url = config.nvidia_ocsp_url or default_ocsp_url()
        self.rim_url = config.nvidia_rim_url or default_rim_url()
        self.cache = CollateralCache(config.cache_dir or data_dir / "collateral")
        self.retry = retry

    async def for_report(self, report: dict[str, Any], *, now: int,
                         development: bool = False, gpu_ocsp: bool = False,
                         gpu_rims: bool = False) -> Fetched:
        """Fetch what ``report`` lacks, AMD's CRL for every SEV-SNP report (except from
        development providers, whose chain AMD never signed) and, when the policy requires
        them, NVIDIA's OCSP answers for the GPUs' device chains (``gpu_ocsp``) and the
        GPUs' driver and VBIOS RIMs (``gpu_rims``). CollateralError when a vendor service
        fails: the caller must then not accept the report."""
        if not self.online:
            return Fetched()
        gpu = Fetched()
        payload = report.get("nvidia_payload")
        if (gpu_ocsp or gpu_rims) and payload and isinstance(payload, (str, dict)):
            answers, rims = await fetch_gpu_collateral(
                payload, ocsp=gpu_ocsp, rims=gpu_rims, ocsp_url=self.ocsp_url,
                rim_url=self.rim_url, cache=self.cache, now=now, retry=self.retry)
            gpu = Fetched(gpu_ocsp=answers, gpu_rims=rims)
        quote = _text(report, "intel_quote") or _text(report, "quote")
        if quote is not None and report.get("collateral") in (None, "", {}):
            return replace(gpu, intel=await fetch_tdx_collateral(
                _hex(quote, "intel_quote"), pccs_url=self.pccs_url, cache=self.cache,
                now=now, retry=self.retry))
        snp = _text(report, "snp_report")
        if snp is None:
            return gpu
        raw = _hex(snp, "snp_report")
        certs = None if _text(report, "snp_certificates") else await fetch_snp_certificates(
            raw, kds_url=self.kds_url, cache=self.cache, now=now, retry=self.retry)
        crl = None if development else await fetch_report_crl(
            raw, kds_url=self.kds_url, cache=self.cache, now=now, retry=self.retry)
        return replace(gpu, snp_certificates=certs, snp_crl=crl)


def _text(report: dict[str, Any], name: str) -> str | None:
    value = report.get(name)
    return value if isinstance(value, str) and value else None


def _hex(value: str, name: str) -> bytes:
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise EvidenceError(f"report field {name!r} is not hex") from None
