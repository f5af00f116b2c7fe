"""The network edge of attestation: Intel PCS/PCCS, AMD KDS and NVIDIA RIM/OCSP clients and a
disk cache.

``teegate.attest`` never touches the network; this package fetches what it needs (DCAP
collateral, VCEKs), bounded in time and retries, and turns every failure into a
``CollateralError`` that says which URL failed and how.
"""

from teegate.attest.gpu_ocsp import OcspStatus
from teegate.collateral.amd import (
    AMD_KDS_URL,
    default_kds_url,
    fetch_cert_chain,
    fetch_crl,
    fetch_report_crl,
    fetch_report_crl_sync,
    fetch_snp_certificates,
    fetch_snp_certificates_sync,
    fetch_vcek,
    fetch_vcek_sync,
    vcek_path,
)
from teegate.collateral.cache import CacheEntry, CollateralCache
from teegate.collateral.http import RetryPolicy
from teegate.collateral.intel import (
    INTEL_PCS_URL,
    PHALA_PCCS_URL,
    IntelTarget,
    collateral_window,
    default_pccs_url,
    fetch_intel_collateral,
    fetch_tdx_collateral,
    fetch_tdx_collateral_sync,
    quote_target,
)
from teegate.collateral.nvidia import (
    NVIDIA_OCSP_URL,
    NVIDIA_RIM_URL,
    fetch_chain_ocsp,
    fetch_gpu_collateral,
    fetch_ocsp_status,
    fetch_rim,
)

__all__ = [
    "AMD_KDS_URL",
    "INTEL_PCS_URL",
    "NVIDIA_OCSP_URL",
    "NVIDIA_RIM_URL",
    "PHALA_PCCS_URL",
    "CacheEntry",
    "CollateralCache",
    "IntelTarget",
    "OcspStatus",
    "RetryPolicy",
    "collateral_window",
    "default_kds_url",
    "default_pccs_url",
    "fetch_cert_chain",
    "fetch_chain_ocsp",
    "fetch_crl",
    "fetch_gpu_collateral",
    "fetch_intel_collateral",
    "fetch_ocsp_status",
    "fetch_report_crl",
    "fetch_report_crl_sync",
    "fetch_rim",
    "fetch_snp_certificates",
    "fetch_snp_certificates_sync",
    "fetch_tdx_collateral",
    "fetch_tdx_collateral_sync",
    "fetch_vcek",
    "fetch_vcek_sync",
    "quote_target",
    "vcek_path",
]
